"""Pieces shared by every dataset: the `Sample` contract, errors, and array/tensor helpers.

Every dataset in `dynaseg.data` returns the same `Sample` dict so that the framework, the
metrics (docs/method.md §3) and the output writers never need to know which dataset they run on.
The image is what the model sees (possibly downscaled so the long side is at most
`max_side`); the ground truth stays at the evaluation resolution, which for BSDS500 and VOC is
the native image size (docs/method.md §3a) and for COCO-Stuff the 320×320 crop (docs/method.md §3b).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from dynaseg.images import image_to_tensor, load_image, resize_labels

__all__ = [
    "DatasetError",
    "SampleReadError",
    "Sample",
    "SegmentationDataset",
    "resize_long_side",
    "image_to_tensor",
]

IGNORE_INDEX = 255
"""GT value that the metrics ignore (VOC void border, COCO-Stuff 'unlabeled')."""


class DatasetError(Exception):
    """A dataset root or one of its files is missing or malformed.

    Raised at construction, so a wrong path fails before any optimisation starts. The message
    names what was expected where.
    """


class SampleReadError(DatasetError):
    """One item could not be read; the message starts with the offending file path.

    The framework catches it per image, records it in failures.csv and goes on with the rest.
    """

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class Sample(TypedDict, total=False):
    """One item, identical in shape for every dataset.

    Keys:
        id: Stable identifier, safe as a file name (used for output names).
        image: float32 tensor 3×h×w, RGB in [0, 1]; what the model is fed.
        gt: int64 tensor K×H×W holding K annotations at the evaluation size (K = 0 without GT).
        size: (H, W), the evaluation size; predictions are scored at this size.
        path: Path of the image file.
        scribble: (optional) int64 tensor h×w of scribble classes at the model's size, 255
            where unmarked (:mod:`dynaseg.scribble`); only items that have one carry it.
        scribble_path: (with ``scribble``) the file it was read from.
    """

    id: str
    image: torch.Tensor
    gt: torch.Tensor
    size: tuple[int, int]
    path: str
    scribble: torch.Tensor
    scribble_path: str


def resize_long_side(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """Downscale an H×W×C uint8 image so that its long side is at most `max_side`.

    Uses PIL bilinear resampling, which antialiases when shrinking. Images already small
    enough (or `max_side=None`) are returned unchanged; images are never enlarged.

    >>> resize_long_side(np.zeros((300, 600, 3), np.uint8), 200).shape
    (100, 200, 3)
    >>> resize_long_side(np.zeros((30, 60, 3), np.uint8), 200).shape
    (30, 60, 3)
    """
    check_max_side(max_side)
    if max_side is None:
        return image
    h, w = image.shape[:2]
    long_side = max(h, w)
    if long_side <= max_side:
        return image
    scale = max_side / long_side
    new_w = max(1, round(w * scale))
    new_h = max(1, round(h * scale))
    return resize_array(image, (new_h, new_w), Image.BILINEAR)


def resize_array(array: np.ndarray, size: tuple[int, int], resample: int) -> np.ndarray:
    """Resize an H×W or H×W×3 uint8 array to `size` = (H, W) with a PIL filter.

    Labels must use `Image.NEAREST` so that no new label values are invented.
    """
    if array.dtype != np.uint8:
        raise TypeError(f"resize_array expects uint8, got {array.dtype}")
    h, w = size
    return np.asarray(Image.fromarray(array).resize((w, h), resample=resample))


def gt_to_tensor(annotations: Sequence[np.ndarray], size: tuple[int, int]) -> torch.Tensor:
    """Stack K label maps of shape `size` into an int64 K×H×W tensor (K = 0 allowed)."""
    if not annotations:
        return torch.zeros((0, *size), dtype=torch.int64)
    return torch.from_numpy(np.stack([np.asarray(a, dtype=np.int64) for a in annotations]))


def read_image(path: Path, raw_orientation: bool = False) -> np.ndarray:
    """Read an image as H×W×3 uint8 RGB; ``raw_orientation`` keeps the stored pixel grid.

    Annotated datasets need the raw grid: their label maps are drawn on it, and the reference
    loaders (PiCIE's ``Image.open(...).convert("RGB")``) never apply the EXIF rotation.
    """
    return load_image(path, exif_transpose=not raw_orientation)


def read_label_png(path: Path) -> np.ndarray:
    """Read a label PNG as an H×W integer array of the stored indices.

    Palette (`P`) images give their indices, never colours: converting to RGB (or reading with
    OpenCV) would turn VOC labels into colours (docs/protocols.md B.2).
    """
    require_file(path, "ground truth")
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "I", "I;16"):
                raise SampleReadError(
                    path,
                    f"expected a single-channel label PNG (mode P or L), got mode {im.mode}",
                )
            return np.asarray(im).copy()
    except SampleReadError:
        raise
    except (OSError, ValueError) as err:
        raise SampleReadError(path, f"cannot read label image ({err})") from err


def check_gt_size(
    gt_path: Path, gt_shape: tuple[int, ...], image_path: Path, image_shape: tuple[int, ...]
) -> None:
    """Fail if a label map does not cover its image pixel for pixel."""
    if tuple(gt_shape[:2]) != tuple(image_shape[:2]):
        gh, gw = gt_shape[:2]
        ih, iw = image_shape[:2]
        raise SampleReadError(
            gt_path,
            f"ground truth is {gh}x{gw} (HxW) but the image {image_path} is {ih}x{iw}",
        )


def require_dirs(name: str, root: Path, expected: str, dirs: Iterable[str]) -> None:
    """Check that `root` and its sub-directories exist, naming the first one missing.

    Args:
        name: Dataset name for the message, e.g. "BSDS500".
        root: Dataset root given by the user.
        expected: What a valid root holds, e.g. "images/val/*.jpg and groundTruth/val/*.mat".
        dirs: Sub-directories of `root` that must exist, relative, with "/" separators.
    """
    prefix = f"{name} root {root}: expected {expected}"
    if not root.is_dir():
        what = "no such directory" if not root.exists() else "not a directory"
        raise DatasetError(f"{prefix}; found {what} {root}")
    for rel in dirs:
        if not (root / rel).is_dir():
            raise DatasetError(f"{prefix}; found no directory {rel}{_hint(root, rel)}")


def require_files(name: str, root: Path, expected: str, paths: Sequence[Path]) -> None:
    """Fail when none of the files exists: the root or layout is wrong.

    A few missing files are not fatal here: each such item fails on its own when it is read
    (recorded in the run's failures.csv) while the others are processed.
    """
    if paths and not any(p.is_file() for p in paths):
        shown = ", ".join(_rel(p, root) for p in paths[:3])
        more = f" and {len(paths) - 3} more" if len(paths) > 3 else ""
        raise DatasetError(
            f"{name} root {root}: expected {expected}; none of the {len(paths)} file(s) exists: "
            f"{shown}{more}"
        )


def require_file(path: Path, what: str) -> None:
    """Raise the per-item error for a missing file."""
    if not path.is_file():
        raise SampleReadError(path, f"{what} missing (no such file)")


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _hint(root: Path, rel: str) -> str:
    """Suggest a nearby root when the user pointed one or two levels too high."""
    for pattern in (f"*/{rel}", f"*/*/{rel}"):
        for found in sorted(root.glob(pattern)):
            if found.is_dir():
                parent = found
                for _ in rel.split("/"):
                    parent = parent.parent
                return f" (did you mean root={parent}?)"
    return ""


def apply_limit(ids: Sequence[str], limit: int | None) -> list[str]:
    """Sort ids and keep the first `limit` of them, so a limited run is reproducible."""
    ordered = sorted(ids)
    return ordered if limit is None else ordered[:limit]


def check_limit(limit: int | None) -> None:
    """Validate the common `limit` argument."""
    if limit is not None and (isinstance(limit, bool) or limit < 1):
        raise ValueError(f"limit must be >= 1 or None, got {limit!r}")


def check_max_side(max_side: int | None) -> None:
    """Validate `max_side`, wherever it is given: an image needs 2 pixels a side to segment."""
    if max_side is not None and (
        not isinstance(max_side, int) or isinstance(max_side, bool) or max_side < 2
    ):
        raise ValueError(f"max_side must be a whole number >= 2 or null, got {max_side!r}")


class SegmentationDataset(Dataset):
    """Base class: a sorted list of ids and a `load(id)` that builds one `Sample`.

    Subclasses set `self.ids` in `__init__` (via `apply_limit`) and implement `load`.
    """

    def __init__(self, root: str | os.PathLike, limit: int | None = None) -> None:
        check_limit(limit)
        self.root = Path(root).expanduser()
        self.limit = limit
        self.ids: list[str] = []

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Sample:
        if not -len(self.ids) <= index < len(self.ids):
            raise IndexError(f"index {index} out of range for {len(self.ids)} items")
        return self.load(self.ids[index])

    def load(self, item_id: str) -> Sample:
        """Read the item with this id."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, n={len(self)})"


def make_sample(
    item_id: str,
    image: np.ndarray,
    annotations: Sequence[np.ndarray],
    size: tuple[int, int],
    path: Path,
    max_side: int | None = None,
    scribble: tuple[np.ndarray, Path] | None = None,
) -> Sample:
    """Assemble a `Sample`; the image (and a scribble, given at the image's size with its path)
    is downscaled for the model, the GT is left as is."""
    work = resize_long_side(image, max_side)
    sample = Sample(
        id=item_id,
        image=image_to_tensor(work),
        gt=gt_to_tensor(annotations, size),
        size=(int(size[0]), int(size[1])),
        path=str(path),
    )
    if scribble is not None:
        strokes, scribble_path = scribble
        sample["scribble"] = torch.from_numpy(resize_labels(strokes, work.shape[:2]))
        sample["scribble_path"] = str(scribble_path)
    return sample
