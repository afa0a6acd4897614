"""Per-image look at where the fitted methods fall short: clusters, segments, opt_nC and the GT.

    python experiments/shortfall.py --root ../shared/data/BSDS500/data --split val \
        --out experiments/results/table1_bsd500_val_per_image_analysis.md

Reads the per-image CSVs that ``table1.py`` wrote (``table1_bsd500_<split>_<method>_per_image.csv``)
and the ground truth, and writes one row per image that every method ran on: the number of
segments per human annotation, the silhouette estimate opt_nC, and for each method its final
clusters, its segments after the 4-connected split and its best IoU (All); then the summary
that the results file quotes (how often each fitted method loses to Felzenszwalb, collapses, or
under-segments against the annotators).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from tables import dataset_arguments, markdown, parse_keeping_argv, read_rows

from dynaseg.data import BSDS500

RESULTS = Path(__file__).resolve().parent / "results"
FITTED = ("fixed", "scf", "fsf")
ORDER = ("kmeans", "felzenszwalb", *FITTED)


def gt_segments(dataset: BSDS500, item_id: str) -> list[int]:
    """Segments in each human annotation of an image."""
    return [int(a.unique().numel()) for a in dataset.load(item_id)["gt"]]


def analyse(args: argparse.Namespace) -> str:
    """The per-image table and its summary, as markdown."""
    found = {
        m: {row["id"]: row for row in read_rows(path)}
        for m in ORDER
        if (path := args.results / f"table1_bsd500_{args.split}_{m}_per_image.csv").is_file()
    }
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
    lines += [
        "",
        "    " + " ".join(["python", "experiments/shortfall.py", *args.argv]),
        "",
    ]
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    dataset_arguments(parser)
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the CSVs")
    parser.add_argument("--out", type=Path, required=True, help="markdown file to write")
    return parse_keeping_argv(parser, argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    text = analyse(args)
    args.out.write_text(text)
    print(text)  # noqa: T201 - the analysis, for the user
    return 0


if __name__ == "__main__":
    sys.exit(main())
