"""COCO-Stuff-27 Hungarian-matched mIoU, with one matching for the whole dataset as PiCIE /
STEGO (docs/protocols.md A.5) or one per image as DynaSeg's per-image numbers (A.7, F#2).

Things / stuff mIoU are means of the per-class IoUs of the full matching, not PiCIE's
cluster-indexed sub-blocks (A.6, F#3).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from dynaseg.metrics.base import (
    ArrayLike,
    _check_ignore_index,
    _check_labels,
    _compact_ids,
    _fixed_mean,
    _SumStateMetric,
    _to_fixed,
    _to_numpy,
)

__all__ = ["DatasetHungarianIoU", "ImageHungarianIoU", "hungarian_match", "matched_scores"]


def hungarian_match(confusion: np.ndarray) -> np.ndarray:
    """One-to-one class -> cluster assignment maximising the matched pixels (A.5 step 3).

    The cost is pixel counts, not IoU, as in PiCIE, STEGO and DynaSeg.

    Args:
        confusion: n_classes x n_clusters counts (rows GT classes, columns clusters);
            rectangular is allowed.

    Returns:
        int64 array of length n_classes: the cluster matched to each class, -1 if none
        (only possible when there are fewer clusters than classes).

    Example:
        >>> hungarian_match(np.array([[1, 5], [4, 0], [0, 1]])).tolist()
        [1, 0, -1]
    """
    confusion = np.asarray(confusion)
    if confusion.ndim != 2:
        raise ValueError(f"confusion must be 2-D, got shape {confusion.shape}")
    rows, cols = linear_sum_assignment(confusion, maximize=True)
    match = np.full(confusion.shape[0], -1, dtype=np.int64)
    match[rows] = cols
    return match


def _nanmean(x: np.ndarray) -> float:
    """Mean of the finite entries; NaN (without a warning) when there are none."""
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")


def matched_scores(
    confusion: np.ndarray, things: slice | Sequence[int] | np.ndarray = slice(0, 12)
) -> dict[str, Any]:
    """Per-class IoU, mIoU, pixel accuracy and things / stuff mIoU after Hungarian matching.

    Per class c matched to cluster m: TP = C[c, m], FP = column m minus TP, FN = row c minus
    TP. Pixels of unmatched clusters therefore count as missed (FN) for their GT class and
    as FP of no class (F#2). A class with no cluster, or matched to an empty padding
    column, has IoU 0 if it has GT pixels.

    Args:
        confusion: n_classes x n_clusters counts, rows GT classes, columns clusters.
        things: the thing classes (default 0..11 of COCO-Stuff-27); all others are stuff.

    Returns:
        dict with ``iou`` (per class, NaN where TP + FP + FN = 0), ``miou`` (NaN-mean over
        classes), ``pixel_accuracy`` (matched / labelled pixels), ``things_miou`` and
        ``stuff_miou`` (NaN-means of ``iou`` over each group), ``match`` (see
        :func:`hungarian_match`). Undefined scores are NaN.

    Example:
        >>> s = matched_scores(np.array([[3, 1], [0, 4]]), things=[0])
        >>> round(s["miou"], 3), s["pixel_accuracy"], s["things_miou"], s["stuff_miou"]
        (0.775, 0.875, 0.75, 0.8)
    """
    confusion = np.asarray(confusion, dtype=np.int64)
    match = hungarian_match(confusion)
    n_classes = confusion.shape[0]
    matched = match >= 0
    tp = np.zeros(n_classes, dtype=np.int64)
    fp = np.zeros(n_classes, dtype=np.int64)
    tp[matched] = confusion[matched.nonzero()[0], match[matched]]
    fp[matched] = confusion.sum(axis=0)[match[matched]] - tp[matched]
    fn = confusion.sum(axis=1) - tp
    union = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    total = int(confusion.sum())
    is_thing = np.zeros(n_classes, dtype=bool)
    is_thing[things] = True
    return {
        "iou": iou,
        "miou": _nanmean(iou),
        "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
        "things_miou": _nanmean(iou[is_thing]),
        "stuff_miou": _nanmean(iou[~is_thing]),
        "match": match,
    }


def _first_appearance_ids(ids: np.ndarray, n_ids: int) -> np.ndarray:
    """Renumber ids in [0, n_ids) to 0..K-1 in raster order of first appearance.

    Canonical numbering makes outputs independent of which id permutation produced them;
    ``minimum.at`` avoids sorting all pixels.
    """
    flat = ids.ravel()
    first = np.full(n_ids, flat.size, dtype=np.int64)
    np.minimum.at(first, flat, np.arange(flat.size, dtype=np.int64))
    rank = np.empty(n_ids, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(n_ids)  # absent ids rank last, unused
    return rank[flat].reshape(ids.shape)


def _check_counts(n_classes: int, n_things: int, ignore_index: int | None) -> None:
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    if not 0 <= n_things <= n_classes:
        raise ValueError(f"n_things must lie in [0, n_classes={n_classes}], got {n_things}")
    _check_ignore_index(ignore_index)


class DatasetHungarianIoU(_SumStateMetric):
    """COCO-Stuff mIoU with one Hungarian matching for the whole dataset (PiCIE/STEGO, A.5).

    Only meaningful when cluster ids mean the same across images (shared label space).
    ``update`` accumulates an int64 class x cluster confusion matrix; ``compute`` matches
    once on the DDP-summed matrix.

    Args:
        n_classes: GT classes; GT values outside [0, n_classes) are ignored.
        n_clusters: predicted ids must lie in [0, n_clusters).
        ignore_index: an extra GT value to ignore (255 = COCO-Stuff unlabeled).
        n_things: classes 0..n_things-1 are things, the rest stuff.

    Example:
        >>> m = DatasetHungarianIoU(n_classes=2, n_clusters=2, n_things=1)
        >>> m.update(np.array([1, 1, 0, 0]), np.array([0, 0, 1, 255]))
        >>> float(m.compute()["miou"])
        1.0
    """

    def __init__(
        self,
        n_classes: int = 27,
        n_clusters: int = 27,
        ignore_index: int | None = 255,
        n_things: int = 12,
    ) -> None:
        super().__init__()
        _check_counts(n_classes, n_things, ignore_index)
        if n_clusters < 1:
            raise ValueError(f"n_clusters must be >= 1, got {n_clusters}")
        self.n_classes, self.n_clusters = n_classes, n_clusters
        self.ignore_index, self.n_things = ignore_index, n_things
        self._add_sum_state("confusion", (n_classes, n_clusters))

    def update(self, pred: ArrayLike, target: ArrayLike) -> None:
        """Add predicted cluster ids and GT classes with the same number of pixels (any shape).

        A ``1 x H x W`` annotation stack, as the datasets yield it, pairs with an ``H x W`` pred.
        """
        device = self.confusion.device
        pred_t = torch.as_tensor(pred, device=device).reshape(-1)
        target_t = torch.as_tensor(target, device=device).reshape(-1)
        if pred_t.shape != target_t.shape:
            raise ValueError(f"pred has {pred_t.numel()} elements but target {target_t.numel()}")
        for t, name in ((pred_t, "pred"), (target_t, "target")):
            if t.is_floating_point() or t.is_complex():
                raise ValueError(f"{name} must hold integer labels, got dtype {t.dtype}")
        pred_t, target_t = pred_t.long(), target_t.long()
        if pred_t.numel() and (pred_t.min() < 0 or pred_t.max() >= self.n_clusters):
            raise ValueError(f"pred ids must lie in [0, {self.n_clusters})")
        keep = (target_t >= 0) & (target_t < self.n_classes)
        if self.ignore_index is not None:
            keep &= target_t != self.ignore_index
        codes = target_t[keep] * self.n_clusters + pred_t[keep]
        hist = torch.bincount(codes, minlength=self.n_classes * self.n_clusters)
        self.confusion += hist.reshape(self.n_classes, self.n_clusters)

    def compute(self) -> dict[str, torch.Tensor]:
        """Matched scores of the summed confusion matrix (NaN where undefined)."""
        scores = matched_scores(self.confusion.cpu().numpy(), things=slice(0, self.n_things))
        keys = ("miou", "pixel_accuracy", "things_miou", "stuff_miou")
        return {k: self._scalar(scores[k]) for k in keys}


class ImageHungarianIoU(_SumStateMetric):
    """COCO-Stuff mIoU with one Hungarian matching per image, averaged over images (A.7, F#2).

    Per image, predicted ids are renumbered 0..n-1 (raster order of first appearance among
    labelled pixels), the n_classes x max(n, n_classes) confusion is matched (square with
    empty padding columns when n <= n_classes, as DynaSeg; rectangular otherwise, unmatched
    clusters' pixels counted as missed), and the image's scores are summed. Images without
    labelled pixels are counted in ``n_undefined``, not silently dropped; an image adds to
    things (stuff) mIoU only if some thing (stuff) class has TP + FP + FN > 0.

    Args:
        n_classes: GT classes; GT values outside [0, n_classes) are ignored.
        ignore_index: an extra GT value to ignore (255 = COCO-Stuff unlabeled).
        n_things: classes 0..n_things-1 are things, the rest stuff.

    Example:
        >>> m = ImageHungarianIoU(n_classes=2, n_things=1)
        >>> m.update(np.array([[7, 7], [3, 3]]), np.array([[0, 0], [1, 255]]))
        >>> float(m.compute()["miou"])
        1.0
    """

    def __init__(
        self, n_classes: int = 27, ignore_index: int | None = 255, n_things: int = 12
    ) -> None:
        super().__init__()
        _check_counts(n_classes, n_things, ignore_index)
        self.n_classes, self.ignore_index, self.n_things = n_classes, ignore_index, n_things
        for name in ("miou", "pixel_accuracy", "things_miou", "stuff_miou"):
            self._add_sum_state(f"sum_{name}")  # fixed point, see base._FIXED_SCALE
        for name in ("n_images", "n_undefined", "n_things_images", "n_stuff_images"):
            self._add_sum_state(name)

    def _image_confusion(self, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
        keep = (target >= 0) & (target < self.n_classes)
        if self.ignore_index is not None:
            keep &= target != self.ignore_index
        pred, target = pred[keep], target[keep].astype(np.int64)
        n_clusters = 0
        if pred.size:
            clusters, n_ids = _compact_ids(pred)
            clusters = _first_appearance_ids(clusters, n_ids)
            n_clusters = int(clusters.max()) + 1
        else:
            clusters = pred.astype(np.int64)
        n_cols = max(n_clusters, self.n_classes)
        hist = np.bincount(target * n_cols + clusters, minlength=self.n_classes * n_cols)
        return hist.reshape(self.n_classes, n_cols)

    def update(self, pred: ArrayLike, target: ArrayLike) -> None:
        """Add one image (H x W) or a batch of images (B x H x W) of predicted ids and GT.

        A ``1 x H x W`` annotation stack, as the datasets yield it, pairs with an ``H x W`` pred.
        """
        pred_np, target_np = _to_numpy(pred), _to_numpy(target)
        if target_np.ndim == pred_np.ndim + 1 and target_np.shape[0] == 1:
            target_np = target_np[0]
        _check_labels(pred_np, "pred", ndim=None)
        _check_labels(target_np, "target", ndim=None)
        if pred_np.shape != target_np.shape or pred_np.ndim not in (2, 3):
            raise ValueError(
                f"pred {pred_np.shape} and target {target_np.shape} must both be H x W or B x H x W"
            )
        if pred_np.ndim == 2:
            pred_np, target_np = pred_np[None], target_np[None]
        things = slice(0, self.n_things)
        for p, t in zip(pred_np, target_np, strict=True):
            scores = matched_scores(self._image_confusion(p, t), things=things)
            if np.isnan(scores["pixel_accuracy"]):
                self.n_undefined += 1
                continue
            self.n_images += 1
            self.sum_miou += _to_fixed(scores["miou"])
            self.sum_pixel_accuracy += _to_fixed(scores["pixel_accuracy"])
            if not np.isnan(scores["things_miou"]):
                self.sum_things_miou += _to_fixed(scores["things_miou"])
                self.n_things_images += 1
            if not np.isnan(scores["stuff_miou"]):
                self.sum_stuff_miou += _to_fixed(scores["stuff_miou"])
                self.n_stuff_images += 1

    def compute(self) -> dict[str, torch.Tensor]:
        """Means over scored images (NaN if none) plus ``n_images`` scored and ``n_undefined``."""
        return {
            "miou": _fixed_mean(self.sum_miou, self.n_images),
            "pixel_accuracy": _fixed_mean(self.sum_pixel_accuracy, self.n_images),
            "things_miou": _fixed_mean(self.sum_things_miou, self.n_things_images),
            "stuff_miou": _fixed_mean(self.sum_stuff_miou, self.n_stuff_images),
            "n_images": self.n_images.clone(),
            "n_undefined": self.n_undefined.clone(),
            "n_things_images": self.n_things_images.clone(),
            "n_stuff_images": self.n_stuff_images.clone(),
        }
