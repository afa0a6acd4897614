"""Changes to the fit itself, tried against the plain fit on BSDS500 (#13): labels kept as fitted.

    python experiments/fit_study.py --root ../shared/data/BSDS500/data --split train \
        --limit 10 --mode refine --out outputs/tune/refine_train10
    python experiments/fit_study.py ... --mode none --out outputs/tune/plain_train10

``--mode refine``: Kanezaki (2018)'s superpixel refinement. Kanezaki's loop takes as each
iteration's target not the arg-max labels themselves but, within each superpixel, the label
most of its pixels have (here Felzenszwalb superpixels, scale 100, the ones the default
segments step votes in after the fit). For it this script swaps the engine's
:func:`dynaseg.engine.forward_losses` for that variant, fits our default (conf/segment.yaml,
seeded per image as a run is) with the labels kept as fitted, and writes them in the RUN layout
(``<out>/predictions/<id>.png``), so that ``segments_study.py --run <out>`` scores them with any
segments step. It is a study, not an option of the library: on train it scored worse than the
plain fit (experiments/results/refine_train7.md).

``--mode smooth``: the fit sees the image after total-variation denoising (Chambolle,
``--tv-weight``), which flattens texture and keeps edges; the segments step and the scores still
use the image itself (experiments/results/smooth_train7.md).

``--mode none`` is the plain fit, for a side-by-side run on the same machine; with ``--set``
(Hydra overrides of conf/segment.yaml, e.g. ``--set weighting.alpha=5``) it fits a changed
setting of the default instead (experiments/results/alpha_train7.md). Finished images
are skipped (resumable); ``--part I --parts N`` fits every N-th image from the I-th, so that N
processes share the images.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from skimage.restoration import denoise_tv_chambolle
from skimage.segmentation import felzenszwalb
from torch import Tensor, nn

import dynaseg.engine as engine
from dynaseg.config import compose_config
from dynaseg.data import BSDS500
from dynaseg.outputs import RUN, label_image, save_png
from dynaseg.segments import as_rgb


class Refined:
    """``forward_losses`` with each target replaced by its superpixel's majority label."""

    def __init__(self) -> None:
        self.superpixels = torch.zeros(0, dtype=torch.int64)
        self.count = 0

    def set_image(self, image: np.ndarray, scale: float) -> None:
        superpixels = felzenszwalb(image, scale=scale, sigma=0.5, min_size=20)
        self.superpixels = torch.from_numpy(superpixels.astype(np.int64)).flatten()
        self.count = int(superpixels.max()) + 1

    def __call__(
        self, net: nn.Module, x: Tensor, n_clusters: int, *_: object
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        _, response = net(x)
        target = response.argmax(1)
        votes = torch.bincount(
            self.superpixels * n_clusters + target.flatten(), minlength=self.count * n_clusters
        )
        target = votes.view(self.count, n_clusters).argmax(1)[self.superpixels].view_as(target)
        loss_sim = engine.similarity_loss(response, target)
        n_labels = engine.count_labels(target, n_clusters)
        return target, n_labels, loss_sim, engine.continuity_loss(response)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="BSDS500 data folder")
    parser.add_argument("--split", default="train")
    parser.add_argument("--limit", type=int, default=10, help="the first N images of the split")
    parser.add_argument("--mode", choices=["none", "refine", "smooth"], required=True)
    parser.add_argument("--scale", type=float, default=100.0, help="superpixels' FH scale")
    parser.add_argument("--tv-weight", type=float, default=0.1, help="smoothing of --mode smooth")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Hydra override of the default's config (conf/segment.yaml), e.g. weighting.alpha=5",
    )
    parser.add_argument("--part", type=int, default=0, help="this process's share (0…parts-1)")
    parser.add_argument("--parts", type=int, default=1, help="processes sharing the images")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", type=Path, required=True, help="run directory to write")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    refined = Refined()
    if args.mode == "refine":
        engine.forward_losses = refined
    segmenter = instantiate(compose_config("segment", args.set).segmenter)
    dataset = BSDS500(args.root, args.split, limit=args.limit)
    for item_id in dataset.ids[args.part :: args.parts]:
        path = RUN.path(args.out, "labels", item_id)
        if path.is_file():
            continue
        image = as_rgb(dataset.load(item_id)["image"])
        if args.mode == "refine":
            refined.set_image(image, args.scale)
        start = time.perf_counter()
        seen = image
        if args.mode == "smooth":
            smooth = denoise_tv_chambolle(image, weight=args.tv_weight, channel_axis=-1)
            seen = np.round(smooth * 255).astype(np.uint8)
        result = segmenter.fit(seen, engine.image_seed(args.seed, item_id))
        path.parent.mkdir(parents=True, exist_ok=True)
        save_png(path, label_image(result.labels))
        seconds = time.perf_counter() - start
        print(item_id, result.n_clusters, result.iterations, result.stop_reason, f"{seconds:.1f}")  # noqa: T201


if __name__ == "__main__":
    main()
