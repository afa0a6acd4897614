"""Per-image look at where the fitted methods fall short: clusters, segments, opt_nC and the GT.

    python experiments/shortfall.py --root ../shared/data/BSDS500/data --split val \
        --out experiments/results/table1_bsd500_val_per_image_analysis.md

    python experiments/shortfall.py --root ../shared/data/BSDS500/data --split val \
        --results experiments/results/table1_native --methods felzenszwalb fh_iou fsf default \
        --against default --out experiments/results/table1_native/per_image_analysis.md

Reads the per-image CSVs that ``table1.py`` wrote (``table1_bsd500_<split>_<method>_per_image.csv``)
and the ground truth, and writes one row per image that every method ran on: the number of
segments per human annotation, the silhouette estimate opt_nC, and for each method its final
clusters, its segments after the 4-connected split and its best IoU (All); then the summary
that the results file quotes (how often each fitted method loses to Felzenszwalb, collapses, or
under-segments against the annotators). With ``--against M``, a second part compares M, per
measure, with the best other row of every CSV found (the per-measure tuned baselines included):
on how many images it loses, by how much, and how that depends on how finely the annotators
segmented the image.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from tables import dataset_arguments, markdown, parse_keeping_argv, pool, read_rows

from dynaseg.data import BSDS500

RESULTS = Path(__file__).resolve().parent / "results"
FITTED = ("fixed", "scf", "fsf", "default")
ORDER = ("kmeans", "felzenszwalb", *FITTED[:3])
MEASURES = (
    ("best IoU (All)", "bsd500/all", "all", 1),
    ("covering", "bsd500_regions/covering_pooled", "covering_pooled", 1),
    ("PRI", "bsd500_regions/pri", "pri", 1),
    ("VoI", "bsd500_regions/voi", "voi", -1),
)
"""Measure → (per-image column, pooled key, +1 if higher is better else −1)."""


def gt_segments(dataset: BSDS500, item_id: str) -> list[int]:
    """Segments in each human annotation of an image."""
    return [int(a.unique().numel()) for a in dataset.load(item_id)["gt"]]


def per_image_csvs(results: Path, split: str, methods: list[str]) -> dict[str, dict[str, dict]]:
    """Method → image id → its row, for the methods whose CSV is in ``results``."""
    return {
        m: {row["id"]: row for row in read_rows(path)}
        for m in methods
        if (path := results / f"table1_bsd500_{split}_{m}_per_image.csv").is_file()
    }


def analyse(args: argparse.Namespace) -> str:
    """The per-image table and its summary, as markdown."""
    found = per_image_csvs(args.results, args.split, args.methods)
    ids = sorted(set.intersection(*(set(rows) for rows in found.values())))
    dataset = BSDS500(args.root, split=args.split)
    table, gts = [], {}
    for item_id in ids:
        counts = gt_segments(dataset, item_id)
        gts[item_id] = statistics.mean(counts)
        opt = next((found[m][item_id]["opt_nc"] for m in ("fsf", "scf") if m in found), "")
        row = [item_id, f"{gts[item_id]:.1f} ({min(counts)}–{max(counts)})", opt or "–"]
        for rows in found.values():
            r = rows[item_id]
            segments = float(r["bsd500/segments_per_image"])
            row.append(f"{r['n_clusters']} / {segments:.0f} / {float(r['bsd500/all']):.3f}")
        table.append(row)
    lines = [
        f"# Per image: where the fitted methods fall short (BSDS500 {args.split}, "
        f"{len(ids)} images)",
        "",
        "Each method's cell: final clusters / segments after the 4-connected split / best IoU "
        "(All) of the image. GT: mean segments per human annotation (fewest–most).",
        "",
        markdown(["image", "GT segments", "opt_nC"], list(found), table),
        "## Summary",
        "",
    ]
    mean_gt = statistics.mean(gts.values())
    for m in (m for m in FITTED if m in found):
        rows = [found[m][i] for i in ids]
        clusters = [int(r["n_clusters"]) for r in rows]
        below = sum(int(r["n_clusters"]) < gts[r["id"]] for r in rows)
        line = (
            f"- {m}: clusters mean {statistics.mean(clusters):.1f} (range {min(clusters)}–"
            f"{max(clusters)}) against {mean_gt:.1f} GT segments per annotation; fewer clusters "
            f"than the annotators' mean segments on {below} of {len(rows)} images; "
            f"{sum(c <= 3 for c in clusters)} collapsed to 3 or fewer; "
            f"{sum(r['stop_reason'] == 'threshold' for r in rows)} stopped at the threshold"
        )
        if "felzenszwalb" in found:
            wins = sum(
                float(found[m][i]["bsd500/all"]) > float(found["felzenszwalb"][i]["bsd500/all"])
                for i in ids
            )
            line += f"; above Felzenszwalb's best IoU on {wins} of {len(ids)} images"
        lines.append(line + ".")
    opts = [int(found["fsf"][i]["opt_nc"]) for i in ids] if "fsf" in found else []
    if opts:
        lines.append(
            f"- Silhouette opt_nC (colour k-means): mean {statistics.mean(opts):.1f} (range "
            f"{min(opts)}–{max(opts)}), against {mean_gt:.1f} GT segments per annotation; "
            f"opt_nC = 3 (the lower bound of the search) on {opts.count(3)} of {len(opts)} images."
        )
    if args.against:
        lines += against_best(args, gts)
    lines += [
        "",
        "    " + " ".join(["python", "experiments/shortfall.py", *args.argv]),
        "",
    ]
    return "\n".join(lines)


def against_best(args: argparse.Namespace, gts: dict[str, float]) -> list[str]:
    """Per measure: the best other row, and where and by how much ``args.against`` loses to it.

    Every CSV in ``args.results`` competes; the comparison runs on the images that the analysed
    method and every competitor have, with each image's GT granularity (``gts``) from the
    per-image table's images (a competitor with fewer images restricts them)."""
    paths = sorted(args.results.glob(f"table1_bsd500_{args.split}_*_per_image.csv"))
    prefix, suffix = f"table1_bsd500_{args.split}_", "_per_image.csv"
    names = [p.name.removeprefix(prefix).removesuffix(suffix) for p in paths]
    found = per_image_csvs(args.results, args.split, names)
    ours = found.pop(args.against)
    ids = sorted(set(ours) & set(gts))
    others = {m: rows for m, rows in found.items() if set(ids) <= set(rows)}
    thirds = sorted(ids, key=lambda i: gts[i])
    cut = [thirds[k * len(ids) // 3 : (k + 1) * len(ids) // 3] for k in range(3)]
    lines = [
        "",
        f"## {args.against} against the best other row, per measure ({len(ids)} images)",
        "",
        f"Competitors: the {len(others)} rows with all these images ({', '.join(others)}). "
        "The best other row of a measure is the one with the best pooled value on these images. "
        "Gap = ours − best (for VoI, best − ours), so a negative gap is a loss. GT thirds: the "
        "images sorted by the annotators' mean segments, split in three.",
        "",
    ]
    table = []
    for label, column, key, sign in MEASURES:
        pooled = {m: pool([rows[i] for i in ids])[key] for m, rows in others.items()}
        best = max(pooled, key=lambda m: sign * pooled[m])
        gap = {i: sign * (float(ours[i][column]) - float(others[best][i][column])) for i in ids}
        mean_ours = pool([ours[i] for i in ids])[key]
        by_third = [statistics.mean(gap[i] for i in part) for part in cut]
        segments = [
            statistics.mean(float(rows[i]["bsd500/segments_per_image"]) for i in ids)
            for rows in (ours, others[best])
        ]
        table.append(
            [
                label,
                best,
                f"{mean_ours:.3f} / {pooled[best]:.3f}",
                f"{sum(g > 0 for g in gap.values())} / {len(ids)}",
                f"{statistics.median(gap.values()):+.3f}",
                *(f"{g:+.3f}" for g in by_third),
                f"{segments[0]:.0f} / {segments[1]:.0f}",
            ]
        )
    gt_ranges = [f"{gts[part[0]]:.0f}–{gts[part[-1]]:.0f}" for part in cut]
    header = [
        "best other row",
        "pooled: ours / best",
        "images ours better",
        "median gap",
        *(f"mean gap, GT {r} segments" for r in gt_ranges),
        "segments / image: ours / best",
    ]
    lines.append(markdown(["measure"], header, table))
    return lines


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    dataset_arguments(parser)
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the CSVs")
    parser.add_argument("--out", type=Path, required=True, help="markdown file to write")
    parser.add_argument("--methods", nargs="+", default=list(ORDER), help="the table's columns")
    parser.add_argument("--against", help="a method to compare with the best other row")
    return parse_keeping_argv(parser, argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    text = analyse(args)
    args.out.write_text(text)
    print(text)  # noqa: T201 - the analysis, for the user
    return 0


if __name__ == "__main__":
    sys.exit(main())
