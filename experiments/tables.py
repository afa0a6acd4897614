"""Pooling per-image BSDS500 scores into table rows, and the paper's numbers to set beside them.

Shared by ``table1.py`` and ``iterations_study.py``. Best IoU is pooled over GT segments
(each image's score weighted by its number of GT segments, docs/method.md §3a), so a subset's
row is recomputed exactly from ``per_image.csv``; the region measures and the segment count are
means over images, except "covering", pooled as the BSDS500 benchmark pools it (weighted by each
image's annotated pixels, all its annotations together); "cov./image" is its mean over images.
"""

from __future__ import annotations

import argparse
import csv
import shlex
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from dynaseg.outputs import atomic_write, write_csv

VARIANTS = ("all", "fine", "coarse")
REGIONS = ("covering", "pri", "voi")
HEADER = (
    "All",
    "Fine",
    "Coarse",
    "Mean",
    "segments / image",
    "covering",
    "cov./image",
    "PRI",
    "VoI",
)

PAPER_BSD500: dict[str, tuple[str, tuple[float, float, float, float]]] = {
    "kmeans": ("k-means", (0.240, 0.221, 0.265, 0.242)),
    "felzenszwalb": ("graph-based (Felzenszwalb)", (0.313, 0.295, 0.325, 0.311)),
    "fixed": ("Kim et al., fixed μ = 5", (0.305, 0.259, 0.374, 0.313)),
    "scf": ("DynaSeg SCF (CNN)", (0.330, 0.290, 0.407, 0.342)),
    "fsf": ("DynaSeg FSF (CNN)", (0.349, 0.307, 0.420, 0.359)),
}
"""Table 1 of the paper (BSDS500 test split; All, Fine, Coarse, Mean), keyed by method."""


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a ``per_image.csv``."""
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def pool(rows: Sequence[Mapping[str, object]], metric: str = "bsd500") -> dict[str, float]:
    """One table row from per-image rows: pooled best IoU, mean segments and region measures.

    >>> rows = [{"bsd500/all": 0.5, "bsd500/n_all": 3}, {"bsd500/all": 0.1, "bsd500/n_all": 1}]
    >>> round(pool(rows)["all"], 3)
    0.4
    """
    if not rows:
        raise ValueError("no images to pool")
    out: dict[str, float] = {}
    for variant in VARIANTS:
        key, count = f"{metric}/{variant}", f"{metric}/n_{variant}"
        if key not in rows[0]:
            continue
        weights = [float(row[count]) for row in rows]
        total = sum(weights)
        out[variant] = sum(float(row[key]) * w for row, w in zip(rows, weights, strict=True))
        out[variant] /= total
    if all(variant in out for variant in VARIANTS):
        out["mean"] = sum(out[variant] for variant in VARIANTS) / len(VARIANTS)
    for key, name in ((f"{metric}/segments_per_image", "segments"),) + tuple(
        (f"{metric}_regions/{region}", region) for region in REGIONS
    ):
        if key in rows[0]:
            out[name] = sum(float(row[key]) for row in rows) / len(rows)
    pooled, pixels = f"{metric}_regions/covering_pooled", f"{metric}_regions/n_annotation_pixels"
    if pooled in rows[0]:
        weights = [float(row[pixels]) for row in rows]
        covered = sum(float(row[pooled]) * w for row, w in zip(rows, weights, strict=True))
        out["covering_pooled"] = covered / sum(weights)
    return out


def cells(scores: Mapping[str, float]) -> list[str]:
    """The cells of :data:`HEADER` for one pooled row (blank where a measure is missing)."""
    keys = ("all", "fine", "coarse", "mean", "segments", "covering_pooled", *REGIONS)
    out = []
    for key in keys:
        value = scores.get(key)
        if value is None:
            out.append("–")
        elif key == "segments":
            out.append(f"{value:,.0f}")
        else:
            out.append(f"{value:.3f}")
    return out


def paper_cells(method: str) -> list[str] | None:
    """The paper's Table 1 cells for a method (None for a method the paper does not list)."""
    if method not in PAPER_BSD500:
        return None
    return [f"{value:.3f}" for value in PAPER_BSD500[method][1]] + ["–"] * 5


def markdown(first: Sequence[str], header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A markdown table whose leading columns are ``first`` and then ``header``."""
    columns = [*first, *header]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def dataset_arguments(parser: argparse.ArgumentParser, split: str = "val") -> None:
    """The ``--root`` and ``--split`` options every BSDS500 script takes."""
    parser.add_argument("--root", type=Path, required=True, help="BSDS500 data folder")
    parser.add_argument("--split", default=split, choices=("train", "val", "test"))


def study_arguments(parser: argparse.ArgumentParser) -> None:
    """``--root``/``--split`` (train by default) and the image subset options of the studies."""
    dataset_arguments(parser, "train")
    parser.add_argument("--limit", type=int, help="first N images of the split")
    parser.add_argument("--max-side", type=int, help="long side of the fitted input (none: native)")
    parser.add_argument("--out", type=Path, required=True, help="output path without suffix")


def parse_keeping_argv(
    parser: argparse.ArgumentParser, argv: list[str] | None
) -> argparse.Namespace:
    """Parse, and keep the arguments as given (``args.argv``) to print the command in a report."""
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def write_study(
    args: argparse.Namespace, script: str, rows: list[dict[str, object]], text: list[str]
) -> None:
    """A study's per-image rows to ``<out>.csv``, and its report (lines, then the command that
    regenerates it) to ``<out>.md``."""
    out: Path = args.out
    text = [*text, "    " + shlex.join(["python", f"experiments/{script}", *args.argv]), ""]
    write_csv(out.with_suffix(".csv"), rows, list(rows[0]))
    report = "\n".join(text).encode()
    atomic_write(out.with_suffix(".md"), lambda handle: handle.write(report))
    print(f"wrote {out.with_suffix('.md')}")  # noqa: T201 - the user's pointer to the result
