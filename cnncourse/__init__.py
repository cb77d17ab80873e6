"""cnncourse: an open course on convolutional neural networks, as a small readable library."""

__version__ = "0.1.0"
