"""BSDS500 with all human annotations, for the segment-wise best-IoU protocol (docs/method.md §3a).

Layout (docs/protocols.md C.1–C.3): `root/images/<split>/<id>.jpg` and
`root/groundTruth/<split>/<id>.mat`, where `root` is the `BSDS500/data` folder. Each `.mat`
holds a 1×N cell array `groundTruth` of structs with `Segmentation` (uint16 labels from 1)
and `Boundaries`; all N annotations are returned, at the native 481×321 / 321×481 size.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.io

from dynaseg.data.base import (
    DatasetError,
    Sample,
    SampleReadError,
    SegmentationDataset,
    apply_limit,
    check_gt_size,
    check_max_side,
    make_sample,
    read_image,
    require_dirs,
    require_file,
    require_files,
)

__all__ = ["BSDS500", "read_bsds_mat"]


def read_bsds_mat(path: str | os.PathLike) -> list[np.ndarray]:
    """Read every annotator's `Segmentation` map from a BSDS500 ground-truth `.mat`.

    Returns:
        One H×W uint16 label map per annotator, in the file's cell order.
    """
    require_file(Path(path), "ground truth")
    try:
        mat = scipy.io.loadmat(path)
    except Exception as err:  # scipy raises several unrelated types for corrupt files
        raise SampleReadError(path, f"cannot read MATLAB file ({err})") from err
    try:
        cells = mat["groundTruth"]
        maps = [np.asarray(cells[0, j]["Segmentation"][0, 0]) for j in range(cells.shape[1])]
    except (KeyError, IndexError, ValueError, TypeError) as err:
        raise SampleReadError(
            path,
            "expected a 1xN cell array 'groundTruth' of structs with field 'Segmentation' "
            f"({type(err).__name__}: {err})",
        ) from err
    if not maps:
        raise SampleReadError(path, "'groundTruth' holds no annotation")
    for j, seg in enumerate(maps):
        if seg.ndim != 2 or seg.shape != maps[0].shape:
            raise SampleReadError(
                path, f"annotation {j} has shape {seg.shape}, annotation 0 has {maps[0].shape}"
            )
    return maps


class BSDS500(SegmentationDataset):
    """BSDS500 images with every annotator's segmentation at native resolution.

    Args:
        root: The `BSDS500/data` folder holding `images/` and `groundTruth/`.
        split: "train", "val" or "test" (the folder name under `images/`).
        limit: Keep only the first `limit` ids in sorted order.
        max_side: Downscale the model input so its long side is at most this; GT is unchanged.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "val",
        limit: int | None = None,
        max_side: int | None = None,
    ) -> None:
        super().__init__(root, limit)
        check_max_side(max_side)
        self.split = split
        self.max_side = max_side
        self.image_dir = self.root / "images" / split
        self.gt_dir = self.root / "groundTruth" / split
        expected = f"images/{split}/*.jpg and groundTruth/{split}/*.mat"
        require_dirs("BSDS500", self.root, expected, [f"images/{split}", f"groundTruth/{split}"])
        # Glob *.jpg only: the image folders also hold a stray Thumbs.db (docs/protocols.md C.1).
        all_ids = [p.stem for p in self.image_dir.glob("*.jpg") if p.is_file()]
        if not all_ids:
            raise DatasetError(
                f"BSDS500 root {self.root}: expected {expected}; found no *.jpg in images/{split}"
            )
        self.ids = apply_limit(all_ids, limit)
        require_files(
            "BSDS500",
            self.root,
            f"groundTruth/{split}/<id>.mat for every images/{split}/<id>.jpg",
            [self._gt_path(i) for i in self.ids],
        )

    def _gt_path(self, item_id: str) -> Path:
        return self.gt_dir / f"{item_id}.mat"

    def load(self, item_id: str) -> Sample:
        """Read image `item_id` and all its annotations."""
        image_path = self.image_dir / f"{item_id}.jpg"
        gt_path = self._gt_path(item_id)
        image = read_image(image_path, raw_orientation=True)
        maps = read_bsds_mat(gt_path)
        check_gt_size(gt_path, maps[0].shape, image_path, image.shape)
        return make_sample(item_id, image, maps, image.shape[:2], image_path, self.max_side)
