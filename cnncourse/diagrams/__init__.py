"""Diagrams drawn by code: operations, blocks and architecture strips, each one function returning a figure.

The numbers in the cells come from the library's own ops and the architecture strips from
``cnncourse.analysis.summary`` of the model objects, so a diagram cannot disagree with the code.
Every function returns a matplotlib ``Figure`` and never calls ``plt.show()``.

* operations (``ops``): ``cross_correlation``, ``padding_stride``, ``multi_channel``, ``pooling``,
  ``receptive_field_growth``, ``im2col``;
* blocks (``blocks``): ``residual_block``, ``bottleneck_block``, ``residual_blocks``, ``inception_block``,
  ``rnn_unrolled``;
* architectures (``architectures``): ``architecture_strip``, ``strip_boxes``.
"""

from cnncourse.diagrams.architectures import STRIP_MODELS, StripBox, architecture_strip, strip_boxes
from cnncourse.diagrams.blocks import bottleneck_block, inception_block, residual_block, residual_blocks, rnn_unrolled
from cnncourse.diagrams.ops import (
    cross_correlation,
    im2col,
    multi_channel,
    padding_stride,
    pooling,
    receptive_field_growth,
)

__all__ = [
    "STRIP_MODELS",
    "StripBox",
    "architecture_strip",
    "bottleneck_block",
    "cross_correlation",
    "im2col",
    "inception_block",
    "multi_channel",
    "padding_stride",
    "pooling",
    "receptive_field_growth",
    "residual_block",
    "residual_blocks",
    "rnn_unrolled",
    "strip_boxes",
]
