"""Any folder of images, without ground truth: for segmenting your own pictures."""

from __future__ import annotations

import os
from pathlib import Path

from dynaseg.data.base import (
    DatasetError,
    Sample,
    SegmentationDataset,
    apply_limit,
    check_max_side,
    make_sample,
    read_image,
    require_dirs,
)
from dynaseg.images import IMAGE_EXTENSIONS, is_image_file

__all__ = ["IMAGE_EXTENSIONS", "ImageFolder"]


def path_to_id(rel: Path) -> str:
    """Turn a path relative to the root into a flat id usable as a file name.

    >>> path_to_id(Path("trip/day1/IMG_01.JPG"))
    'trip__day1__IMG_01'
    """
    return rel.with_suffix("").as_posix().replace("/", "__")


class ImageFolder(SegmentationDataset):
    """Every image file in a folder, sorted by id; `gt` is empty (K = 0).

    Hidden files and folders (name starting with ".", e.g. macOS `._x.jpg`) are skipped.

    Args:
        root: Folder to read.
        limit: Keep only the first `limit` ids in sorted order.
        max_side: Downscale the model input so its long side is at most this; `size` stays
            the original image size, so outputs come back at full resolution.
        recursive: Also read sub-folders; ids then join the folder names with "__".
    """

    def __init__(
        self,
        root: str | os.PathLike,
        limit: int | None = None,
        max_side: int | None = None,
        recursive: bool = False,
    ) -> None:
        super().__init__(root, limit)
        check_max_side(max_side)
        self.max_side = max_side
        self.recursive = recursive
        exts = " ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
        expected = f"image files ({exts})" + (" in it or its sub-folders" if recursive else "")
        require_dirs("ImageFolder", self.root, expected, [])
        self.paths: dict[str, Path] = {}
        for path in self.root.rglob("*") if recursive else self.root.iterdir():
            rel = path.relative_to(self.root)
            if any(part.startswith(".") for part in rel.parts):
                continue
            if not is_image_file(path) or not path.is_file():
                continue
            item_id = path_to_id(rel)
            if item_id in self.paths:
                raise DatasetError(
                    f"ImageFolder root {self.root}: {self.paths[item_id]} and {path} both give "
                    f"id {item_id!r}; rename one so outputs do not overwrite each other"
                )
            self.paths[item_id] = path
        if not self.paths:
            raise DatasetError(f"ImageFolder root {self.root}: expected {expected}; found none")
        self.ids = apply_limit(list(self.paths), limit)

    def load(self, item_id: str) -> Sample:
        """Read one image; the evaluation size is its original size."""
        path = self.paths[item_id]
        image = read_image(path)
        return make_sample(item_id, image, [], image.shape[:2], path, self.max_side)
