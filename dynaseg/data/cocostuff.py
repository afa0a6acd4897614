"""COCO-Stuff-27 on the curated val2017 subset, PiCIE preprocessing (docs/method.md §3b).

Sources and measurements: docs/protocols.md A.1–A.4. The GT PNG value is the COCO-Stuff id − 1
(0–181), mapped to 27 coarse classes (0–11 things, 12–26 stuff); 255 means unlabeled. Both image
and GT are resized (shorter side → `crop`; image bilinear, label nearest) and centre-cropped to
`crop`×`crop`, which is the evaluation size, exactly as PiCIE's `EvalCOCO` does with
torchvision's `Resize(int)` + `CenterCrop`.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from dynaseg.data.base import (
    IGNORE_INDEX,
    DatasetError,
    Sample,
    SegmentationDataset,
    apply_limit,
    check_gt_size,
    make_sample,
    read_image,
    read_label_png,
    require_dirs,
    require_files,
    resize_array,
)

__all__ = [
    "COARSE_CLASS_NAMES",
    "N_CLASSES",
    "N_THINGS",
    "CocoStuff27",
    "fine_to_coarse",
    "read_id_list",
    "resize_center_crop",
]

_PACKAGE_DATA = resources.files("dynaseg.data").joinpath("cocostuff27")


def _load_mapping() -> tuple[np.ndarray, tuple[str, ...]]:
    """Read the shipped fine→coarse table as a 256-entry lookup table plus the class names."""
    table = json.loads(_PACKAGE_DATA.joinpath("fine_to_coarse.json").read_text(encoding="utf-8"))
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for fine, coarse in table["fine_to_coarse"].items():
        lut[int(fine)] = coarse
    classes = sorted(table["coarse_classes"], key=lambda c: c["id"])
    return lut, tuple(c["name"] for c in classes)


_FINE_TO_COARSE_LUT, COARSE_CLASS_NAMES = _load_mapping()
"""Names of the 27 coarse classes in id order, e.g. `COARSE_CLASS_NAMES[9] == "person-things"`."""

N_CLASSES = len(COARSE_CLASS_NAMES)
"""Number of coarse classes (27)."""

N_THINGS = 12
"""Coarse ids 0..N_THINGS-1 are things, the rest (12–26) stuff."""


def fine_to_coarse(fine: np.ndarray) -> np.ndarray:
    """Map stuffthingmaps PNG values (0–181) to coarse ids (0–26); 255 and unknown → 255.

    >>> fine_to_coarse(np.array([0, 1, 181, 255, 200])).tolist()
    [9, 11, 24, 255, 255]
    """
    fine = np.asarray(fine)
    inside = (fine >= 0) & (fine < 256)
    return np.where(inside, _FINE_TO_COARSE_LUT[np.clip(fine, 0, 255)], IGNORE_INDEX).astype(
        np.uint8
    )


def read_id_list(path: str | os.PathLike | None = None) -> list[str]:
    """Read an id list, one id per line; `None` reads the shipped curated val2017 list.

    Lines are stripped and empty ones dropped: copies of this list differ in their final
    newline (docs/protocols.md A.1), so counting newlines is wrong.
    """
    if path is None:
        text = _PACKAGE_DATA.joinpath("val2017_curated.txt").read_text(encoding="utf-8")
    else:
        try:
            text = Path(path).expanduser().read_text(encoding="utf-8")
        except OSError as err:
            raise DatasetError(f"curated id list {path}: cannot read ({err})") from err
    return [line.strip() for line in text.splitlines() if line.strip()]


def resize_center_crop(array: np.ndarray, crop: int, resample: int) -> np.ndarray:
    """Resize the shorter side to `crop` then take the central `crop`×`crop` window.

    Rounding follows torchvision (`Resize(int)` truncates the long side; `CenterCrop` rounds the
    offsets), so the crop matches PiCIE's pixel for pixel.

    >>> resize_center_crop(np.zeros((150, 200), np.uint8), 64, Image.NEAREST).shape
    (64, 64)
    """
    h, w = array.shape[:2]
    if h <= w:
        new_h, new_w = crop, int(crop * w / h)
    else:
        new_h, new_w = int(crop * h / w), crop
    resized = resize_array(array, (new_h, new_w), resample)
    top = int(round((new_h - crop) / 2.0))
    left = int(round((new_w - crop) / 2.0))
    return resized[top : top + crop, left : left + crop]


class CocoStuff27(SegmentationDataset):
    """COCO-Stuff with 27 coarse classes, one annotation per image, PiCIE's 320×320 view.

    Expected layout under `root`::

        images/<split>/<12-digit id>.jpg        # COCO val2017.zip unpacks to val2017/
        annotations/<split>/<12-digit id>.png   # stuffthingmaps_trainval2017.zip unpacks to
                                                # val2017/ and train2017/: place them here

    Args:
        root: Folder holding `images/` and `annotations/` as above.
        split: Sub-folder name, "val2017" by default.
        limit: Keep only the first `limit` ids in sorted order.
        crop: Shorter side after resizing and size of the square centre crop.
        curated: Text file of ids (one per line). `None` uses the shipped 2175-image curated
            list, which exists for "val2017" only.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "val2017",
        limit: int | None = None,
        crop: int = 320,
        curated: str | os.PathLike | None = None,
    ) -> None:
        super().__init__(root, limit)
        if isinstance(crop, bool) or crop < 1:
            raise ValueError(f"crop must be >= 1, got {crop!r}")
        if curated is None and split != "val2017":
            raise ValueError(
                f"no curated id list ships for split {split!r}; pass curated=<path to id list>"
            )
        self.split = split
        self.crop = crop
        self.image_dir = self.root / "images" / split
        self.gt_dir = self.root / "annotations" / split
        expected = f"images/{split}/<id>.jpg and annotations/{split}/<id>.png"
        require_dirs(
            "CocoStuff27", self.root, expected, [f"images/{split}", f"annotations/{split}"]
        )
        all_ids = read_id_list(curated)
        if not all_ids:
            raise DatasetError(f"curated id list {curated}: no ids")
        self.ids = apply_limit(all_ids, limit)
        paths = [self.image_dir / f"{i}.jpg" for i in self.ids]
        paths += [self.gt_dir / f"{i}.png" for i in self.ids]
        require_files("CocoStuff27", self.root, f"{expected} for every curated id", paths)

    def load(self, item_id: str) -> Sample:
        """Read image `item_id`, map its GT to coarse ids, resize and centre-crop both."""
        image_path = self.image_dir / f"{item_id}.jpg"
        gt_path = self.gt_dir / f"{item_id}.png"
        image = read_image(image_path, raw_orientation=True)
        fine = read_label_png(gt_path)
        check_gt_size(gt_path, fine.shape, image_path, image.shape)
        image = resize_center_crop(image, self.crop, Image.BILINEAR)
        coarse = resize_center_crop(fine_to_coarse(fine), self.crop, Image.NEAREST)
        return make_sample(item_id, image, [coarse], (self.crop, self.crop), image_path)
