"""Table 1 of the paper on BSDS500: every method through the same harness, beside the paper.

    python experiments/table1.py --root ../shared/data/BSDS500/data --split val \
        [--dynaseg-limit 20 --max-side 160 --max-iter 300] [--jobs 2] [--override trainer=gpu …]

Runs ``python -m dynaseg.run`` once per method (k-means, Felzenszwalb, Kim et al. = fixed μ,
DynaSeg SCF and FSF, all CNN), each in its own folder under ``--runs``; a folder that already
holds results is finished with ``resume=true`` (so an interrupted table costs nothing twice, and
the harness refuses to mix settings). It then writes
``experiments/results/table1_bsd500_<split>.md`` — All / Fine / Coarse / Mean, segments per image,
covering, PRI and VoI, fit time, the paper's numbers beside them, the settings and this command —
and copies each method's ``per_image.csv`` beside it. When the DynaSeg rows cover fewer images
than the baselines (``--dynaseg-limit``), a second table re-pools every method over the images
they all ran on, so rows are compared on the same images. Text written below the generated part
of the results file (the analysis) is kept when the table is regenerated. ``--report-only``
writes the table again without running anything, taking a method whose run folder is gone (run
folders are git-ignored) from the per-image CSV committed in ``--out``.

``--jobs N`` runs N methods at once, each with ``cores / N`` torch threads (on a small CPU two
single-thread fits use the cores better than one two-thread fit).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tables import (
    HEADER,
    PAPER_BSD500,
    cells,
    dataset_arguments,
    markdown,
    paper_cells,
    parse_keeping_argv,
    pool,
    read_rows,
)

from dynaseg.outputs import RUN, atomic_write

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
END = "<!-- end of the part written by experiments/table1.py; text below is kept -->"

BASELINE = ["+experiment=bsd_fsf_cnn"]  # the paper's preset: labels as the baseline gives them
KMEANS, FH = [*BASELINE, "method=kmeans"], [*BASELINE, "method=felzenszwalb"]


def fh(scale: int, sigma: float, min_size: int) -> list[str]:
    """Felzenszwalb at one setting."""
    return [
        *FH,
        f"segmenter.scale={scale}",
        f"segmenter.sigma={sigma}",
        f"segmenter.min_size={min_size}",
    ]


METHODS: dict[str, tuple[str, list[str]]] = {
    "kmeans": ("k-means on colours, k by silhouette", KMEANS),
    "kmeans_iou": ("k-means, k = 6 (train: best IoU)", [*KMEANS, "segmenter.k=6"]),
    "kmeans_regions": ("k-means, k = 2 (train: covering, VoI)", [*KMEANS, "segmenter.k=2"]),
    "kmeans_pri": ("k-means, k = 17 (train: PRI)", [*KMEANS, "segmenter.k=17"]),
    "felzenszwalb": ("Felzenszwalb (scale 100, σ 0.5, min size 50)", FH),
    "fh_iou": ("Felzenszwalb 300 / 0.5 / 20 (train: best IoU)", fh(300, 0.5, 20)),
    "fh_covering": ("Felzenszwalb 1000 / 0.5 / 500 (train: covering)", fh(1000, 0.5, 500)),
    "fh_pri": ("Felzenszwalb 300 / 0.8 / 500 (train: PRI)", fh(300, 0.8, 500)),
    "fh_voi": ("Felzenszwalb 1000 / 0.8 / 500 (train: VoI)", fh(1000, 0.8, 500)),
    "fixed": ("Kim et al. (fixed μ = 5, stop at q' ≤ 3)", ["+experiment=bsd_fixed_cnn"]),
    "scf": ("DynaSeg SCF (CNN, α = 50, silhouette stop)", ["+experiment=bsd_scf_cnn"]),
    "fsf": ("DynaSeg FSF (CNN, α = 15, silhouette stop)", ["+experiment=bsd_fsf_cnn"]),
    "default": ("ours: `dynaseg segment` defaults (bsd_default)", ["+experiment=bsd_default"]),
}
"""Method → (row label, Hydra overrides). The baselines' settings chosen on BSDS500 train (first
50 images) by each measure family: kmeans_k_sweep_train50.md, felzenszwalb_sweep_train50.md."""
FITTED = ("fixed", "scf", "fsf", "default")


def run_folder(runs: Path, split: str, method: str, max_side: int | None, max_iter: int) -> Path:
    """Where a method's run lives; the fitted methods' settings are part of the name."""
    if method not in FITTED:
        return runs / f"{split}_{method}_native"
    size = f"{max_side}px" if max_side else "native"
    return runs / f"{split}_{method}_{size}_T{max_iter}"


def command(args: argparse.Namespace, method: str, folder: Path) -> list[str]:
    """The ``dynaseg.run`` command line of one method."""
    fitted = method in FITTED
    limit = args.dynaseg_limit if fitted and args.dynaseg_limit else args.limit
    overrides = [
        *METHODS[method][1],
        f"dataset.root={args.root.resolve()}",
        f"dataset.split={args.split}",
        f"dataset.limit={limit or 'null'}",
        f"seed={args.seed}",
        "save_overlays=0",
        f"hydra.run.dir={folder}",
    ]
    if fitted:
        overrides += [f"dataset.max_side={args.max_side or 'null'}", f"max_iter={args.max_iter}"]
    overrides += args.override
    if RUN.records(folder):
        overrides.append("resume=true")
    return [sys.executable, "-m", "dynaseg.run", *overrides]


def run_method(args: argparse.Namespace, method: str, folder: Path, threads: int) -> int:
    """Run (or finish) one method; its console output goes to ``<folder>.log``."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"OMP_NUM_THREADS": str(threads)}
    cmd = command(args, method, folder)
    print(f"[{method}] {shlex.join(cmd[1:])}", flush=True)  # noqa: T201 - progress for the user
    with folder.with_suffix(".log").open("a") as log:
        done = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    print(f"[{method}] exit status {done.returncode}", flush=True)  # noqa: T201
    return done.returncode


def row_cells(method: str, rows: list[dict[str, str]], settings: str) -> list[str]:
    """A method's row: label, images, settings, scores and the summed fit time."""
    fit_seconds = sum(float(row["seconds"]) for row in rows)
    label = METHODS[method][0]
    return [label, str(len(rows)), settings, *cells(pool(rows)), f"{fit_seconds / 60:.1f} min"]


def settings_of(args: argparse.Namespace, method: str) -> str:
    """The fit size and T of a row, as the table prints them."""
    if method not in FITTED:
        return "native size"
    size = f"long side {args.max_side} px" if args.max_side else "native size"
    return f"{size}, T = {args.max_iter}"


def per_image_csv(args: argparse.Namespace, method: str, folder: Path) -> Path:
    """A method's per-image scores: its run's, or with ``--report-only`` the copy in ``--out``.

    Run folders live in the git-ignored ``outputs/`` and are lost with the machine; the copies
    beside the results file are committed, so a table can be written again from them when only
    some of its rows were run on this machine.
    """
    own = folder / "per_image.csv"
    kept = args.out / f"table1_bsd500_{args.split}_{method}_per_image.csv"
    return kept if args.report_only and not own.is_file() else own


def report(args: argparse.Namespace, folders: dict[str, Path]) -> str:
    """The generated part of the results file."""
    per_method = {m: read_rows(per_image_csv(args, m, f)) for m, f in folders.items()}
    head = ["method", "images", "settings"]
    tail = [*HEADER, "fit time"]
    lines = [
        f"# Table 1 on BSDS500 {args.split}: every method beside the paper",
        "",
        f"Real BSDS500 {args.split} split, the paper's protocol (segment-wise best IoU pooled over "
        "all GT segments after splitting the prediction into 4-connected components; All / Fine / "
        "Coarse / Mean, docs/method.md §3a) and the BSDS500 region measures of the same "
        "predictions "
        "(covering of the ground truth, probabilistic Rand index, variation of information in "
        "nats, lower is better; each image against all its annotations, averaged over images). "
        "Predictions are scored at the native image size; a fit at a reduced long side has its "
        f"labels enlarged (nearest) before scoring. Seed {args.seed}; fit time is the sum over "
        "images of the per-image fit, on the machine that ran the command. The paper reports the "
        "test split, which is not available here.",
        "",
    ]
    rows = []
    for method, image_rows in per_method.items():
        rows.append(row_cells(method, image_rows, settings_of(args, method)))
        paper = paper_cells(method)
        if paper is not None:
            rows.append([f"paper (test): {PAPER_BSD500[method][0]}", "200", "", *paper, "–"])
    lines.append(markdown(head, tail, rows))
    common = set.intersection(*({row["id"] for row in r} for r in per_method.values()))
    if any(len(r) != len(common) for r in per_method.values()):
        lines.append(f"On the {len(common)} images every method ran on (rows re-pooled):\n")
        subset = [
            row_cells(m, [row for row in r if row["id"] in common], settings_of(args, m))
            for m, r in per_method.items()
        ]
        lines.append(markdown(head, tail, subset))
    lines += [
        f"Per-image scores: `table1_bsd500_{args.split}_<method>_per_image.csv` beside this file. "
        "Regenerate (finished runs are read back, not recomputed):",
        "",
        "    "
        + shlex.join(
            ["python", "experiments/table1.py", *(a for a in args.argv if a != "--report-only")]
        ),
        "",
    ]
    return "\n".join(lines)


def write_results(args: argparse.Namespace, folders: dict[str, Path]) -> Path:
    """Write the results file (keeping the analysis below the marker) and the per-image CSVs."""
    args.out.mkdir(parents=True, exist_ok=True)
    for method, folder in folders.items():
        source = per_image_csv(args, method, folder)
        target = args.out / f"table1_bsd500_{args.split}_{method}_per_image.csv"
        if source != target:
            copy = source.read_bytes()
            atomic_write(target, lambda handle, data=copy: handle.write(data))
    path = args.out / f"table1_bsd500_{args.split}.md"
    kept = ""
    if path.is_file() and END in path.read_text():
        kept = path.read_text().split(END, 1)[1]
    text = (report(args, folders) + "\n" + END + kept).encode()
    atomic_write(path, lambda handle: handle.write(text))
    return path


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    dataset_arguments(parser)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--limit", type=int, help="first N images for every method")
    parser.add_argument("--dynaseg-limit", type=int, help="first N images for the fitted methods")
    parser.add_argument("--max-side", type=int, help="long side of the fitted methods' input")
    parser.add_argument("--max-iter", type=int, default=1000, help="T of the fitted methods")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="methods run at once")
    parser.add_argument("--threads", type=int, help="torch threads per run (default: cores / jobs)")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Hydra override for every run, e.g. trainer=gpu (repeatable; not part of the run "
        "folder's name: use another --runs for other settings)",
    )
    parser.add_argument("--runs", type=Path, default=ROOT / "outputs" / "table1")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="collect finished runs only; a method without its run folder is read from the "
        "per-image CSV already in --out",
    )
    return parse_keeping_argv(parser, argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    folders = {
        m: run_folder(args.runs.resolve(), args.split, m, args.max_side, args.max_iter)
        for m in args.methods
    }
    if not args.report_only:
        threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
        with ThreadPoolExecutor(max_workers=args.jobs) as pool_:
            codes = list(pool_.map(lambda m: run_method(args, m, folders[m], threads), folders))
        if any(codes):
            print("some runs failed; see the .log beside each run folder", file=sys.stderr)  # noqa: T201
            return 1
    missing = [m for m, f in folders.items() if not per_image_csv(args, m, f).is_file()]
    if missing:
        print(f"no finished run for: {', '.join(missing)}", file=sys.stderr)  # noqa: T201
        return 1
    print(f"wrote {write_results(args, folders)}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
