"""Scribbles: a few strokes per class that a fit must honour (Kim et al. 2020's scribble mode).

A scribble is a single-channel PNG over the image: 255 (:data:`UNMARKED`) where nothing is
marked, a class id (0…q−1) on the strokes. Next to an image ``photo.jpg`` it is
``photo_scribble.png``, found by itself; ``dynaseg segment IMAGE --scribble FILE`` names one.
The fit adds a cross-entropy term on the strokes and stops its q' threshold at the number of
classes (:meth:`dynaseg.engine.Segmenter.fit`); this module reads, checks and reports them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from dynaseg.engine import scribble_classes
from dynaseg.images import ImageReadError, resize_labels
from dynaseg.losses import UNMARKED

SUFFIX = "_scribble.png"


def scribble_beside(image: Path) -> Path | None:
    """``<stem>_scribble.png`` next to an image, if there is one."""
    path = image.with_name(image.stem + SUFFIX)
    return path if path.is_file() else None


def is_scribble_of_an_image(path: Path, images: set[Path]) -> bool:
    """Whether a file found among the inputs is the scribble of another input (not an image)."""
    owner = scribble_owner(path)
    return owner is not None and owner in images


def scribble_owner(path: Path) -> Path | None:
    """The image beside it that a ``<stem>_scribble.png`` belongs to, if there is one."""
    if not path.name.endswith(SUFFIX):
        return None
    stem = path.name[: -len(SUFFIX)]
    owners = sorted(
        other
        for other in path.parent.glob(f"{glob_escape(stem)}.*")
        if other != path and other.stem == stem
    )
    return owners[0] if owners else None


def glob_escape(text: str) -> str:
    """A file name as a literal glob pattern."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def read_scribble(path: Path, size: tuple[int, int]) -> np.ndarray:
    """A scribble as an ``(H, W)`` int64 array at the image's ``size``.

    Palette PNGs give their indices, greyscale PNGs their values; an RGB(A) PNG whose three
    channels are equal everywhere is read as that grey (what some paint programs save). A
    scribble of another size is resized with nearest neighbour when it has the image's aspect
    ratio (to within a pixel).

    Raises:
        ImageReadError: unreadable, colour, another aspect ratio, or no marked pixel; the
            message starts with the scribble's path.
    """
    try:
        with Image.open(path) as picture:
            picture.load()
            mode = picture.mode
            array = np.asarray(picture)
    except (OSError, ValueError, SyntaxError) as error:
        raise ImageReadError(path, f"cannot read the scribble ({error})") from None
    if mode in ("RGB", "RGBA"):
        rgb = array[..., :3]
        if not ((rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2])).all():
            raise ImageReadError(
                path,
                f"the scribble is a colour image (mode {mode}); save the strokes as one channel "
                "of class ids (greyscale or palette PNG, 255 = unmarked)",
            )
        array = rgb[..., 0]
    elif mode not in ("L", "P", "I", "I;16"):
        raise ImageReadError(path, f"the scribble must be a single-channel PNG, got mode {mode}")
    scribble = array.astype(np.int64)
    height, width = size
    if scribble.shape != (height, width):
        sh, sw = scribble.shape
        if abs(sh * width - sw * height) > max(height, width, sh, sw):
            raise ImageReadError(
                path,
                f"the scribble is {sw}x{sh} but the image is {width}x{height}; only a scribble "
                "of the image's aspect ratio is resized to it",
            )
        scribble = resize_labels(scribble, (height, width))
    if not scribble_classes(scribble):
        raise ImageReadError(path, f"the scribble marks no pixel (every value is {UNMARKED})")
    return scribble


def check_classes(path: Path, scribble: np.ndarray, n_clusters: int) -> str | None:
    """Why a scribble cannot guide a fit with ``q = n_clusters`` channels (None: it can)."""
    classes = scribble_classes(scribble)
    if max(classes) >= n_clusters:
        return (
            f"{path}: scribble class {max(classes)} is not below q = {n_clusters} (class ids "
            f"must lie in 0..{n_clusters - 1}; 255 marks no class)"
        )
    return None


def scribble_summary(labels: np.ndarray, scribble: np.ndarray) -> dict[str, object]:
    """Which label each scribble class ended with, and how many marked pixels carry it.

    >>> labels = np.array([[0, 0, 1], [0, 1, 1]])
    >>> scribble = np.array([[3, 255, 255], [255, 255, 7]])
    >>> scribble_summary(labels, scribble)
    {'labels': {'3': 0, '7': 1}, 'marked_pixels': 2, 'kept': 1.0}
    """
    mapping: dict[str, int] = {}
    kept = 0
    for value in scribble_classes(scribble):
        under = labels[scribble == value]
        label = int(np.bincount(under).argmax())
        mapping[str(value)] = label
        kept += int((under == label).sum())
    marked = int((scribble != UNMARKED).sum())
    return {"labels": mapping, "marked_pixels": marked, "kept": round(kept / marked, 6)}


def draw_strokes(picture: np.ndarray, scribble: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """The strokes drawn onto a picture in ``colours[class]``, each outlined in black."""
    out = picture.copy()
    marked = scribble != UNMARKED
    outline = np.zeros_like(marked)
    outline[1:] |= marked[:-1]
    outline[:-1] |= marked[1:]
    outline[:, 1:] |= marked[:, :-1]
    outline[:, :-1] |= marked[:, 1:]
    out[outline & ~marked] = 0
    out[marked] = colours[scribble[marked]]
    return out
