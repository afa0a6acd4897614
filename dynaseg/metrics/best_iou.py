"""BSD500 / PASCAL VOC segment-wise best IoU of Kim et al. 2020 (docs/protocols.md C.5), with the
prediction split into connected components first (C.6, F#6)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from dynaseg.metrics.base import (
    ArrayLike,
    _best_ious,
    _checked_pair,
    _fixed_mean,
    _LabelMapMetric,
    _to_fixed,
    contingency,
    relabel_connected,
)

__all__ = ["SegmentBestIoU", "best_iou_per_segment"]


def best_iou_per_segment(
    pred: np.ndarray, gt: np.ndarray, ignore_index: int | None = None
) -> np.ndarray:
    """Best IoU of every GT segment against any predicted segment (Kim et al., C.5).

    IoU(g, k) = |g ∩ k| / (|g| + |k| - |g ∩ k|), with |k| counting all pixels of ``k`` in the
    image, so a predicted segment that spills over ``g`` is penalised by its whole size.

    Args:
        pred: H x W integer predicted labels (already relabeled if wanted).
        gt: H x W integer ground-truth labels.
        ignore_index: GT value whose pixels are removed from both GT and prediction counts.

    Returns:
        float64 array with one best IoU per distinct GT label except ``ignore_index``, in
        increasing label order.

    Example:
        >>> gt = np.array([[0, 0, 1], [0, 0, 1], [2, 2, 2]])
        >>> pred = np.array([[0, 0, 0], [0, 0, 0], [1, 1, 1]])
        >>> best_iou_per_segment(pred, gt).round(3).tolist()
        [0.667, 0.333, 1.0]
    """
    t = contingency(pred, gt, ignore_index)
    if t.counts.size == 0:
        return np.zeros(0, dtype=np.float64)
    return _best_ious(t)


class SegmentBestIoU(_LabelMapMetric):
    """Segment-wise best IoU for BSD500 / VOC, pooled over all GT segments (docs/protocols.md C.5).

    The score is segment-weighted: the mean over every GT segment of every image, not a mean
    of per-image means. Scores are reported for ``all`` annotations, the ``fine`` one (most
    segments) and the ``coarse`` one (fewest segments) of each image, first annotator on
    ties, and ``mean`` of the three.

    Args:
        connectivity: split the prediction into 4- or 8-connected components first (the
            published baselines need it, C.6); ``None`` scores the raw ids.
        ignore_index: GT value (e.g. VOC's 255 void) removed from GT and prediction counts.

    Example:
        >>> m = SegmentBestIoU(connectivity=None)
        >>> m.update(np.array([[0, 0], [1, 1]]), [np.array([[0, 0], [1, 1]])])
        >>> float(m.compute()["all"])
        1.0
    """

    def __init__(self, connectivity: int | None = 4, ignore_index: int | None = None) -> None:
        super().__init__(connectivity, ignore_index)
        for group in ("all", "fine", "coarse"):
            self._add_sum_state(f"sum_{group}")  # fixed point, see base._FIXED_SCALE
            self._add_sum_state(f"n_{group}")
        self._add_sum_state("n_pred_segments")
        self._add_sum_state("n_images")

    def update(self, pred: ArrayLike, annotations: ArrayLike | Sequence[ArrayLike]) -> None:
        """Add one image.

        Args:
            pred: H x W predicted cluster ids.
            annotations: the image's GT maps: a sequence of H x W maps (BSD500 has ~5), an
                A x H x W stack, or a single H x W map (VOC).
        """
        pred_np, gts = _checked_pair(pred, annotations)
        segments = relabel_connected(pred_np, self.connectivity)
        best = [best_iou_per_segment(segments, gt, self.ignore_index) for gt in gts]
        n_labels = np.array([b.size for b in best])
        fine, coarse = best[int(np.argmax(n_labels))], best[int(np.argmin(n_labels))]
        self.sum_all += sum(_to_fixed(b) for b in best)
        self.n_all += int(n_labels.sum())
        self.sum_fine += _to_fixed(fine)
        self.n_fine += int(fine.size)
        self.sum_coarse += _to_fixed(coarse)
        self.n_coarse += int(coarse.size)
        # Relabeled ids are 0..K-1, so counting them needs no sort; raw ids do.
        if self.connectivity is None:
            self.n_pred_segments += int(np.unique(segments).size)
        elif segments.size:
            self.n_pred_segments += int(segments.max()) + 1
        self.n_images += 1

    def compute(self) -> dict[str, torch.Tensor]:
        """Pooled scores (NaN where nothing was counted) and the pooled segment counts."""
        all_ = _fixed_mean(self.sum_all, self.n_all)
        fine = _fixed_mean(self.sum_fine, self.n_fine)
        coarse = _fixed_mean(self.sum_coarse, self.n_coarse)
        return {
            "all": all_,
            "fine": fine,
            "coarse": coarse,
            "mean": (all_ + fine + coarse) / 3,
            "n_all": self.n_all.clone(),
            "n_fine": self.n_fine.clone(),
            "n_coarse": self.n_coarse.clone(),
            "segments_per_image": self.n_pred_segments.double() / self.n_images,
        }
