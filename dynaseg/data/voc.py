"""PASCAL VOC 2012 segmentation images with one class-agnostic annotation (docs/method.md §3a).

Layout (docs/protocols.md B.1–B.2): `root` is `VOCdevkit/VOC2012`; ids come from
`ImageSets/Segmentation/<split>.txt`, images are `JPEGImages/<id>.jpg` and the GT is a
palette PNG in `SegmentationObject/` or `SegmentationClass/`. Kim et al. never published their
VOC conversion (docs/protocols.md B.3), so two readings are offered:

* `gt="object"` (default): instance indices as stored; background is one segment, every
  instance another.
* `gt="class_cc"`: class indices split into 4-connected components, so separate regions of one
  class become separate segments.

Void pixels (255) stay 255 in both; the metric ignores them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from skimage.measure import label

from dynaseg.data.base import (
    IGNORE_INDEX,
    DatasetError,
    Sample,
    SegmentationDataset,
    apply_limit,
    check_gt_size,
    check_max_side,
    make_sample,
    read_image,
    read_label_png,
    require_dirs,
    require_files,
)

__all__ = ["VOC2012", "connected_components"]

_GT_DIRS = {"object": "SegmentationObject", "class_cc": "SegmentationClass"}


def connected_components(labels: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Give every 4-connected region of equal label its own id; `ignore_index` is kept.

    Ids are 0, 1, 2, ... in order of the original label value, skipping `ignore_index` so a
    region can never be confused with void.

    >>> connected_components(np.array([[1, 0, 1], [255, 0, 0]])).tolist()
    [[1, 0, 2], [255, 0, 0]]
    """
    labels = np.asarray(labels, dtype=np.int64)  # skimage reads bool maps as foreground masks
    # Void pixels become skimage's background 0, the regions 1..K in raster order.
    components = label(labels, background=ignore_index, connectivity=1)
    n = int(components.max(initial=0))
    value = np.empty(n + 1, dtype=np.int64)
    value[components.ravel()] = labels.ravel()
    # Renumber the regions by label value, then raster order (a stable sort).
    ids = np.empty(n, dtype=np.int64)
    ids[np.argsort(value[1:], kind="stable")] = np.arange(n)
    ids[ids >= ignore_index] += 1
    return np.r_[ignore_index, ids][components]


class VOC2012(SegmentationDataset):
    """PASCAL VOC 2012 segmentation set, GT as class-agnostic segments.

    Args:
        root: The `VOCdevkit/VOC2012` folder.
        split: Name of the list in `ImageSets/Segmentation/` ("trainval", "train", "val").
        limit: Keep only the first `limit` ids in sorted order.
        max_side: Downscale the model input so its long side is at most this; GT is unchanged.
        gt: "object" (SegmentationObject) or "class_cc" (SegmentationClass split into
            4-connected components).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "trainval",
        limit: int | None = None,
        max_side: int | None = None,
        gt: str = "object",
    ) -> None:
        super().__init__(root, limit)
        check_max_side(max_side)
        if gt not in _GT_DIRS:
            raise ValueError(f"gt must be one of {sorted(_GT_DIRS)}, got {gt!r}")
        self.split = split
        self.max_side = max_side
        self.gt = gt
        gt_dir = _GT_DIRS[gt]
        list_rel = f"ImageSets/Segmentation/{split}.txt"
        expected = f"{list_rel}, JPEGImages/<id>.jpg and {gt_dir}/<id>.png"
        require_dirs(
            "VOC2012", self.root, expected, ["ImageSets/Segmentation", "JPEGImages", gt_dir]
        )
        list_path = self.root / list_rel
        if not list_path.is_file():
            raise DatasetError(f"VOC2012 root {self.root}: expected {expected}; no file {list_rel}")
        all_ids = list(dict.fromkeys(list_path.read_text().split()))
        if not all_ids:
            raise DatasetError(f"VOC2012 root {self.root}: {list_rel} lists no image ids")
        self.ids = apply_limit(all_ids, limit)
        self.image_dir = self.root / "JPEGImages"
        self.gt_dir = self.root / gt_dir
        paths = [self.image_dir / f"{i}.jpg" for i in self.ids]
        paths += [self.gt_dir / f"{i}.png" for i in self.ids]
        require_files("VOC2012", self.root, f"{expected} for every id in {list_rel}", paths)

    def load(self, item_id: str) -> Sample:
        """Read image `item_id` and its single annotation."""
        image_path = self.image_dir / f"{item_id}.jpg"
        gt_path: Path = self.gt_dir / f"{item_id}.png"
        image = read_image(image_path, raw_orientation=True)
        labels = read_label_png(gt_path)
        check_gt_size(gt_path, labels.shape, image_path, image.shape)
        if self.gt == "class_cc":
            labels = connected_components(labels)
        return make_sample(item_id, image, [labels], image.shape[:2], image_path, self.max_side)
