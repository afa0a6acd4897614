"""Speed of our per-image loop against a deliberately straightforward reference, side by side.

    python experiments/bench_speed.py [--iterations 8] [--rounds 2] [--device cpu] [--json]

(a) The reference loop is the published code's (Kim et al. 2020; DynaSeg's BSD/VOC script):
NCHW activations, the response permuted and reshaped to (N, q), the arg-max copied to the host
and ``numpy.unique`` every iteration, L1 losses against zero tensors.
(b) Ours: :class:`dynaseg.engine.Segmenter` with the options given (``--compile``,
``--channels-last``), and also with its eager defaults. Same image, same seed (identical initial
weights), same settings, same number of iterations, early stopping off. Before timing, the first
iterations of (a) and (b) are compared (q' must be identical, and the labels after the first
update agree on ≥ 99.9 % of the pixels), so that no speed-up is bought with different maths.

The timings interleave (a) and (b) in rounds and report medians of per-iteration times (the first
iteration of every run, which pays warm-up and compilation, is left out). Peak memory is measured
in a fresh process per variant (CPU: peak resident set size; CUDA: peak allocated memory). Also
reported: the silhouette phase as a share of a 1000-iteration image, and images per second for a
set of same-size images, one at a time (reference) and batched (``BatchedSegmenter``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dynaseg.batched import BatchedSegmenter
from dynaseg.data import sample_root
from dynaseg.engine import Segmenter, relabel_by_size, to_tensor
from dynaseg.images import load_image
from dynaseg.stopping import SilhouetteStopping, ThresholdStopping
from dynaseg.weighting import FSFWeighting

IMAGE = sample_root() / "images" / "val" / "3096.jpg"
Q = 100


def reference_fit(
    net: nn.Module, x: torch.Tensor, n_iter: int, weighting: Callable | None = None
) -> Iterator[np.ndarray]:
    """The published loop, yielding each iteration's labels (computed before its update)."""
    weighting = weighting or FSFWeighting()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    cross_entropy, l1 = nn.CrossEntropyLoss(), nn.L1Loss()
    _, _, height, width = x.shape
    zeros_y = torch.zeros(height - 1, width, Q, device=x.device)
    zeros_x = torch.zeros(height, width - 1, Q, device=x.device)
    for _ in range(n_iter):
        optimizer.zero_grad()
        output = net(x)[1][0].permute(1, 2, 0).contiguous().view(-1, Q)
        grid = output.reshape(height, width, Q)
        loss_y = l1(grid[1:, :, :] - grid[:-1, :, :], zeros_y)
        loss_x = l1(grid[:, 1:, :] - grid[:, :-1, :], zeros_x)
        _, target = torch.max(output, 1)
        labels = target.data.cpu().numpy()
        n_labels = len(np.unique(labels))
        mu = float(weighting(torch.tensor(n_labels)))
        loss = cross_entropy(output, target) + mu * (loss_y + loss_x)
        loss.backward()
        optimizer.step()
        yield labels.reshape(height, width)


def reference_times(image: np.ndarray, n_iter: int, device: str) -> list[float]:
    """Per-iteration seconds of the reference loop."""
    net = Segmenter(channels_last=False, device=device).build_network(0)
    x = to_tensor(image).to(device)[None]
    stamps = [time.perf_counter()]
    for _ in reference_fit(net, x, n_iter):
        stamps.append(time.perf_counter())
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)][1:]


def our_times(segmenter: Segmenter, image: np.ndarray, n_iter: int) -> list[float]:
    """Per-iteration seconds of our loop (stopping off)."""
    segmenter.max_iter = n_iter
    stamps: list[float] = []
    segmenter.fit(image, seed=0, on_iteration=lambda *_: stamps.append(time.perf_counter()))
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)][1:]


def same_maths(image: np.ndarray, ours: Segmenter, n_check: int = 3) -> list[float]:
    """Agreement of (a) and (b)'s label maps after each of the first ``n_check`` updates.

    Raises SystemExit unless q' is the same at every one of these iterations and the labels
    after the first update agree on at least 99.9 % of the pixels. (Later iterations drift
    apart slowly: rounding differences flip near-tied pixels, and the fit amplifies them.)
    """
    device = ours.device
    x = to_tensor(image).to(device)[None]
    net = Segmenter(channels_last=False, device=device).build_network(0)
    reference = [relabel_by_size(labels) for labels in reference_fit(net, x, n_check + 1)]
    ours.max_iter = n_check
    ours_q = ours.fit(image, 0).history["q"]
    reference_q = [float(labels.max() + 1) for labels in reference]
    if ours_q != reference_q:
        raise SystemExit(f"q' differs: reference {reference_q}, ours {ours_q}")
    agreement = []
    for k in range(1, n_check + 1):
        ours.max_iter = k
        agreement.append(round(float((ours.fit(image, 0).labels == reference[k]).mean()), 5))
    if agreement[0] < 0.999:
        raise SystemExit(f"(a) and (b) disagree on {1 - agreement[0]:.2%} of the first labels")
    return agreement


def peak_rss_mb() -> float:
    """This process's peak resident set size (VmHWM; unlike ``ru_maxrss`` it is not inherited
    from the parent across fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise OSError("no VmHWM in /proc/self/status (peak memory needs Linux)")


def _peak_child(
    variant: str, n_iter: int, device: str, settings: dict, queue: multiprocessing.Queue
) -> None:
    image = load_image(IMAGE)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if variant == "reference":
        reference_times(image, n_iter, device)
    else:
        our_times(
            Segmenter(stopping=ThresholdStopping(0), device=device, **settings), image, n_iter
        )
    if device == "cuda":
        queue.put(torch.cuda.max_memory_allocated() / 2**20)
    else:
        queue.put(peak_rss_mb())


def peak_memory_mb(variant: str, n_iter: int, device: str, settings: dict | None = None) -> float:
    """Peak memory of one variant, measured in a fresh process."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(
        target=_peak_child, args=(variant, n_iter, device, settings or {}, queue)
    )
    process.start()
    value = queue.get()
    process.join()
    return round(value, 1)


def silhouette_seconds(image: np.ndarray, device: str) -> float:
    """Median time of the silhouette phase on this image."""
    x = to_tensor(image).to(device)
    times = []
    for seed in range(3):
        start = time.perf_counter()
        SilhouetteStopping().resolve(x, lambda: torch.empty(0), seed)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def image_set(size: int) -> list[np.ndarray]:
    """The bundled sample images, centre-cropped to ``size``×``size`` (a same-size set)."""
    crops = []
    for path in sorted((sample_root() / "images" / "val").glob("*.jpg")):
        image = load_image(path)
        top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
        crops.append(np.ascontiguousarray(image[top : top + size, left : left + size]))
    return crops


def throughput(images: list[np.ndarray], n_iter: int, device: str) -> dict[str, float]:
    """Images per second fitting a set for ``n_iter`` iterations: one at a time with the
    reference loop, and all at once with :class:`BatchedSegmenter`."""
    start = time.perf_counter()
    for image in images:
        reference_times(image, n_iter + 1, device)
    reference = len(images) / (time.perf_counter() - start)
    batched = BatchedSegmenter(
        Segmenter(stopping=ThresholdStopping(0), max_iter=n_iter, device=device)
    )
    start = time.perf_counter()
    batched.fit(images, list(range(len(images))))
    ours = len(images) / (time.perf_counter() - start)
    return {
        "images_per_second_reference": round(reference, 4),
        "images_per_second_batched": round(ours, 4),
        "batched_throughput_ratio": round(ours / reference, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=8, help="iterations per timed run")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of (a), (b)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="time ours with torch.compile")
    parser.add_argument("--channels-last", action="store_true", help="time ours in NHWC")
    parser.add_argument(
        "--set-size",
        type=int,
        default=None,
        help="crop of the image set (default 160 on CPU, 320 on GPU)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    image = load_image(IMAGE)

    settings = {"compile": args.compile, "channels_last": args.channels_last}
    ours = Segmenter(stopping=ThresholdStopping(0), device=args.device, **settings)
    agreement = same_maths(image, ours)

    eager = Segmenter(stopping=ThresholdStopping(0), device=args.device)
    times: dict[str, list[float]] = {"reference": [], "ours": [], "ours_eager_defaults": []}
    for _ in range(args.rounds):
        times["reference"] += reference_times(image, args.iterations, args.device)
        times["ours"] += our_times(ours, image, args.iterations)
        times["ours_eager_defaults"] += our_times(eager, image, args.iterations)
    median = {name: statistics.median(values) for name, values in times.items()}
    silhouette = silhouette_seconds(image, args.device)

    figures = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "image": f"{IMAGE.name} {image.shape[1]}x{image.shape[0]}",
        "iterations_timed": len(times["ours"]),
        "labels_agreement_after_updates_1_2_3": agreement,
        "seconds_per_iter_reference": round(median["reference"], 4),
        "seconds_per_iter_ours": round(median["ours"], 4),
        "ours_settings": settings,
        "seconds_per_iter_ours_eager_defaults": round(median["ours_eager_defaults"], 4),
        "speedup": round(median["reference"] / median["ours"], 3),
        "speedup_eager_defaults": round(median["reference"] / median["ours_eager_defaults"], 3),
        "silhouette_seconds": round(silhouette, 3),
        "silhouette_share": round(silhouette / (silhouette + 1000 * median["ours"]), 5),
        "peak_mem_reference_mb": peak_memory_mb("reference", 3, args.device),
        "peak_mem_ours_mb": peak_memory_mb("ours", 3, args.device, settings),
    }
    size = args.set_size or (320 if args.device.startswith("cuda") else 160)
    figures["image_set"] = f"4 images {size}x{size}, {args.iterations} iterations"
    figures.update(throughput(image_set(size), args.iterations, args.device))
    if args.json:
        print(json.dumps(figures))
        return
    width = max(map(len, figures))
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
