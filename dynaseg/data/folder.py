"""Images without ground truth, for segmenting your own pictures: named files or a folder."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from dynaseg.data.base import (
    DatasetError,
    Sample,
    SegmentationDataset,
    apply_limit,
    check_limit,
    check_max_side,
    make_sample,
    read_image,
    require_dirs,
)
from dynaseg.images import IMAGE_EXTENSIONS, is_image_file
from dynaseg.scribble import SUFFIX as SCRIBBLE_SUFFIX
from dynaseg.scribble import is_scribble_of_an_image, read_scribble, scribble_beside, scribble_owner

__all__ = ["IMAGE_EXTENSIONS", "ImageFiles", "ImageFolder", "unique_stems"]


def path_to_id(rel: Path) -> str:
    """Turn a path relative to the root into a flat id usable as a file name.

    >>> path_to_id(Path("trip/day1/IMG_01.JPG"))
    'trip__day1__IMG_01'
    """
    return rel.with_suffix("").as_posix().replace("/", "__")


def unique_stems(paths: Sequence[Path]) -> list[str]:
    """Ids from file names, suffixed ``-2``, ``-3``… where two inputs share a name.

    >>> unique_stems([Path("a/x.png"), Path("b/x.jpg"), Path("y.png")])
    ['x', 'x-2', 'y']
    """
    seen: dict[str, int] = {}
    stems = []
    for path in paths:
        seen[path.stem] = seen.get(path.stem, 0) + 1
        stems.append(path.stem if seen[path.stem] == 1 else f"{path.stem}-{seen[path.stem]}")
    return stems


class ImageFiles(SegmentationDataset):
    """Image files given one by one (``dynaseg segment``'s inputs), in the order given.

    The id of a file is its name without the extension, made unique (:func:`unique_stems`);
    `gt` is empty (K = 0) and `size` is the original size. An image with a scribble
    (``<stem>_scribble.png`` beside it, or one named in ``scribbles``) carries it; such scribble
    files among the paths are not images of their own.

    Args:
        paths: the image files.
        max_side: Downscale the model input so its long side is at most this; outputs still
            come back at the original size.
        scribbles: image path → its scribble file, for scribbles not beside their image.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        max_side: int | None = None,
        scribbles: dict[Path, Path] | None = None,
    ) -> None:
        super().__init__(".")
        check_max_side(max_side)
        self.max_side = max_side
        self.scribbles = {Path(k): Path(v) for k, v in (scribbles or {}).items()}
        files = [Path(path) for path in paths]
        inputs = set(files)
        files = [path for path in files if not is_scribble_of_an_image(path, inputs)]
        self.paths: dict[str, Path] = dict(zip(unique_stems(files), files, strict=True))
        self.ids = list(self.paths)

    def load(self, item_id: str) -> Sample:
        """Read one image (and its scribble); the evaluation size is its original size."""
        path = self.paths[item_id]
        image = read_image(path)
        size = image.shape[:2]
        scribble_path = self.scribbles.get(path) or scribble_beside(path)
        scribble = None
        if scribble_path is not None:
            scribble = (read_scribble(scribble_path, size), scribble_path)
        return make_sample(item_id, image, [], size, path, self.max_side, scribble)


class ImageFolder(ImageFiles):
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
        super().__init__([], max_side)
        check_limit(limit)
        self.root = Path(root).expanduser()
        self.limit = limit
        self.recursive = recursive
        expected = "image files (jpg, png, tif, gif, … any format Pillow reads)" + (
            " in it or its sub-folders" if recursive else ""
        )
        require_dirs("ImageFolder", self.root, expected, [])
        for path in self.root.rglob("*") if recursive else self.root.iterdir():
            rel = path.relative_to(self.root)
            if any(part.startswith(".") for part in rel.parts):
                continue
            if not is_image_file(path) or not path.is_file():
                continue
            if path.name.endswith(SCRIBBLE_SUFFIX) and scribble_owner(path):
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
