"""The output contract shared by ``dynaseg segment`` and the experiment framework.

For each image: ``<stem>_labels.png`` (integer label map at the input's size; 8-bit when there are
at most 256 labels, else 16-bit), ``<stem>_color.png``, ``<stem>_overlay.png`` (segments blended
over the image, boundaries drawn) and ``<stem>.json``. Every file is written atomically: to a
temporary file in the same folder, flushed to disk, then renamed, so a killed run never leaves a
half-written file under a final name.
"""

from __future__ import annotations

import colorsys
import csv
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image

OUTPUT_SUFFIXES = ("_labels.png", "_color.png", "_overlay.png", ".json")


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write a file through ``write(handle)`` so that it appears complete or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_png(path: Path, array: np.ndarray) -> None:
    """Atomically save a uint8/uint16 array (H×W or H×W×3) as PNG."""
    atomic_write(path, lambda handle: Image.fromarray(array).save(handle, format="PNG"))


def save_json(path: Path, record: dict[str, Any]) -> None:
    """Atomically save a JSON record."""
    text = json.dumps(record, indent=2, sort_keys=False) + "\n"
    atomic_write(path, lambda handle: handle.write(text.encode()))


def write_csv(path: Path, rows: list[dict[str, Any]], fields: list[str]) -> None:
    """Atomically write rows as CSV with these columns (missing values left empty)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, lambda handle: handle.write(buffer.getvalue().encode()))


FAILURE_FIELDS = ["id", "error"]
"""The columns of ``failures.csv``: the input and one line naming the file and the cause."""


def label_image(labels: np.ndarray) -> np.ndarray:
    """Labels as the narrowest unsigned type PNG can hold (8 or 16 bit)."""
    top = int(labels.max(initial=0))
    if labels.min(initial=0) < 0 or top > 65535:
        raise ValueError(f"labels must lie in 0..65535, got {labels.min()}..{top}")
    return labels.astype(np.uint8 if top < 256 else np.uint16)


def palette(n: int) -> np.ndarray:
    """``n`` distinct, stable colours: golden-ratio hues with alternating saturation and value."""
    colours = [
        colorsys.hsv_to_rgb(
            (i * 0.618033988749895) % 1.0, 0.55 + 0.3 * (i % 3 != 0), 0.95 - 0.25 * (i % 2)
        )
        for i in range(n)
    ]
    return (np.array(colours).reshape(n, 3) * 255).round().astype(np.uint8)


def boundaries(labels: np.ndarray) -> np.ndarray:
    """Pixels whose right or lower neighbour has another label."""
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return edge


def colorize(labels: np.ndarray) -> np.ndarray:
    """An RGB picture of a label map."""
    return palette(int(labels.max(initial=0)) + 1)[labels]


def overlay(image: np.ndarray, labels: np.ndarray, opacity: float = 0.45) -> np.ndarray:
    """The segments blended over the image, with their boundaries in white."""
    blend = (1 - opacity) * image.astype(np.float32) + opacity * colorize(labels)
    blend = blend.round().astype(np.uint8)
    blend[boundaries(labels)] = 255
    return blend


def output_paths(out_dir: Path, stem: str) -> list[Path]:
    """The files one image produces, in the order they are written (the JSON last)."""
    return [out_dir / f"{stem}{suffix}" for suffix in OUTPUT_SUFFIXES]


def write_outputs(
    out_dir: Path, stem: str, image: np.ndarray, labels: np.ndarray, record: dict[str, Any]
) -> list[Path]:
    """Write the four outputs of one image; the JSON comes last and marks the set complete.

    Args:
        out_dir: destination folder (created if needed).
        stem: file-name stem, usually the input's.
        image: ``(H, W, 3)`` uint8 input at its original size.
        labels: ``(H, W)`` integer labels at the same size.
        record: facts and settings for the JSON.
    """
    if labels.shape != image.shape[:2]:
        raise ValueError(f"labels {labels.shape} and image {image.shape[:2]} differ in size")
    paths = output_paths(out_dir, stem)
    save_png(paths[0], label_image(labels))
    save_png(paths[1], colorize(labels))
    save_png(paths[2], overlay(image, labels))
    save_json(paths[3], record)
    return paths
