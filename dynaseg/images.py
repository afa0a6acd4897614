"""Reading the images users actually have, and finding them on disk.

Practitioners bring JPEGs from phones (EXIF-rotated), 16-bit microscopy TIFFs, greyscale scans,
palette PNGs and RGBA screenshots. Everything is turned into one thing the engine understands:
an ``uint8`` RGB array of shape ``(H, W, 3)``. Anything else fails with one line that names the
file and the reason, so a batch can report it and go on.
"""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError


def _readable_extensions() -> frozenset[str]:
    """Every file extension Pillow can decode (its stub formats, which only identify, aside)."""
    Image.init()
    readable = set()
    for extension, image_format in Image.registered_extensions().items():
        if image_format not in Image.OPEN:
            continue  # a format Pillow writes but cannot read
        opener = Image.OPEN[image_format][0]
        if not (isinstance(opener, type) and issubclass(opener, ImageFile.StubImageFile)):
            readable.add(extension.lower())
    return frozenset(readable)


IMAGE_EXTENSIONS = _readable_extensions()
"""What a folder is searched for: the same files that work as an explicit file argument."""
DEFAULT_MAX_PIXELS = 64_000_000
"""Refuse images above this many pixels before decoding them (decompression bombs, and images
whose T-iteration fit would exhaust memory); ``max_side`` is the way to process them anyway."""


class ImageReadError(Exception):
    """An input that is not a usable image; the message is ``"<path>: <reason>"``."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale integer or float data of any depth to 0..255, as a viewer would show it."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        top = 65535 if array.max(initial=0) > 255 else 255
        return (array.astype(np.float64) * (255.0 / top)).round().clip(0, 255).astype(np.uint8)
    finite = np.nan_to_num(array.astype(np.float64))
    lo, hi = float(finite.min(initial=0.0)), float(finite.max(initial=0.0))
    if lo >= 0.0 and hi <= 1.0:
        return (finite * 255.0).round().astype(np.uint8)
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return ((finite - lo) * scale).round().astype(np.uint8)


def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    """Convert any PIL mode to RGB ``uint8``; 16-bit and float data are rescaled, not clipped."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        grey = _to_uint8(np.asarray(image))
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.array(image, dtype=np.uint8)


def load_image(
    path: str | os.PathLike,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    exif_transpose: bool = True,
) -> np.ndarray:
    """Read an image file as an RGB ``uint8`` array of shape ``(H, W, 3)``.

    Args:
        path: the file.
        max_pixels: refuse larger images before decoding them (``None``: no limit).
        exif_transpose: turn the image upright as its EXIF orientation says. Annotated datasets
            switch this off: their label maps are drawn on the stored pixel grid.

    Raises:
        ImageReadError: the file is missing, empty, not an image, truncated, too large or
            degenerate.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "no such file")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if max_pixels is not None and width * height > max_pixels:
                    raise ImageReadError(
                        path,
                        f"{width}x{height} = {width * height:,} pixels exceeds the limit of "
                        f"{max_pixels:,}; downscale it (max_side) or raise the pixel limit",
                    )
                image.load()
                if exif_transpose:
                    image = ImageOps.exif_transpose(image)
                rgb = _pil_to_rgb(image)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(path, "not a readable image (unknown or corrupt format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageReadError(path, f"refused as a decompression bomb ({error})") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise ImageReadError(path, f"cannot decode the image ({error})") from None
    if rgb.shape[0] < 2 or rgb.shape[1] < 2:
        raise ImageReadError(path, f"image of {rgb.shape[1]}x{rgb.shape[0]} pixels is too small")
    return rgb


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label map to ``size = (H, W)`` (pixel centres aligned).

    >>> resize_labels(np.array([[0, 1], [2, 3]]), (4, 4)).tolist()[1]
    [0, 0, 1, 1]
    """
    height, width = labels.shape
    rows = ((np.arange(size[0]) + 0.5) * height / size[0]).astype(np.int64).clip(0, height - 1)
    cols = ((np.arange(size[1]) + 0.5) * width / size[1]).astype(np.int64).clip(0, width - 1)
    return labels[np.ix_(rows, cols)]


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """An ``(H, W, 3)`` uint8 RGB array as a float32 ``(3, H, W)`` tensor in [0, 1].

    >>> image_to_tensor(np.full((2, 3, 3), 255, np.uint8)).shape
    torch.Size([3, 2, 3])
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an H×W×3 uint8 image, got {image.shape} {image.dtype}")
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)


def is_image_file(path: Path) -> bool:
    """Whether a path looks like an image by its extension.

    >>> is_image_file(Path("a.GIF")), is_image_file(Path("notes.txt"))
    (True, False)
    """
    return path.suffix.lower() in IMAGE_EXTENSIONS


def collect_inputs(specs: Iterable[str]) -> tuple[list[Path], list[str]]:
    """Expand files, folders (their images, not recursive) and glob patterns into image paths.

    Returns:
        The image paths in a stable order without repeats, and one message per spec that matched
        nothing, so the caller can report it rather than silently segmenting fewer images.
    """
    found: dict[Path, None] = {}
    unmatched: list[str] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            matches = sorted(p for p in path.iterdir() if p.is_file() and is_image_file(p))
        elif path.exists():
            matches = [path]
        else:
            matches = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        if not matches:
            unmatched.append(f"{spec}: no such file, or no images matched")
        found.update(dict.fromkeys(matches))
    return list(found), unmatched
