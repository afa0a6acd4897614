"""The output contract shared by ``dynaseg segment`` and the experiment framework.

Per image: the label map at the input's size (8-bit PNG when there are at most 256 labels, else
16-bit), its overlay (segments blended over the image the fit saw, boundaries drawn) and a JSON
record (facts, scores, settings), plus a colour picture (``dynaseg segment``) or the report's
thumbnails (run directories). :class:`Layout` says where each goes; :func:`write_image` writes
them. Every file is written atomically: to a temporary file in the same folder, flushed to disk,
then renamed, so a killed run never leaves a half-written file under a final name; the record is
written last, so an image whose record exists is complete.
"""

from __future__ import annotations

import colorsys
import csv
import io
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image

from dynaseg.images import resize_labels
from dynaseg.losses import UNMARKED
from dynaseg.scribble import draw_strokes, scribble_summary


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


@dataclass(frozen=True)
class Layout:
    """Where each file of one image goes: the only place the output names are spelled.

    ``kinds`` maps a kind of file to its path under the output folder, ``{id}`` standing for the
    image's id. A layout writes only the kinds it names; the record always comes last.
    """

    name: str
    kinds: dict[str, str]

    def path(self, root: Path, kind: str, item_id: str) -> Path:
        """The file of this kind for one image."""
        return Path(root) / self.kinds[kind].format(id=item_id)

    def folders(self, root: Path) -> list[Path]:
        """The folders the layout writes into (the root included)."""
        found = {Path(root)} | {self.path(root, kind, "x").parent for kind in self.kinds}
        return sorted(found)

    def records(self, root: Path) -> list[Path]:
        """The records on disk, sorted: one per finished image."""
        pattern = self.kinds["record"].format(id="*")
        return sorted(path for path in Path(root).glob(pattern) if self.item_id(path) is not None)

    def item_id(self, record: Path) -> str | None:
        """The image id of a record path, if the other files of that layout can exist for it."""
        prefix, suffix = self.kinds["record"].rsplit("/", 1)[-1].split("{id}")
        name = record.name
        if not (name.startswith(prefix) and name.endswith(suffix)) or name.startswith("."):
            return None
        return name[len(prefix) : len(name) - len(suffix)]

    def holds(self, root: Path) -> bool:
        """Whether a folder holds at least one image written in this layout."""
        return any(
            self.path(root, "labels", item).is_file()
            for item in filter(None, map(self.item_id, self.records(root)))
        )


FLAT = Layout(
    "flat",
    {
        "labels": "{id}_labels.png",
        "color": "{id}_color.png",
        "overlay": "{id}_overlay.png",
        "record": "{id}.json",
    },
)
"""``dynaseg segment --out DIR``: four files per image side by side in one folder."""
RUN = Layout(
    "run",
    {
        "labels": "predictions/{id}.png",
        "fitted": "fitted/{id}.png",
        "overlay": "overlays/{id}.png",
        "thumbnail": "thumbnails/{id}.jpg",
        "ground_truth": "ground_truth/{id}.png",
        "record": "records/{id}.json",
    },
)
"""A run directory of ``python -m dynaseg.run``: one folder per kind, report pictures included.
``fitted/`` keeps the fit's own labels where a segments step changed them, so another step can be
scored on the same fits without fitting again (``experiments/segments_study.py``)."""

THUMB_SIDE = 160


def save_thumbnail(path: Path, image: np.ndarray, labels: bool = False) -> None:
    """A small copy (long side :data:`THUMB_SIDE`) for the report, atomically: JPEG for a
    photo, PNG with nearest-neighbour sampling for a colour-coded label picture."""
    thumb = Image.fromarray(image)
    thumb.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.NEAREST if labels else None)
    kind = {"format": "PNG"} if labels else {"format": "JPEG", "quality": 85}
    atomic_write(path, lambda handle: thumb.save(handle, **kind))


def ground_truth_picture(gt: np.ndarray) -> np.ndarray:
    """The first annotation of a ``(K, H, W)`` ground truth as colours (255 = unlabelled: grey)."""
    first = np.asarray(gt[0]).astype(np.int64)
    picture = colorize(np.where(first == 255, 0, first))
    picture[first == 255] = 128
    return picture


def class_colours(labels: np.ndarray, scribble: np.ndarray) -> np.ndarray:
    """Per scribble class, the overlay's colour of the label the class ended with."""
    colours = palette(int(labels.max(initial=0)) + 1)
    per_class = np.zeros((int(scribble[scribble != UNMARKED].max()) + 1, 3), np.uint8)
    for value, label in scribble_summary(labels, scribble)["labels"].items():
        per_class[int(value)] = colours[label]
    return per_class


def fsync_dir(path: Path) -> None:
    """Make the renames into a folder durable, so a power loss cannot undo them (POSIX only)."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_image(
    root: Path,
    layout: Layout,
    item_id: str,
    image: np.ndarray,
    labels: np.ndarray,
    record: dict[str, Any],
    gt: np.ndarray | None = None,
    with_overlay: bool = True,
    scribble: np.ndarray | None = None,
    fitted: np.ndarray | None = None,
) -> None:
    """Write one image's files in ``layout``; the record comes last and marks the image done.

    Args:
        image: ``(h, w, 3)`` uint8, the image the fit saw (the overlay is drawn over it).
        labels: ``(H, W)`` labels at the output size (``h × w`` or larger).
        record: facts and scores for the JSON.
        gt: ``(K, H, W)`` ground truth for the report's picture (None or K = 0: none).
        with_overlay: also write the overlay (runs keep it for their first images only).
        scribble: ``(h, w)`` strokes the fit followed, drawn on the overlay in the colour of the
            label each class ended with.
        fitted: ``(h, w)`` the fit's labels before the segments step (None: the step changed
            nothing, or there was none); written where the layout has a place for them.
    """
    labels = label_image(labels)
    save_png(layout.path(root, "labels", item_id), labels)
    if fitted is not None and "fitted" in layout.kinds:
        save_png(layout.path(root, "fitted", item_id), label_image(fitted))
    if "color" in layout.kinds:
        save_png(layout.path(root, "color", item_id), colorize(labels))
    if with_overlay:
        small = resize_labels(labels, image.shape[:2])
        picture = overlay(image, small)
        if scribble is not None:
            picture = draw_strokes(picture, scribble, class_colours(small, scribble))
        save_png(layout.path(root, "overlay", item_id), picture)
    if "thumbnail" in layout.kinds:
        save_thumbnail(layout.path(root, "thumbnail", item_id), image)
    if "ground_truth" in layout.kinds and gt is not None and len(gt):
        picture = ground_truth_picture(gt)
        save_thumbnail(layout.path(root, "ground_truth", item_id), picture, labels=True)
    fsync_dir(layout.path(root, "labels", item_id).parent)  # never a record before its labels
    save_json(layout.path(root, "record", item_id), record)


def read_done(
    root: Path, layout: Layout, item_id: str, size: tuple[int, int], settings: dict[str, Any]
) -> tuple[np.ndarray, dict[str, Any]] | str:
    """The labels and record of an image finished earlier, or why it must be segmented again.

    The one resume rule of both entry points: an image is done when its record exists, its
    label map reads back at the output size, and the record was made with the same settings.
    """
    record_path = layout.path(root, "record", item_id)
    if not record_path.is_file():
        return "not done"
    try:
        record = json.loads(record_path.read_text())
        with Image.open(layout.path(root, "labels", item_id)) as picture:
            labels = np.asarray(picture).copy()
    except (OSError, ValueError) as error:
        return f"saved result unreadable ({error})"
    if labels.shape != tuple(size):
        return f"saved labels are {labels.shape}, not {tuple(size)}"
    if "settings" in record and record["settings"] != settings:
        return "saved with other settings"
    return labels, record
