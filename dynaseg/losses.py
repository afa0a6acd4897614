"""The two terms of the DynaSeg loss (paper Eqs. 2–6), on a response map ``(B, q, H, W)``.

Both are means, not the sums the paper writes: the reference implementations (Kim et al. 2020,
DynaSeg's own scripts) use means, and the published μ and α values only make sense on that scale
(docs/method.md §1.4). The maps stay in the convolution's ``(B, q, H, W)`` layout: cross-entropy
accepts it directly, so no permute copy is made.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

UNMARKED = 255
"""The value of a scribble pixel that marks no class."""


class Strokes(NamedTuple):
    """A scribble prepared once for a whole fit: every iteration's loss reuses its masks."""

    classes: Tensor
    """``(B, H, W)`` the class of each marked pixel, 0 where unmarked (any valid index)."""
    marked: Tensor
    """``(B, H, W)`` bool, the marked pixels."""

    @classmethod
    def of(cls, scribble: Tensor) -> Strokes:
        """From a ``(B, H, W)`` scribble (:data:`UNMARKED` where nothing is marked)."""
        marked = scribble != UNMARKED
        return cls(torch.where(marked, scribble, torch.zeros_like(scribble)), marked)


def similarity_loss(response: Tensor, target: Tensor, strokes: Strokes | None = None) -> Tensor:
    """Cross-entropy of the response (as logits) against the arg-max labels, mean over pixels.

    Args:
        response: ``(B, q, H, W)`` response map r'.
        target: ``(B, H, W)`` integer labels (the arg-max of r', treated as fixed).
        strokes: a scribble; the mean then runs over the unmarked pixels only (Kim et al.
            2020), the marked ones having :func:`scribble_loss`.

    >>> import torch
    >>> r = torch.tensor([[[[0.0]], [[0.0]]]])  # two clusters, equal logits, one pixel
    >>> round(float(similarity_loss(r, torch.zeros(1, 1, 1, dtype=torch.long))), 4)
    0.6931
    """
    if strokes is None:
        return F.cross_entropy(response, target)
    return _masked_mean(F.cross_entropy(response, target, reduction="none"), ~strokes.marked)


def scribble_loss(response: Tensor, strokes: Strokes) -> Tensor:
    """Cross-entropy of the response against the scribbled classes, mean over marked pixels.

    >>> r = torch.tensor([[[[0.0, 5.0]], [[0.0, 0.0]]]])  # two clusters, two pixels
    >>> round(float(scribble_loss(r, Strokes.of(torch.tensor([[[1, UNMARKED]]])))), 4)
    0.6931
    """
    ce = F.cross_entropy(response, strokes.classes, reduction="none")
    return _masked_mean(ce, strokes.marked)


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """The mean of ``values`` where ``mask`` holds (0 where it holds nowhere, never NaN)."""
    return (values * mask).sum() / mask.sum().clamp(min=1)


def continuity_loss(response: Tensor) -> Tensor:
    """Mean |vertical difference| + mean |horizontal difference| of the response map.

    Each mean runs over all its elements, channels included (Kim et al.'s ``L1Loss`` against zero).

    >>> import torch
    >>> r = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])  # vertical steps 2, horizontal steps 1
    >>> float(continuity_loss(r))
    3.0
    """
    vertical = (response[:, :, 1:, :] - response[:, :, :-1, :]).abs().mean()
    horizontal = (response[:, :, :, 1:] - response[:, :, :, :-1]).abs().mean()
    return vertical + horizontal
