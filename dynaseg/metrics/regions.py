"""The BSDS500 region benchmark of Arbelaez et al. (TPAMI 2011, §3.2): segmentation covering,
probabilistic Rand index and variation of information, each image scored against all its
annotations and averaged over images; covering also pooled as the benchmark's code pools it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from dynaseg.metrics.base import (
    ArrayLike,
    Contingency,
    _best_ious,
    _checked_pair,
    _fixed_mean,
    _LabelMapMetric,
    _to_fixed,
    contingency,
    relabel_connected,
)

__all__ = ["RegionMeasures", "rand_index", "segmentation_covering", "variation_of_information"]


def _table(pred: ArrayLike, gt: ArrayLike, ignore_index: int | None) -> Contingency:
    t = contingency(pred, gt, ignore_index)
    if t.counts.size == 0:
        raise ValueError("no labelled pixels to compare")
    return t


def _covered_pixels(t: Contingency) -> float:
    """Σ_R |R| · max_R' O(R, R'): the numerator of covering, which the benchmark pools."""
    sizes = t.gt_sizes[t.gt_sizes > 0]
    return float((sizes * _best_ious(t)).sum())


def _covering(t: Contingency) -> float:
    return _covered_pixels(t) / float(t.gt_sizes.sum())


def segmentation_covering(pred: ArrayLike, gt: ArrayLike, ignore_index: int | None = None) -> float:
    """Covering of the ground truth ``gt`` by the segmentation ``pred`` (Arbelaez et al. 2011).

    C(S' → S) = (1/N) Σ_{R ∈ S} |R| · max_{R' ∈ S'} O(R, R'), with S the GT regions, S' the
    predicted ones and O(R, R') = |R ∩ R'| / |R ∪ R'| (IoU): each GT region's best IoU, weighted
    by its size.

    Args:
        pred, gt: integer label maps of the same shape.
        ignore_index: GT value whose pixels are removed from both maps before counting.

    Example:
        >>> gt = np.array([[0, 0, 1], [0, 0, 1], [2, 2, 2]])
        >>> pred = np.array([[0, 0, 0], [0, 0, 0], [1, 1, 1]])
        >>> round(segmentation_covering(pred, gt), 4)  # (4·4/6 + 2·2/6 + 3·1) / 9
        0.7037
    """
    return _covering(_table(pred, gt, ignore_index))


def _pairs(n: np.ndarray) -> int:
    """Σ n (n − 1) / 2 in exact integer arithmetic."""
    n = n.astype(np.int64)
    return int((n * (n - 1) // 2).sum())


def _rand(t: Contingency) -> float:
    total = _pairs(np.array([t.gt_sizes.sum()]))
    if total == 0:
        return 1.0
    agree = total + 2 * _pairs(t.counts) - _pairs(t.gt_sizes) - _pairs(t.pred_sizes)
    return agree / total


def rand_index(pred: ArrayLike, gt: ArrayLike, ignore_index: int | None = None) -> float:
    """Rand index: the fraction of pixel pairs on which two segmentations agree.

    Computed from the contingency table n_ij, O(#cells) after one O(N) pass:
    RI = (C(N,2) + 2 Σ C(n_ij,2) − Σ C(a_i,2) − Σ C(b_j,2)) / C(N,2), with a_i, b_j the region
    sizes (scikit-learn's ``rand_score``). Averaged over a BSDS500 image's annotations it is the
    probabilistic Rand index (PRI) of Arbelaez et al. 2011. One pixel (no pairs) scores 1.

    Example:
        >>> rand_index(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1]))  # agrees on 3 of 6 pairs
        0.5
    """
    return _rand(_table(pred, gt, ignore_index))


def _entropy(counts: np.ndarray, n: int) -> float:
    p = counts[counts > 0] / n
    return float(-(p * np.log(p)).sum())


def _voi(t: Contingency) -> float:
    n = int(t.gt_sizes.sum())
    # I = H(S) + H(S') − H(S, S'), hence VI = 2 H(S, S') − H(S) − H(S').
    joint = _entropy(t.counts, n)
    return max(0.0, 2 * joint - _entropy(t.gt_sizes, n) - _entropy(t.pred_sizes, n))


def variation_of_information(
    pred: ArrayLike, gt: ArrayLike, ignore_index: int | None = None
) -> float:
    """Variation of information VI(S, S') = H(S) + H(S') − 2 I(S, S'), in nats (natural log).

    A distance: 0 for identical partitions (up to renumbering), larger is worse. Not
    ``skimage.metrics.variation_of_information``: that one is in bits and sums the two
    conditional entropies, which differs from this (and earlier results) in the last digits.

    Example:
        >>> round(variation_of_information(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 0])), 4)
        0.6931
    """
    return _voi(_table(pred, gt, ignore_index))


_MEASURES = {"covering": _covering, "pri": _rand, "voi": _voi}

_PIXEL_SCALE = 2**24
"""Fixed point of the covered-pixel sums: a pixel count times 2**32 could overflow int64 on a
large dataset (COCO: ~10**9 annotated pixels), and 2**-24 of a pixel is far below any digit
reported (2**24 × 10**9 stays far below 2**63)."""


class RegionMeasures(_LabelMapMetric):
    """BSDS500 region benchmark (Arbelaez et al., TPAMI 2011): covering, PRI and VoI.

    Each image is scored against all its annotations: ``covering`` is the mean over annotations
    of :func:`segmentation_covering` (GT covered by the prediction), ``pri`` the mean of
    :func:`rand_index` (the probabilistic Rand index), ``voi`` the mean of
    :func:`variation_of_information` (nats; lower is better). The reported values are means over
    images.

    ``covering_pooled`` is covering as the BSDS500 benchmark code pools it: Σ |R| · max O(R, R')
    over every annotation of every image, divided by the pixels of all those annotations, so an
    image with eight annotations weighs twice one with four. ``n_annotation_pixels`` is that
    denominator, the weight with which a subset's per-image values re-pool exactly.

    Args:
        connectivity: split the prediction into 4- or 8-connected components first. Default
            ``None``: the region benchmark scores a segmentation as given (its regions need not
            be connected), and splitting would change PRI and VoI, unlike the best-IoU protocol
            whose published baselines need the split.
        ignore_index: GT value whose pixels are removed from both maps.

    Example:
        >>> m = RegionMeasures()
        >>> m.update(np.array([[5, 5], [2, 2]]), [np.array([[0, 0], [1, 1]])])
        >>> {k: float(v) for k, v in m.compute().items() if k != "n_annotation_pixels"}
        {'covering': 1.0, 'pri': 1.0, 'voi': 0.0, 'covering_pooled': 1.0}
    """

    higher_is_better = None  # covering and PRI: higher; VoI: lower

    def __init__(self, connectivity: int | None = None, ignore_index: int | None = None) -> None:
        super().__init__(connectivity, ignore_index)
        for name in _MEASURES:
            self._add_sum_state(f"sum_{name}")  # fixed point, see base._FIXED_SCALE
        self._add_sum_state("n_images")
        self._add_sum_state("covered_pixels")  # fixed point, _PIXEL_SCALE
        self._add_sum_state("n_annotation_pixels")

    def update(self, pred: ArrayLike, annotations: ArrayLike | Sequence[ArrayLike]) -> None:
        """Add one image.

        Args:
            pred: H x W predicted ids.
            annotations: the image's GT maps: a sequence of H x W maps, an A x H x W stack, or
                one H x W map.
        """
        pred_np, gts = _checked_pair(pred, annotations)
        segments = relabel_connected(pred_np, self.connectivity)
        tables = [_table(segments, gt, self.ignore_index) for gt in gts]  # one per annotation
        for name, measure in _MEASURES.items():
            value = float(np.mean([measure(t) for t in tables]))
            state = getattr(self, f"sum_{name}")
            setattr(self, f"sum_{name}", state + _to_fixed(value))
        self.n_images += 1
        covered = sum(_covered_pixels(t) for t in tables)
        self.covered_pixels += round(covered * _PIXEL_SCALE)
        self.n_annotation_pixels += sum(int(t.gt_sizes.sum()) for t in tables)

    def compute(self) -> dict[str, torch.Tensor]:
        """Means over images, and the benchmark's pooled covering (NaN when no image was added)."""
        out = {name: _fixed_mean(getattr(self, f"sum_{name}"), self.n_images) for name in _MEASURES}
        pixels = self.n_annotation_pixels.double()
        out["covering_pooled"] = self.covered_pixels.double() / _PIXEL_SCALE / pixels
        out["n_annotation_pixels"] = pixels
        return out
