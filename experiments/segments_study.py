"""From fitted labels to segments: how splitting into connected pieces and merging specks moves
every BSDS500 measure, on label maps a run already wrote (no refitting).

    python experiments/segments_study.py --root ../shared/data/BSDS500/data --split train \
        --run outputs/tune/train20_replicate_T300 --min-size 1 20 50 100 200 400 800 \
        --out experiments/results/segments_train20

Reads the fit's labels of a run directory (the RUN layout: ``fitted/<id>.png`` where the run
applied a segments step, else ``predictions/<id>.png``), applies
:class:`dynaseg.segments.Segments` for every setting of the grid (vote, cut, connected, colour
space, linkage, colour and Ward thresholds, min size), scores the
result at the native size with the same metrics as a run, and writes ``<out>.md`` (pooled rows)
and ``<out>.csv`` (per image). The step works on the image the fit saw, as a run's does: give a
reduced fit's ``--max-side``. The sizes are in pixels at the size the fit ran (native size for a
native fit).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.segmentation import felzenszwalb
from tables import HEADER, cells, markdown, parse_keeping_argv, pool, study_arguments, write_study

from dynaseg.data import BSDS500
from dynaseg.images import resize_labels
from dynaseg.metrics import RegionMeasures, SegmentBestIoU
from dynaseg.outputs import RUN
from dynaseg.segments import COLOUR_SPACES, LINKAGES, Segments, as_rgb, cut_by, vote_in


def score(labels: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """One image's per-image row, keyed as a run's ``per_image.csv``."""
    row: dict[str, float] = {}
    for prefix, metric in (
        ("bsd500", SegmentBestIoU(connectivity=4)),
        ("bsd500_regions", RegionMeasures()),
    ):
        for key, value in metric(labels, list(gt)).items():
            row[f"{prefix}/{key}"] = float(value)
    return row


def fitted_path(run: Path, item_id: str) -> Path | None:
    """A run's labels of one image as fitted: ``fitted/`` where its segments step changed them,
    else ``predictions/`` (None: the run has no labels for it)."""
    for kind in ("fitted", "labels"):
        path = RUN.path(run, kind, item_id)
        if path.is_file():
            return path
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    study_arguments(parser)
    parser.add_argument("--run", type=Path, required=True, help="run directory (RUN layout)")
    parser.add_argument("--min-size", type=int, nargs="+", default=[1, 50, 200])
    parser.add_argument(
        "--colour-threshold", type=float, nargs="+", default=[0], help="0: no colour merge"
    )
    for flag, what in (
        ("--vote-scale", "superpixels to vote in first"),
        ("--cut-scale", "regions that cut the labels"),
    ):
        parser.add_argument(
            flag,
            type=float,
            nargs="+",
            default=[0],
            help=f"Felzenszwalb scales (σ 0.5, min size 20) of {what}; 0: none",
        )
    parser.add_argument(
        "--colour-space", nargs="+", default=["rgb"], choices=COLOUR_SPACES, help="of the merge"
    )
    parser.add_argument(
        "--linkage", nargs="+", default=["single"], choices=LINKAGES, help="of the merge"
    )
    parser.add_argument(
        "--ward-threshold",
        type=float,
        nargs="+",
        default=[0],
        help="Ward merge after the colour merge (colour units × √pixels); 0: none",
    )
    args = parse_keeping_argv(parser, argv)
    dataset = BSDS500(args.root, args.split, limit=args.limit, max_side=args.max_side)
    grid = list(
        itertools.product(
            args.vote_scale,
            args.cut_scale,
            (False, True),
            args.colour_space,
            args.linkage,
            args.colour_threshold,
            args.ward_threshold,
            args.min_size,
        )
    )
    rows: list[dict[str, object]] = []
    for item_id in dataset.ids:
        path = fitted_path(args.run, item_id)
        if path is None:
            continue
        fitted = np.asarray(Image.open(path)).astype(np.int64)
        sample = dataset.load(item_id)
        gt, image = sample["gt"].numpy(), as_rgb(sample["image"])
        if fitted.shape != image.shape[:2]:
            sys.exit(f"{path}: labels are {fitted.shape}, the fitted image {image.shape[:2]}")
        fh = {
            scale: felzenszwalb(image, scale=scale, sigma=0.5, min_size=20)
            for scale in {*args.vote_scale, *args.cut_scale} - {0}
        }
        voted = {
            scale: vote_in(fitted, fh[scale]) if scale else fitted for scale in args.vote_scale
        }
        cut = {
            (vote, scale): cut_by(voted[vote], fh[scale]) if scale else voted[vote]
            for vote, scale in itertools.product(args.vote_scale, args.cut_scale)
        }
        for scale, cut_scale, connected, space, linkage, colour, ward, min_size in grid:
            step = Segments(None, connected, colour, min_size, space, linkage, ward)
            row = {"id": item_id, "vote": scale, "cut": cut_scale, "connected": connected}
            row |= {"space": space, "linkage": linkage, "colour": colour, "ward": ward}
            row["min_size"] = min_size
            segments = resize_labels(step(cut[scale, cut_scale], image), gt.shape[1:])
            rows.append(row | score(segments, gt))
        print(f"{item_id} done", file=sys.stderr)  # noqa: T201 - progress
    if not rows:
        print(f"no label maps under {args.run}", file=sys.stderr)  # noqa: T201
        return 1
    table = []
    for setting in grid:
        keys = ("vote", "cut", "connected", "space", "linkage", "colour", "ward", "min_size")
        group = [r for r in rows if tuple(r[k] for k in keys) == setting]
        scale, cut_scale, connected, space, linkage, colour, ward, min_size = setting
        vote = f"FH {scale:g}" if scale else "–"
        cut_cell = f"FH {cut_scale:g}" if cut_scale else "–"
        merge = f"{space.upper()} {colour:g}, {linkage}" if colour else "none"
        ward_cell = f"{space.upper()} {ward:g}" if ward else "none"
        first = [vote, cut_cell, "yes" if connected else "no", merge, ward_cell, str(min_size)]
        table.append([*first, *cells(pool(group))])
    n_images = len(rows) // len(grid)
    text = [
        f"# Segments from fitted labels: {args.run.name}, BSDS500 {args.split}, {n_images} images",
        "",
        "Each row turns the run's label maps into segments (a majority vote of the labels in "
        "Felzenszwalb superpixels of the given scale first, or not; then each label *cut* where "
        "the boundaries of coarser Felzenszwalb regions cross it, or not; split into 4-connected "
        "pieces or not; neighbours whose mean colours lie closer than *colour merge* (RGB "
        "0–255 or CIELAB ΔE; *single* linkage merges chains of near neighbours at once, *mean* "
        "merges the closest pair first and compares merged means) merged; then neighbours "
        "whose Ward distance (colour distance × √(n₁n₂/(n₁+n₂)), so small pieces merge "
        "readily and large ones only when alike) lies under *Ward merge* merged; pieces "
        "under *min size* pixels merged into the nearest larger one) and scores them "
        "at the native size. Best IoU splits into pieces anyway, so *connected* moves only the "
        "region measures. Per-image rows: the `.csv` beside this file.",
        "",
        markdown(
            ["vote", "cut", "connected", "colour merge", "Ward merge", "min size"], HEADER, table
        ),
    ]
    write_study(args, Path(__file__).name, rows, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
