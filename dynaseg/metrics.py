"""Evaluation metrics for the three protocols of method.md §3.

The paper defines no equation for its scores, so this module follows the protocols as
restated in ``docs/protocols.md``:

* :class:`SegmentBestIoU` -- BSD500 / PASCAL VOC segment-wise best IoU of Kim et al. 2020
  (protocols C.5), with the prediction split into connected components first (C.6, F#6).
* :class:`DatasetHungarianIoU` -- COCO-Stuff-27 with one Hungarian matching for the whole
  dataset, as PiCIE / STEGO (A.5).
* :class:`ImageHungarianIoU` -- COCO-Stuff-27 with one matching per image, averaged over
  images, the protocol behind DynaSeg's per-image COCO numbers (A.7, F#2).
* :class:`RegionMeasures` -- the BSDS500 region benchmark of Arbelaez et al. (TPAMI 2011, §3.2):
  segmentation covering, probabilistic Rand index and variation of information, each image
  scored against all its annotations and averaged over images.

Each protocol has pure NumPy functions holding the maths and a torchmetrics ``Metric`` twin
whose states are int64 *sums* (``dist_reduce_fx="sum"``): pixel and segment counts, and score
sums in fixed point. DDP sums them before any matching, and because integer addition is
associative a 1-process and an N-process run give bit-identical numbers (method.md §3c,
protocols D); float sums would differ in the last bits with the summation order.
Things / stuff mIoU are means of the per-class IoUs of the full matching, not PiCIE's
cluster-indexed sub-blocks (A.6, F#3).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from torchmetrics import Metric

__all__ = [
    "DatasetHungarianIoU",
    "ImageHungarianIoU",
    "RegionMeasures",
    "SegmentBestIoU",
    "best_iou_per_segment",
    "hungarian_match",
    "matched_scores",
    "rand_index",
    "relabel_connected",
    "segmentation_covering",
    "variation_of_information",
]

ArrayLike = np.ndarray | torch.Tensor

# Up to this many distinct labels, one ``ndimage.label`` per label is faster than one graph
# over all pixels; beyond it (e.g. raw k-means maps with hundreds of ids) the graph wins.
_LOOP_MAX_LABELS = 16
# Largest joint histogram (GT ids x predicted ids) built densely; larger ones are counted
# sparsely by sorting, to bound memory for maps with tens of thousands of components.
_DENSE_PAIRS_MAX = 1 << 22
# Score sums are int64 in units of 2**-32: each term is rounded by < 2**-33 (far below any
# reported digit) and 2**31 unit scores still fit, ~10^5 times BSD500's segment count.
_FIXED_SCALE = 2**32


# ---------------------------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------------------------


def _to_numpy(x: ArrayLike) -> np.ndarray:
    """Return ``x`` as a NumPy array without copying NumPy input."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _check_labels(x: np.ndarray, name: str, ndim: int | None = 2) -> None:
    """Reject float maps and wrong ranks early, where the mistake is still obvious."""
    if not (np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_):
        raise ValueError(f"{name} must hold integer labels, got dtype {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(x.shape)}")


def _check_connectivity(connectivity: int | None) -> None:
    if connectivity not in (4, 8, None):
        raise ValueError(f"connectivity must be 4, 8 or None, got {connectivity!r}")


def _first_appearance_ids(ids: np.ndarray, n_ids: int) -> np.ndarray:
    """Renumber ids in [0, n_ids) to 0..K-1 in raster order of first appearance.

    Canonical numbering makes outputs independent of which code path or id permutation
    produced them; ``minimum.at`` avoids sorting all pixels.
    """
    flat = ids.ravel()
    first = np.full(n_ids, flat.size, dtype=np.int64)
    np.minimum.at(first, flat, np.arange(flat.size, dtype=np.int64))
    rank = np.empty(n_ids, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(n_ids)  # absent ids rank last, unused
    return rank[flat].reshape(ids.shape)


def _components_by_label(
    labels: np.ndarray, values: np.ndarray, structure: np.ndarray
) -> tuple[np.ndarray, int]:
    """Components with one ``ndimage.label`` call per label value (few labels)."""
    out = np.empty(labels.shape, dtype=np.int64)
    offset = 0
    for value in values:
        mask = labels == value
        comp, n = ndimage.label(mask, structure=structure)
        out[mask] = comp[mask] + (offset - 1)
        offset += n
    return out, offset


def _components_by_graph(labels: np.ndarray, connectivity: int) -> tuple[np.ndarray, int]:
    """Components of the pixel graph whose edges join equal neighbours (many labels)."""
    h, w = labels.shape
    index = np.arange(h * w, dtype=np.int64).reshape(h, w)
    shifts = [(np.s_[:, 1:], np.s_[:, :-1]), (np.s_[1:, :], np.s_[:-1, :])]
    if connectivity == 8:
        shifts += [(np.s_[1:, 1:], np.s_[:-1, :-1]), (np.s_[1:, :-1], np.s_[:-1, 1:])]
    rows, cols = [], []
    for a, b in shifts:
        same = labels[a] == labels[b]
        rows.append(index[a][same])
        cols.append(index[b][same])
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(r.size, dtype=np.int8), (r, c)), shape=(h * w, h * w))
    n, comp = connected_components(graph.tocsr(), directed=False)
    return comp.reshape(h, w), int(n)


def relabel_connected(labels: np.ndarray, connectivity: int | None = 4) -> np.ndarray:
    """Split every label into its connected components.

    Kim et al.'s scores are only reproducible after this step: scoring raw cluster ids puts
    every baseline ~3x below the paper (protocols C.6).

    Args:
        labels: H x W integer label map.
        connectivity: 4 or 8 neighbourhood; ``None`` returns ``labels`` unchanged.

    Returns:
        H x W int64 map with ids 0..K-1, numbered in raster order of first appearance.

    Example:
        >>> relabel_connected(np.array([[0, 1, 0], [0, 1, 1]])).tolist()
        [[0, 1, 2], [0, 1, 1]]
        >>> relabel_connected(np.array([[0, 1], [1, 0]]), connectivity=8).tolist()
        [[0, 1], [1, 0]]
    """
    _check_connectivity(connectivity)
    labels = np.asarray(labels)
    _check_labels(labels, "labels")
    if connectivity is None:
        return labels
    if labels.size == 0:
        return np.zeros(labels.shape, dtype=np.int64)
    values = np.unique(labels)
    if values.size <= _LOOP_MAX_LABELS:
        structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
        comp, n = _components_by_label(labels, values, structure)
    else:
        comp, n = _components_by_graph(labels, connectivity)
    return _first_appearance_ids(comp, n)


def _compact_ids(x: np.ndarray) -> tuple[np.ndarray, int]:
    """Map labels to small non-negative ids; skip the sort when the values already are."""
    if x.size and x.min() >= 0 and x.max() < max(2 * x.size, 1024):
        return x.astype(np.int64, copy=False), int(x.max()) + 1
    values, inverse = np.unique(x, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64), int(values.size)


def _joint_counts(a: np.ndarray, b: np.ndarray, na: int, nb: int) -> tuple[np.ndarray, ...]:
    """Non-zero cells of the joint histogram of ``a`` x ``b``, sorted by (a, b)."""
    codes = a * nb + b
    if na * nb <= _DENSE_PAIRS_MAX:
        hist = np.bincount(codes, minlength=na * nb)
        cells = np.flatnonzero(hist)
        counts = hist[cells]
    else:
        cells, counts = np.unique(codes, return_counts=True)
    return cells // nb, cells % nb, counts


def _labelled_pixels(
    pred: ArrayLike, gt: ArrayLike, ignore_index: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Two same-shape label maps, flattened, without the pixels whose GT is ``ignore_index``."""
    pred, gt = _to_numpy(pred), _to_numpy(gt)
    _check_labels(pred, "pred", ndim=None)
    _check_labels(gt, "gt", ndim=None)
    if pred.shape != gt.shape:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} must have the same shape")
    pred, gt = pred.ravel(), gt.ravel()
    if ignore_index is not None:
        keep = gt != ignore_index
        pred, gt = pred[keep], gt[keep]
    return pred, gt


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
    pred, gt = _labelled_pixels(pred, gt, ignore_index)
    if gt.size == 0:
        return np.zeros(0, dtype=np.float64)
    g, ng = _compact_ids(gt)
    k, nk = _compact_ids(pred)
    g_size = np.bincount(g, minlength=ng)
    k_size = np.bincount(k, minlength=nk)
    gi, ki, inter = _joint_counts(g, k, ng, nk)
    iou = inter / (g_size[gi] + k_size[ki] - inter)
    # Cells are sorted by GT id and every present GT id has at least one cell.
    starts = np.flatnonzero(np.r_[True, gi[1:] != gi[:-1]])
    return np.maximum.reduceat(iou, starts).astype(np.float64, copy=False)


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


def _contingency(
    pred: ArrayLike, gt: ArrayLike, ignore_index: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sparse contingency table of two label maps: O(N) to build, O(cells) afterwards.

    Returns:
        ``(gi, ki, n_ij, gt_sizes, pred_sizes)``: the non-empty cells (GT id, predicted id,
        count) and the sizes of every present GT and predicted region (empty ids removed).
    """
    pred, gt = _labelled_pixels(pred, gt, ignore_index)
    if gt.size == 0:
        raise ValueError("no labelled pixels to compare")
    g, ng = _compact_ids(gt)
    k, nk = _compact_ids(pred)
    gi, ki, n_ij = _joint_counts(g, k, ng, nk)
    gt_sizes, pred_sizes = np.bincount(g, minlength=ng), np.bincount(k, minlength=nk)
    return gi, ki, n_ij, gt_sizes[gt_sizes > 0], pred_sizes[pred_sizes > 0]


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
    gi, ki, n_ij, gt_sizes, pred_sizes = _contingency(pred, gt, ignore_index)
    # Renumber to the present regions so that cells index the size arrays.
    gi = np.unique(gi, return_inverse=True)[1].ravel()
    ki = np.unique(ki, return_inverse=True)[1].ravel()
    iou = n_ij / (gt_sizes[gi] + pred_sizes[ki] - n_ij)
    best = np.zeros(gt_sizes.size)
    np.maximum.at(best, gi, iou)
    return float((gt_sizes * best).sum() / gt_sizes.sum())


def _pairs(n: np.ndarray) -> int:
    """Σ n (n − 1) / 2 in exact integer arithmetic."""
    n = n.astype(np.int64)
    return int((n * (n - 1) // 2).sum())


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
    _, _, n_ij, gt_sizes, pred_sizes = _contingency(pred, gt, ignore_index)
    total = _pairs(np.array([gt_sizes.sum()]))
    if total == 0:
        return 1.0
    agree = total + 2 * _pairs(n_ij) - _pairs(gt_sizes) - _pairs(pred_sizes)
    return agree / total


def _entropy(counts: np.ndarray, n: int) -> float:
    p = counts / n
    return float(-(p * np.log(p)).sum())


def variation_of_information(
    pred: ArrayLike, gt: ArrayLike, ignore_index: int | None = None
) -> float:
    """Variation of information VI(S, S') = H(S) + H(S') − 2 I(S, S'), in nats (natural log).

    A distance: 0 for identical partitions (up to renumbering), larger is worse.

    Example:
        >>> round(variation_of_information(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 0])), 4)
        0.6931
    """
    _, _, n_ij, gt_sizes, pred_sizes = _contingency(pred, gt, ignore_index)
    n = int(gt_sizes.sum())
    joint = _entropy(n_ij, n)
    # I = H(S) + H(S') − H(S, S'), hence VI = 2 H(S, S') − H(S) − H(S').
    return max(0.0, 2 * joint - _entropy(gt_sizes, n) - _entropy(pred_sizes, n))


# ---------------------------------------------------------------------------------------------
# torchmetrics twins
# ---------------------------------------------------------------------------------------------


def _to_fixed(values: np.ndarray | float) -> int:
    """Sum of scores in fixed point; each term is rounded on its own, so grouping is moot."""
    scaled = np.rint(np.asarray(values, dtype=np.float64) * _FIXED_SCALE)
    return int(scaled.astype(np.int64).sum())


def _fixed_mean(total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """float64 mean of a fixed-point sum; NaN when nothing was counted."""
    return total.double() / _FIXED_SCALE / count


class _SumStateMetric(Metric):
    """Metric whose states are int64 sums that keep their dtype.

    ``Metric.set_dtype`` would otherwise cast them to floats, where pixel counts above 2**24
    (COCO val: ~2 x 10**8) are no longer exact.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def _add_sum_state(
        self, name: str, shape: tuple[int, ...] = (), dtype: torch.dtype = torch.int64
    ) -> None:
        if not hasattr(self, "_exact_dtypes"):
            self._exact_dtypes: dict[str, torch.dtype] = {}
        self._exact_dtypes[name] = dtype
        self.add_state(name, default=torch.zeros(shape, dtype=dtype), dist_reduce_fx="sum")

    def _apply(self, fn: Any, exclude_state: Sequence[str] = "") -> torch.nn.Module:
        this = super()._apply(fn, exclude_state)
        for name, dtype in getattr(this, "_exact_dtypes", {}).items():
            value = getattr(this, name)
            if value.dtype != dtype:
                setattr(this, name, value.to(dtype))
            if this._defaults[name].dtype != dtype:
                this._defaults[name] = this._defaults[name].to(dtype)
        return this

    def _scalar(self, value: float) -> torch.Tensor:
        """A 0-d float64 result on the states' device."""
        return torch.tensor(value, dtype=torch.float64, device=self.device)


def _check_ignore_index(ignore_index: int | None) -> None:
    if ignore_index is not None and not isinstance(ignore_index, (int, np.integer)):
        raise ValueError(f"ignore_index must be an int or None, got {ignore_index!r}")


class _LabelMapMetric(_SumStateMetric):
    """A metric of predicted label maps against annotations, with the shared options checked."""

    def __init__(self, connectivity: int | None, ignore_index: int | None) -> None:
        super().__init__()
        _check_connectivity(connectivity)
        _check_ignore_index(ignore_index)
        self.connectivity = connectivity
        self.ignore_index = ignore_index


def _checked_pair(
    pred: ArrayLike, annotations: ArrayLike | Sequence[ArrayLike]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """A prediction and its annotations as arrays, checked to be label maps of one size."""
    pred_np = _to_numpy(pred)
    _check_labels(pred_np, "pred")
    gts = _split_annotations(annotations)
    if not gts:
        raise ValueError("annotations must contain at least one ground-truth map")
    for gt in gts:
        _check_labels(gt, "annotation")
        if gt.shape != pred_np.shape:
            raise ValueError(f"annotation {gt.shape} and pred {pred_np.shape} differ in shape")
    return pred_np, gts


def _split_annotations(annotations: ArrayLike | Sequence[ArrayLike]) -> list[np.ndarray]:
    """Accept one H x W map, an A x H x W stack, or a sequence of H x W maps."""
    if isinstance(annotations, (np.ndarray, torch.Tensor)):
        arr = _to_numpy(annotations)
        if arr.ndim == 2:
            return [arr]
        if arr.ndim == 3:
            return list(arr)
        raise ValueError(f"annotations must be H x W or A x H x W, got shape {arr.shape}")
    return [_to_numpy(a) for a in annotations]


class SegmentBestIoU(_LabelMapMetric):
    """Segment-wise best IoU for BSD500 / VOC, pooled over all GT segments (protocols C.5).

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
            self._add_sum_state(f"sum_{group}")  # fixed point, see _FIXED_SCALE
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
            self._add_sum_state(f"sum_{name}")  # fixed point, see _FIXED_SCALE
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


class RegionMeasures(_LabelMapMetric):
    """BSDS500 region benchmark (Arbelaez et al., TPAMI 2011): covering, PRI and VoI.

    Each image is scored against all its annotations: ``covering`` is the mean over annotations
    of :func:`segmentation_covering` (GT covered by the prediction), ``pri`` the mean of
    :func:`rand_index` (the probabilistic Rand index), ``voi`` the mean of
    :func:`variation_of_information` (nats; lower is better). The reported values are means over
    images. States are fixed-point int64 sums of the per-image values with an int64 image count,
    so 1-process and N-process runs agree bit for bit (as the other metrics here).

    Args:
        connectivity: split the prediction into 4- or 8-connected components first. Default
            ``None``: the region benchmark scores a segmentation as given (its regions need not
            be connected), and splitting would change PRI and VoI, unlike the best-IoU protocol
            whose published baselines need the split.
        ignore_index: GT value whose pixels are removed from both maps.

    Example:
        >>> m = RegionMeasures()
        >>> m.update(np.array([[5, 5], [2, 2]]), [np.array([[0, 0], [1, 1]])])
        >>> {k: float(v) for k, v in m.compute().items()}
        {'covering': 1.0, 'pri': 1.0, 'voi': 0.0}
    """

    higher_is_better = None  # covering and PRI: higher; VoI: lower

    def __init__(self, connectivity: int | None = None, ignore_index: int | None = None) -> None:
        super().__init__(connectivity, ignore_index)
        for name in ("covering", "pri", "voi"):
            self._add_sum_state(f"sum_{name}")  # fixed point, see _FIXED_SCALE
        self._add_sum_state("n_images")

    def update(self, pred: ArrayLike, annotations: ArrayLike | Sequence[ArrayLike]) -> None:
        """Add one image.

        Args:
            pred: H x W predicted ids.
            annotations: the image's GT maps: a sequence of H x W maps, an A x H x W stack, or
                one H x W map.
        """
        pred_np, gts = _checked_pair(pred, annotations)
        segments = relabel_connected(pred_np, self.connectivity)
        for name, fn in (
            ("covering", segmentation_covering),
            ("pri", rand_index),
            ("voi", variation_of_information),
        ):
            value = float(np.mean([fn(segments, gt, self.ignore_index) for gt in gts]))
            state = getattr(self, f"sum_{name}")
            setattr(self, f"sum_{name}", state + _to_fixed(value))
        self.n_images += 1

    def compute(self) -> dict[str, torch.Tensor]:
        """Means over images (NaN when no image was added)."""
        return {
            name: _fixed_mean(getattr(self, f"sum_{name}"), self.n_images)
            for name in ("covering", "pri", "voi")
        }
