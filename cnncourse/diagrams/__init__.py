"""Diagrams drawn by code: operations, blocks and architecture strips, each one function returning a figure.

The numbers in the cells come from the library's own ops and the architecture strips from
``cnncourse.analysis.summary`` of the model objects, so a diagram cannot disagree with the code.
Every function returns a matplotlib ``Figure`` and never calls ``plt.show()``.
"""

from cnncourse.diagrams.architectures import STRIP_MODELS, StripBox, architecture_strip, strip_boxes
from cnncourse.diagrams.blocks import bottleneck_block, inception_block, residual_block, residual_blocks, rnn_unrolled
from cnncourse.diagrams.ops import (cross_correlation, im2col, multi_channel, padding_stride, pooling,
                                    receptive_field_growth)

__all__ = ["STRIP_MODELS", "StripBox", "architecture_strip", "strip_boxes",
           "bottleneck_block", "inception_block", "residual_block", "residual_blocks", "rnn_unrolled",
           "cross_correlation", "im2col", "multi_channel", "padding_stride", "pooling", "receptive_field_growth"]
