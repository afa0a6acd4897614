"""Several seeds in consensus (#13): does a consensus of fits with other seeds beat one fit?

    python experiments/seeds_study.py --root ../shared/data/BSDS500/data --split train \
        --limit 7 --runs R0 R1 R2 --out experiments/results/seeds_consensus_train7

Each ``--runs`` folder holds the default's fits of the same images with one seed (the RUN
layout, e.g. from ``fit_study.py --mode none --seed S``). Every image's fits go through the
default segments step (conf/segment.yaml, or ``--set`` overrides of it) and are scored at the
native size: each seed alone, and two consensus rules that need no ground truth:

- *medoid*: the seed whose segments lie closest to the others' (least summed variation of
  information), so one fit that went wrong is outvoted rather than averaged in;
- *majority boundaries*: two neighbouring pixels stay apart where most fits part them; the
  connected pieces that leaves go through the step as a fit's labels would.

Writes ``<out>.md`` (pooled rows) and ``<out>.csv`` (per image).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from hydra.utils import instantiate
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from segments_study import fitted_path, score
from skimage.metrics import variation_of_information
from tables import HEADER, cells, markdown, parse_keeping_argv, pool, study_arguments, write_study

from dynaseg.config import compose_config
from dynaseg.data import BSDS500
from dynaseg.images import resize_labels
from dynaseg.segments import as_rgb


def majority_partition(label_maps: list[np.ndarray]) -> np.ndarray:
    """The 4-connected pieces left when neighbouring pixels are parted where more than half of
    the maps part them (ids 0..K−1).

    Example:
        >>> a = np.array([[0, 0, 1, 1]]); b = np.array([[0, 1, 1, 1]])
        >>> majority_partition([a, a, b]).tolist()
        [[0, 0, 1, 1]]
    """
    maps = np.stack([np.asarray(m) for m in label_maps])
    height, width = maps.shape[1:]
    index = np.arange(height * width).reshape(height, width)
    sources, targets = [], []
    for axis in (1, 2):
        parted = np.diff(maps, axis=axis) != 0
        joined = parted.sum(axis=0) * 2 <= len(maps)
        low = index[:, :-1] if axis == 2 else index[:-1]
        high = index[:, 1:] if axis == 2 else index[1:]
        sources.append(low[joined])
        targets.append(high[joined])
    source, target = np.concatenate(sources), np.concatenate(targets)
    graph = coo_matrix((np.ones(source.size), (source, target)), shape=(index.size,) * 2)
    return connected_components(graph, directed=False)[1].reshape(height, width)


def medoid(segmentations: list[np.ndarray]) -> int:
    """The index of the segmentation with the least summed variation of information to the
    others (ties: the first).

    Example:
        >>> a = np.array([[0, 0, 1, 1]]); odd = np.array([[0, 1, 2, 3]])
        >>> medoid([odd, a, a])
        1
    """
    totals = [
        sum(float(np.sum(variation_of_information(s, t))) for t in segmentations)
        for s in segmentations
    ]
    return int(np.argmin(totals))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    study_arguments(parser)
    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="one per seed")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override of the step"
    )
    args = parse_keeping_argv(parser, argv)
    if len(args.runs) < 3:
        parser.error("a consensus needs at least three runs")
    step = instantiate(compose_config("segment", args.set).segments)
    dataset = BSDS500(args.root, args.split, limit=args.limit, max_side=args.max_side)
    rows: list[dict[str, object]] = []
    for item_id in dataset.ids:
        paths = [fitted_path(run, item_id) for run in args.runs]
        if None in paths:
            continue
        sample = dataset.load(item_id)
        gt, image = sample["gt"].numpy(), as_rgb(sample["image"])
        fits = [np.asarray(Image.open(path)).astype(np.int64) for path in paths]
        stepped = [step(fit, image) for fit in fits]
        chosen = medoid(stepped)
        candidates = {f"seed of {run.name}": s for run, s in zip(args.runs, stepped, strict=True)}
        candidates["medoid"] = stepped[chosen]
        candidates["majority boundaries"] = step(majority_partition(fits), image)
        for name, segments in candidates.items():
            row = {"id": item_id, "rule": name, "medoid": args.runs[chosen].name}
            rows.append(row | score(resize_labels(segments, gt.shape[1:]), gt))
        print(f"{item_id}: medoid {args.runs[chosen].name}", file=sys.stderr)  # noqa: T201
    if not rows:
        print("no image has a fit in every run", file=sys.stderr)  # noqa: T201
        return 1
    rules = list(dict.fromkeys(str(row["rule"]) for row in rows))
    table = [[rule, *cells(pool([r for r in rows if r["rule"] == rule]))] for rule in rules]
    n_images = len(rows) // len(rules)
    text = [
        f"# Seeds in consensus: BSDS500 {args.split}, {n_images} images, {len(args.runs)} seeds",
        "",
        "Each seed's fits through the default segments step, and two consensus rules (the "
        "medoid seed by variation of information; majority boundaries), scored at the native "
        "size. Per-image rows, with the medoid's seed: the `.csv` beside this file.",
        "",
        markdown(["rule"], HEADER, table),
    ]
    write_study(args, Path(__file__).name, rows, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
