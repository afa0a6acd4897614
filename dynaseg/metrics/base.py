"""What the protocols share: input checks, connected components, contingency tables and the
int64 sum-state ``Metric`` base.

States are int64 *sums* (``dist_reduce_fx="sum"``): pixel and segment counts, and score sums
in fixed point. DDP and ``Metric.forward`` add them with integer addition, which is
associative, so a 1-process and an N-process run, or ``forward`` image by image and one
``update`` per image, give bit-identical numbers (docs/method.md §3c, docs/protocols.md D);
float sums would differ in the last bits with the summation order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from skimage.measure import label
from skimage.metrics import contingency_table
from torchmetrics import Metric

__all__ = ["Contingency", "contingency", "relabel_connected"]

ArrayLike = np.ndarray | torch.Tensor

# Score sums are int64 in units of 2**-32: each term is rounded by < 2**-33 (far below any
# reported digit) and 2**31 unit scores still fit, ~10^5 times BSD500's segment count.
_FIXED_SCALE = 2**32


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


def _check_ignore_index(ignore_index: int | None) -> None:
    if ignore_index is not None and not isinstance(ignore_index, (int, np.integer)):
        raise ValueError(f"ignore_index must be an int or None, got {ignore_index!r}")


def _compact_ids(x: np.ndarray) -> tuple[np.ndarray, int]:
    """Map labels to small non-negative ids; skip the sort when the values already are."""
    if x.size and x.min() >= 0 and x.max() < max(2 * x.size, 1024):
        return x.astype(np.int64, copy=False), int(x.max()) + 1
    values, inverse = np.unique(x, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64), int(values.size)


def relabel_connected(labels: np.ndarray, connectivity: int | None = 4) -> np.ndarray:
    """Split every label into its connected components.

    Kim et al.'s scores are only reproducible after this step: scoring raw cluster ids puts
    every baseline ~3x below the paper (docs/protocols.md C.6).

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
    # skimage leaves its background value (0) unlabelled, so shift every id above it; it numbers
    # the components 1..K in raster order of their first pixel.
    ids = _compact_ids(labels.ravel())[0].reshape(labels.shape) + 1
    components = label(ids, background=0, connectivity=1 if connectivity == 4 else 2)
    return components.astype(np.int64, copy=False) - 1


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


class Contingency(NamedTuple):
    """The non-empty cells of a GT x prediction contingency table, sorted by (GT, pred) id.

    Ids are compacted labels; ``gt_sizes`` / ``pred_sizes`` hold the pixels of every id,
    0 for ids absent from the map.
    """

    gt_ids: np.ndarray
    pred_ids: np.ndarray
    counts: np.ndarray
    gt_sizes: np.ndarray
    pred_sizes: np.ndarray


def contingency(pred: ArrayLike, gt: ArrayLike, ignore_index: int | None = None) -> Contingency:
    """Contingency table of two label maps of the same shape, without ``ignore_index`` GT pixels.

    Example:
        >>> contingency(np.array([5, 5, 7, 7]), np.array([0, 0, 0, 1])).counts.tolist()
        [2, 1, 1]
    """
    pred, gt = _labelled_pixels(pred, gt, ignore_index)
    g, ng = _compact_ids(gt)
    k, nk = _compact_ids(pred)
    if g.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Contingency(empty, empty, empty, empty, empty)
    table = contingency_table(g, k)
    table.sum_duplicates()  # canonical CSR: cells in (GT, pred) order, which callers rely on
    cells = table.tocoo()
    return Contingency(
        cells.row.astype(np.int64),
        cells.col.astype(np.int64),
        cells.data.astype(np.int64),  # float pixel counts, exact below 2**53
        np.bincount(g, minlength=ng),
        np.bincount(k, minlength=nk),
    )


def _best_ious(t: Contingency) -> np.ndarray:
    """Per present GT id, in increasing order, its best IoU with any predicted id."""
    gi, inter = t.gt_ids, t.counts
    iou = inter / (t.gt_sizes[gi] + t.pred_sizes[t.pred_ids] - inter)
    # Cells are sorted by GT id and every present GT id has at least one cell.
    starts = np.flatnonzero(np.r_[True, gi[1:] != gi[:-1]])
    return np.maximum.reduceat(iou, starts).astype(np.float64, copy=False)


def _to_fixed(values: np.ndarray | float) -> int:
    """Sum of scores in fixed point; each term is rounded on its own, so grouping is moot."""
    scaled = np.rint(np.asarray(values, dtype=np.float64) * _FIXED_SCALE)
    return int(scaled.astype(np.int64).sum())


def _fixed_mean(total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """float64 mean of a fixed-point sum; NaN when nothing was counted."""
    return total.double() / _FIXED_SCALE / count


class _SumStateMetric(Metric):
    """Metric whose states are all int64 sums, so ``forward`` can take the reduce-state path:
    it scores one update alone and adds its states to the global ones, exactly."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def _add_sum_state(self, name: str, shape: tuple[int, ...] = ()) -> None:
        self.add_state(name, default=torch.zeros(shape, dtype=torch.int64), dist_reduce_fx="sum")

    def set_dtype(self, dst_type: str | torch.dtype) -> Metric:
        """Keep the int64 states: as floats, pixel counts above 2**24 (COCO val: ~2 x 10**8)
        would no longer be exact. No state is a float, so there is nothing else to cast."""
        return self

    def _scalar(self, value: float) -> torch.Tensor:
        """A 0-d float64 result on the states' device."""
        return torch.tensor(value, dtype=torch.float64, device=self.device)


class _LabelMapMetric(_SumStateMetric):
    """A metric of predicted label maps against annotations, with the shared options checked."""

    def __init__(self, connectivity: int | None, ignore_index: int | None) -> None:
        super().__init__()
        _check_connectivity(connectivity)
        _check_ignore_index(ignore_index)
        self.connectivity = connectivity
        self.ignore_index = ignore_index


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
