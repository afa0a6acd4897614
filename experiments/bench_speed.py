"""Speed of our per-image loop against a deliberately straightforward reference, side by side.

    python experiments/bench_speed.py [--iterations 8] [--rounds 2] [--device cpu] [--json]

The headline is the **time to a finished segmentation** of one native 481×321 BSDS500 image:
our defaults (``conf/segment.yaml``: the convergence rule, bf16 where native) run to their own
stop, against the published loop at its defaults (T = 1000, minLabels 3), whose time is its
median seconds per iteration times T = 1000 (labelled as an estimate: it runs to T unless q'
falls to its minLabels = 3, which on natural images it seldom does).

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
from hydra.utils import instantiate
from torch import nn

from dynaseg.config import compose_config
from dynaseg.data import sample_root
from dynaseg.data.base import resize_long_side
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
    reference loop, and all at once with :meth:`Segmenter.fit_many`."""
    start = time.perf_counter()
    for image in images:
        reference_times(image, n_iter + 1, device)
    reference = len(images) / (time.perf_counter() - start)
    batched = Segmenter(stopping=ThresholdStopping(0), max_iter=n_iter, device=device)
    start = time.perf_counter()
    batched.fit_many(images, list(range(len(images))))
    ours = len(images) / (time.perf_counter() - start)
    return {
        "images_per_second_reference": round(reference, 4),
        "images_per_second_batched": round(ours, 4),
        "batched_throughput_ratio": round(ours / reference, 3),
    }


def default_segmenter(device: str) -> Segmenter:
    """The segmenter ``dynaseg segment`` builds with no options (conf/segment.yaml)."""
    return instantiate(compose_config("segment", [f"device={device}"]).segmenter)


def time_to_result(image: np.ndarray, device: str, rounds: int) -> dict[str, object]:
    """Our defaults run to their own stop on the image: median seconds, iterations, reason."""
    runs = [default_segmenter(device).fit(image, seed=0) for _ in range(rounds)]
    return {
        "seconds": statistics.median(run.seconds for run in runs),
        "iterations": runs[0].iterations,
        "stop_reason": runs[0].stop_reason,
    }


def crops(size: int, count: int) -> list[np.ndarray]:
    """``count`` distinct ``size``×``size`` crops of the bundled samples (seeded offsets and
    flips): a same-size set as large as a batch needs, like COCO's 320×320 crops."""
    rng = np.random.default_rng(0)
    sources = [load_image(path) for path in sorted((sample_root() / "images" / "val").glob("*"))]
    out = []
    for index in range(count):
        image = sources[index % len(sources)]
        if min(image.shape[:2]) < size:
            image = resize_long_side(image, int(size * max(image.shape[:2]) / min(image.shape[:2])))
        top = int(rng.integers(0, image.shape[0] - size + 1))
        left = int(rng.integers(0, image.shape[1] - size + 1))
        crop = image[top : top + size, left : left + size]
        out.append(np.ascontiguousarray(crop[:, ::-1] if index % 2 else crop))
    return out


def precision_matrix(
    image: np.ndarray, device: str, n_iter: int, compiled_too: bool = True
) -> dict[str, float]:
    """Seconds per iteration for fp32 (strict), TF32 and bf16, eager and compiled."""
    out = {}
    for name, precision, tf32 in (
        ("fp32", "fp32", False),
        ("tf32", "fp32", True),
        ("bf16", "bf16", False),
    ):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        for compiled in (False, True) if compiled_too else (False,):
            segmenter = Segmenter(
                stopping=ThresholdStopping(0), device=device, precision=precision, compile=compiled
            )
            key = f"seconds_per_iter_{name}_{'compiled' if compiled else 'eager'}"
            out[key] = round(statistics.median(our_times(segmenter, image, n_iter)), 5)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = True  # PyTorch's defaults
    return out


def batch_matrix(
    size: int, batch_sizes: list[int], n_iter: int, device: str, precision: str
) -> dict[str, float]:
    """Images per second of ``fit_many`` at each batch size, against one image at a time (the
    same loop, B = 1, timed on up to 8 images), all for ``n_iter`` iterations."""
    segmenter = Segmenter(
        stopping=ThresholdStopping(0), max_iter=n_iter, device=device, precision=precision
    )
    images = crops(size, max(batch_sizes))
    single = images[: min(8, len(images))]
    segmenter.fit(single[0], 0)  # warm-up
    start = time.perf_counter()
    for seed, image in enumerate(single):
        segmenter.fit(image, seed)
    one_at_a_time = len(single) / (time.perf_counter() - start)
    out = {"images_per_second_one_at_a_time": round(one_at_a_time, 3)}
    for batch in batch_sizes:
        segmenter.fit_many(images[:batch], list(range(batch)))  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        segmenter.fit_many(images[:batch], list(range(batch)))
        rate = batch / (time.perf_counter() - start)
        out[f"images_per_second_B{batch}"] = round(rate, 3)
        out[f"batched_ratio_B{batch}"] = round(rate / one_at_a_time, 2)
    return out


def paper_time_to_result(image: np.ndarray, device: str, max_iter: int) -> dict[str, object]:
    """The paper's loop (``dynaseg segment --paper``: T = 1000, silhouette) run to its end."""
    config = compose_config("segment", [f"device={device}", "loop=paper", f"max_iter={max_iter}"])
    result = instantiate(config.segmenter).fit(image, seed=0)
    return {
        "time_to_result_paper_s": round(result.seconds, 1),
        "paper_iterations": result.iterations,
        "paper_stop_reason": result.stop_reason,
    }


def gpu_main(args: argparse.Namespace) -> None:
    """The accelerator measurements (``--matrix``): one JSON object on stdout."""
    image = load_image(IMAGE)
    if args.max_side:
        image = resize_long_side(image, args.max_side)
    figures: dict[str, object] = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "image": f"{IMAGE.name} {image.shape[1]}x{image.shape[0]}",
        "iterations_timed": args.iterations,
    }
    figures.update(precision_matrix(image, args.device, args.iterations, not args.eager_only))
    default = time_to_result(image, args.device, args.result_rounds)
    figures.update(
        {
            "time_to_result_default_s": round(default["seconds"], 2),
            "default_iterations": default["iterations"],
            "default_stop_reason": default["stop_reason"],
        }
    )
    figures.update(paper_time_to_result(image, args.device, args.paper_max_iter))
    size = args.set_size or 320
    figures["batch_set"] = f"{size}x{size} crops, {args.iterations} iterations"
    figures.update(
        batch_matrix(
            size,
            args.batch_sizes,
            args.iterations,
            args.device,
            default_segmenter(args.device).resolved_precision,
        )
    )
    print(json.dumps(figures))


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
    parser.add_argument(
        "--result-rounds", type=int, default=3, help="full default fits for the time to result"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--matrix",
        action="store_true",
        help="accelerator measurements instead: fp32/TF32/bf16 × eager/compiled per iteration, "
        "time to result (default and paper loop), images/s by batch size (one JSON object)",
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--max-side", type=int, help="downscale the benchmark image (dry runs)")
    parser.add_argument("--eager-only", action="store_true", help="--matrix without compiling")
    parser.add_argument(
        "--paper-max-iter", type=int, default=1000, help="T of --matrix's paper loop (dry runs)"
    )
    args = parser.parse_args()
    if args.matrix:
        gpu_main(args)
        return
    image = load_image(IMAGE)

    settings = {"compile": args.compile, "channels_last": args.channels_last}
    ours = Segmenter(stopping=ThresholdStopping(0), device=args.device, **settings)
    agreement = same_maths(image, ours)

    eager = Segmenter(stopping=ThresholdStopping(0), device=args.device)
    default = default_segmenter(args.device)
    default.stopping = ThresholdStopping(0)
    times: dict[str, list[float]] = {
        "reference": [],
        "ours": [],
        "ours_eager_fp32": [],
        "ours_default": [],
    }
    for _ in range(args.rounds):
        times["reference"] += reference_times(image, args.iterations, args.device)
        times["ours"] += our_times(ours, image, args.iterations)
        times["ours_eager_fp32"] += our_times(eager, image, args.iterations)
        times["ours_default"] += our_times(default, image, args.iterations)
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
        "seconds_per_iter_ours_eager_fp32": round(median["ours_eager_fp32"], 4),
        "seconds_per_iter_ours_default": round(median["ours_default"], 4),
        "default_precision": default.resolved_precision,
        "speedup": round(median["reference"] / median["ours"], 3),
        "speedup_eager_fp32": round(median["reference"] / median["ours_eager_fp32"], 3),
        "speedup_default": round(median["reference"] / median["ours_default"], 3),
        "silhouette_seconds": round(silhouette, 3),
        "silhouette_share": round(silhouette / (silhouette + 1000 * median["ours"]), 5),
        "peak_mem_reference_mb": peak_memory_mb("reference", 3, args.device),
        "peak_mem_ours_mb": peak_memory_mb("ours", 3, args.device, settings),
        "peak_mem_ours_default_mb": peak_memory_mb(
            "ours", 3, args.device, {"precision": default.precision}
        ),
    }
    result = time_to_result(image, args.device, args.result_rounds)
    reference_estimate = 1000 * median["reference"]
    figures.update(
        {
            "time_to_result_default_s": round(result["seconds"], 1),
            "default_iterations": result["iterations"],
            "default_stop_reason": result["stop_reason"],
            "time_to_result_reference_s_estimate_T1000": round(reference_estimate, 1),
            "time_to_result_ratio": round(reference_estimate / result["seconds"], 1),
        }
    )
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
