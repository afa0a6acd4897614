"""How long one BSDS500 image (481×321) takes with the default settings, measured.

    python experiments/time_one_image.py [--iterations 20] [--device cpu]

Runs the default Segmenter (CNN, FSF α = 15) on a bundled sample image with early stopping off,
timing every forward/backward/step, and times the silhouette phase on its own. Prints the median
seconds per iteration, the silhouette phase, and the implied time of a full T = 1000 fit.
"""

from __future__ import annotations

import argparse
import statistics
import time
from itertools import pairwise

import torch

from dynaseg.data import sample_root
from dynaseg.engine import Segmenter, to_tensor
from dynaseg.images import load_image
from dynaseg.stopping import SilhouetteStopping, ThresholdStopping


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--image", default=str(sample_root() / "images" / "val" / "3096.jpg"))
    args = parser.parse_args()

    image = load_image(args.image)
    stamps: list[float] = []
    segmenter = Segmenter(
        stopping=ThresholdStopping(0), max_iter=args.iterations, device=args.device
    )
    segmenter.fit(image, seed=0, on_iteration=lambda *_: stamps.append(time.perf_counter()))
    per_iteration = statistics.median(b - a for a, b in pairwise(stamps[1:]))

    x = to_tensor(image).to(args.device)
    silhouette = []
    for seed in range(3):
        start = time.perf_counter()
        SilhouetteStopping().resolve(x, lambda: torch.empty(0), seed)
        silhouette.append(time.perf_counter() - start)
    phase = statistics.median(silhouette)

    print(
        f"image {args.image}: {image.shape[1]}x{image.shape[0]}, device {args.device}, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"median seconds per iteration ({args.iterations} iterations): {per_iteration:.3f}")
    print(f"silhouette phase (median of 3): {phase:.3f} s")
    print(f"a full T = 1000 fit without early stop: {(1000 * per_iteration + phase) / 60:.1f} min")


if __name__ == "__main__":
    main()
