"""The README's figures: example segmentations beside the ground truth, and q' and μ over a fit.

    python experiments/figures.py examples --root ../shared/data/BSDS500/data --split val \
        --ids 101085 14037 134035 --run FSF=outputs/table1/val_fsf_160px_T300 \
        --run SCF=outputs/table1/val_scf_160px_T300 \
        --run "Kim et al."=outputs/table1/val_fixed_160px_T300 --out docs/bsd500_val_examples.png
    OMP_NUM_THREADS=1 python experiments/figures.py curves \
        --root ../shared/data/BSDS500/data --split val --id 101085 --max-side 160 \
        --max-iter 300 --out docs/bsd500_val_curves.png

These are the README's two figures; the run folders are those ``table1.py`` makes with
``--dynaseg-limit 20 --max-side 160 --max-iter 300``.

``examples`` reads the predictions of finished runs (``<run>/predictions/<id>.png``) and draws,
per image, the image | the first annotator's ground truth | one column per run, each segment
blended over the image with its boundary in white. ``curves`` fits one image with FSF, SCF and
fixed μ (the Table 1 presets) and plots q' and μ against the iteration. Needs matplotlib
(``pip install -e '.[figures]'``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from hydra.utils import instantiate
from PIL import Image
from tables import dataset_arguments

from dynaseg.config import compose_config
from dynaseg.engine import image_seed
from dynaseg.outputs import RUN, overlay

CURVES = {
    "FSF (α = 15)": "bsd_fsf_cnn",
    "SCF (α = 50)": "bsd_scf_cnn",
    "fixed μ = 5": "bsd_fixed_cnn",
}


def dataset(
    root: Path,
    split: str,
    max_side: int | None = None,
    preset: str = "bsd_fsf_cnn",
    extra: tuple[str, ...] = (),
):
    """A run's config (Table 1 preset) and its BSDS500 reader."""
    config = compose_config(
        "run",
        [
            f"+experiment={preset}",
            f"dataset.root={root.resolve()}",
            f"dataset.split={split}",
            f"dataset.max_side={max_side or 'null'}",
            *extra,
        ],
    )
    return config, instantiate(config.dataset)


def examples(args: argparse.Namespace) -> Image.Image:
    """One row per image: image, ground truth, then each run's prediction."""
    _, data = dataset(args.root, args.split)
    runs = [spec.split("=", 1) for spec in args.run]
    tiles = []
    for item_id in args.ids:
        sample = data.load(item_id)
        image = (sample["image"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        row = [image, overlay(image, sample["gt"][0].numpy())]
        for _, folder in runs:
            with Image.open(RUN.path(Path(folder), "labels", item_id)) as prediction:
                row.append(overlay(image, np.asarray(prediction).astype(np.int64)))
        height = 240
        tiles.append(
            [
                np.asarray(Image.fromarray(t).resize((t.shape[1] * height // t.shape[0], height)))
                for t in row
            ]
        )
    titles = ["image", "ground truth", *(label for label, _ in runs)]
    return grid(tiles, titles)


def grid(tiles: list[list[np.ndarray]], titles: list[str]) -> Image.Image:
    """Rows of equal-height tiles with a title above each column (matplotlib, for the text)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(tiles), len(titles)
    widths = [max(row[c].shape[1] for row in tiles) for c in range(n_cols)]
    figure, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(sum(widths) / 100, n_rows * 2.6),
        gridspec_kw={"width_ratios": widths},
        squeeze=False,
    )
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            axes[r][c].imshow(tile)
            axes[r][c].set_axis_off()
            if r == 0:
                axes[r][c].set_title(titles[c], fontsize=11)
    figure.tight_layout(pad=0.3)
    return to_image(figure)


def to_image(figure) -> Image.Image:
    """A matplotlib figure as a PIL image."""
    figure.canvas.draw()
    image = Image.fromarray(np.asarray(figure.canvas.buffer_rgba())[..., :3].copy())
    import matplotlib.pyplot as plt

    plt.close(figure)
    return image


def curves(args: argparse.Namespace) -> Image.Image:
    """q' and μ per iteration for one image under each weighting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for label, preset in CURVES.items():
        config, data = dataset(
            args.root,
            args.split,
            args.max_side,
            preset,
            (f"max_iter={args.max_iter}",),
        )
        sample = data.load(args.id)
        result = instantiate(config.segmenter).fit(
            sample["image"], image_seed(config.seed, args.id)
        )
        left.plot(result.history["q"], label=f"{label}: stop at {result.iterations}")
        right.plot(result.history["mu"], label=label)
        if result.opt_nc is not None:
            left.axhline(result.opt_nc, color="grey", linestyle=":", linewidth=1)
    left.set(xlabel="iteration", ylabel="q' (clusters present)", yscale="log")
    left.set_title(f"BSDS500 {args.split} {args.id} (grey: silhouette opt_nC)", fontsize=10)
    right.set(xlabel="iteration", ylabel="μ (weight of L_con)", yscale="log")
    for axis in (left, right):
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    return to_image(figure)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="figure", required=True)
    for name in ("examples", "curves"):
        sub = commands.add_parser(name)
        dataset_arguments(sub)
        sub.add_argument("--out", type=Path, required=True, help="PNG to write")
    commands.choices["examples"].add_argument("--ids", nargs="+", required=True)
    commands.choices["examples"].add_argument(
        "--run", action="append", required=True, help="LABEL=run folder, one column each"
    )
    commands.choices["curves"].add_argument("--id", required=True)
    commands.choices["curves"].add_argument("--max-side", type=int)
    commands.choices["curves"].add_argument("--max-iter", type=int, default=1000)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    image = examples(args) if args.figure == "examples" else curves(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    image.save(args.out)
    print(f"wrote {args.out}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
