"""``dynaseg segment PATH... --out DIR``: segment your own images, no labels, no config files.

The options map onto the same Hydra config groups as the experiment framework (``--weighting
scf`` selects ``conf/weighting/scf.yaml``), so the CLI and the experiments build the very same
Segmenter. One bad file never stops the batch: it is reported, the others are segmented, and the
exit status is 1 when anything failed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from dynaseg.config import compose_config, options
from dynaseg.data.base import resize_long_side
from dynaseg.engine import SegmentationResult, Segmenter, image_seed
from dynaseg.images import (
    DEFAULT_MAX_PIXELS,
    ImageReadError,
    collect_inputs,
    load_image,
    resize_labels,
)
from dynaseg.outputs import FAILURE_FIELDS, output_paths, write_csv, write_outputs
from dynaseg.report import write_report

log = logging.getLogger("dynaseg")


def build_parser() -> argparse.ArgumentParser:
    """The ``dynaseg`` argument parser (one sub-command, ``segment``)."""
    parser = argparse.ArgumentParser(prog="dynaseg", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    report = commands.add_parser("report", help="(re)build report.html of a run or output folder")
    report.add_argument("folder", type=Path, help="a run directory, a --out folder, or a multirun")
    seg = commands.add_parser("segment", help="segment images into <stem>_labels.png and friends")
    seg.add_argument("paths", nargs="+", help="image files, folders of images, or glob patterns")
    seg.add_argument("--out", required=True, type=Path, help="output folder")
    seg.add_argument("--backbone", default="cnn", choices=options("backbone"))
    seg.add_argument("--weighting", default="fsf", choices=options("weighting"))
    seg.add_argument("--alpha", type=float, help="α of fsf (μ = q'/α) or scf (μ = α/q')")
    seg.add_argument("--mu", type=float, help="μ of the fixed weighting")
    seg.add_argument("--stopping", default="silhouette", choices=options("stopping"))
    seg.add_argument("--threshold", type=int, help="q' threshold of --stopping threshold")
    seg.add_argument("--max-iter", type=int, default=1000, help="T, the most iterations")
    seg.add_argument("--max-side", type=int, help="downscale the long side to this for speed")
    seg.add_argument("--seed", type=int, default=0)
    seg.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, … (auto: cuda if any)")
    seg.add_argument(
        "--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="refuse larger inputs"
    )
    seg.add_argument(
        "--batch-size", type=int, default=1, help="fit up to N same-size images together"
    )
    seg.add_argument("--compile", action="store_true", help="fuse each iteration (torch.compile)")
    seg.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        help="forward-pass precision (default auto: bf16 where the hardware computes it natively)",
    )
    seg.add_argument(
        "--paper",
        action="store_true",
        help="the paper's loop exactly: no convergence stop, float32 (with the defaults: the "
        "silhouette threshold and T = 1000)",
    )
    seg.add_argument("--resume", action="store_true", help="skip images whose outputs exist")
    seg.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def config_overrides(args: argparse.Namespace) -> list[str]:
    """Hydra overrides equivalent to the command-line options."""
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    overrides = [
        f"backbone={args.backbone}",
        f"weighting={args.weighting}",
        f"stopping={args.stopping}",
        f"max_iter={args.max_iter}",
        f"seed={args.seed}",
        f"device={device}",
    ]
    for option, key in (("alpha", "weighting.alpha"), ("mu", "weighting.mu")):
        if getattr(args, option) is not None:
            overrides.append(f"{key}={getattr(args, option)}")
    if args.threshold is not None:
        overrides.append(f"stopping.threshold={args.threshold}")
    if args.compile:
        overrides.append("segmenter.compile=true")
    if args.paper:
        overrides.append("loop=paper")
    if args.precision is not None:
        overrides.append(f"precision={args.precision}")
    return overrides


def check_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse options that the chosen parts would silently ignore, before any compute."""
    config = compose_config("segment", [f"weighting={args.weighting}", f"stopping={args.stopping}"])
    for option, group in (("alpha", "weighting"), ("mu", "weighting"), ("threshold", "stopping")):
        if getattr(args, option) is not None and option not in config[group]:
            choice = getattr(args, group)
            accepted = ", ".join(f"--{key}" for key in config[group] if key != "_target_")
            parser.error(f"--{option} does not apply to --{group} {choice} (it takes {accepted})")
    if args.max_iter < 1:
        parser.error(f"--max-iter must be >= 1, got {args.max_iter}")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.max_side is not None and args.max_side < 2:
        parser.error(f"--max-side must be >= 2, got {args.max_side}")


def unique_stems(paths: Sequence[Path]) -> list[str]:
    """Output stems, suffixed ``-2``, ``-3``… where two inputs share a name."""
    seen: dict[str, int] = {}
    stems = []
    for path in paths:
        seen[path.stem] = seen.get(path.stem, 0) + 1
        stems.append(path.stem if seen[path.stem] == 1 else f"{path.stem}-{seen[path.stem]}")
    return stems


@dataclass
class Job:
    """One input on its way through the fit: the original image and the one the fit sees."""

    path: Path
    stem: str
    image: np.ndarray
    work: np.ndarray


class Session:
    """One ``dynaseg segment`` call: fits jobs (alone, or batched by size) and writes outputs."""

    def __init__(self, segmenter: Segmenter, args: argparse.Namespace, settings: dict) -> None:
        self.segmenter = segmenter
        self.args = args
        self.settings = settings
        self.pending: dict[tuple[int, ...], list[Job]] = {}
        self.failures: list[str] = []
        self.done = 0

    def fail(self, message: str) -> None:
        self.failures.append(message)
        log.error("%s", message)

    def submit(self, job: Job) -> None:
        """Fit now, or once ``--batch-size`` images of this size are waiting."""
        if self.args.batch_size == 1:
            self.run([job])
            return
        group = self.pending.setdefault(job.work.shape, [])
        group.append(job)
        if len(group) == self.args.batch_size:
            self.run(self.pending.pop(job.work.shape))

    def flush(self) -> None:
        """Fit the incomplete batches left at the end."""
        for shape in list(self.pending):
            self.run(self.pending.pop(shape))

    def run(self, jobs: list[Job]) -> None:
        seeds = [image_seed(self.args.seed, job.stem) for job in jobs]
        try:
            if len(jobs) == 1:
                results = [self.fit_with_progress(jobs[0], seeds[0])]
            else:
                results = self.segmenter.fit_many([job.work for job in jobs], seeds)
        except (FloatingPointError, RuntimeError, ValueError) as error:
            results = [error] * len(jobs)
        for job, seed, result in zip(jobs, seeds, results, strict=True):
            if isinstance(result, Exception):
                self.fail(f"{job.path}: {type(result).__name__}: {result}")
                continue
            try:
                self.write(job, seed, result)
            except OSError as error:
                self.fail(f"{job.path}: cannot write the outputs ({error})")

    def fit_with_progress(self, job: Job, seed: int) -> SegmentationResult:
        total = self.segmenter.max_iter + 1
        with tqdm(total=total, desc=job.stem, leave=False, disable=self.args.quiet) as bar:

            def progress(iteration: int, q: int, mu: float) -> None:
                bar.update(1)
                bar.set_postfix(q=q, mu=f"{mu:.3g}", refresh=False)

            return self.segmenter.fit(job.work, seed=seed, on_iteration=progress)

    def write(self, job: Job, seed: int, result: SegmentationResult) -> None:
        labels = result.labels
        if labels.shape != job.image.shape[:2]:
            labels = resize_labels(labels, job.image.shape[:2])
        record = {
            "input": str(job.path),
            "size": list(job.image.shape[:2]),
            "processed_size": list(job.work.shape[:2]),
            **result.summary(),
            "image_seed": seed,
            "settings": self.settings,
            "history": result.history,
        }
        write_outputs(self.args.out, job.stem, job.image, labels, record)
        self.done += 1
        log.info(
            "%s: %d clusters after %d iterations (%s) in %.1f s",
            job.path,
            record["n_clusters"],
            record["iterations"],
            record["stop_reason"],
            record["seconds"],
        )


def segment_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run ``dynaseg segment``; returns the exit status."""
    check_options(parser, args)
    config = compose_config("segment", config_overrides(args))
    segmenter: Segmenter = instantiate(config.segmenter)
    settings = OmegaConf.to_container(config, resolve=True)
    settings.pop("segmenter")
    settings.update(max_side=args.max_side, compile=args.compile, batch_size=args.batch_size)
    settings["precision"] = segmenter.resolved_precision

    paths, unmatched = collect_inputs(args.paths)
    session = Session(segmenter, args, settings)
    for message in unmatched:
        session.fail(message)
    skipped = 0
    start = time.perf_counter()
    with logging_redirect_tqdm():
        jobs = list(zip(paths, unique_stems(paths), strict=True))
        for path, stem in tqdm(jobs, desc="images", disable=args.quiet):
            if args.resume and all(p.is_file() for p in output_paths(args.out, stem)):
                skipped += 1
                continue
            try:
                image = load_image(path, args.max_pixels)
            except ImageReadError as error:
                session.fail(str(error))
                continue
            session.submit(Job(path, stem, image, resize_long_side(image, args.max_side)))
        session.flush()
    seconds = time.perf_counter() - start
    summary = f"Segmented {session.done} image(s) into {args.out}/ in {seconds:.1f} s"
    if skipped:
        summary += f"; skipped {skipped} already done (--resume)"
    log.info(summary)
    failures = [{"id": message.split(": ", 1)[0], "error": message} for message in session.failures]
    write_csv(args.out / "failures.csv", failures, FAILURE_FIELDS)
    log.info("report: %s", write_report(args.out))
    if session.failures:
        failures = session.failures
        log.error("%d input(s) failed:\n  %s", len(failures), "\n  ".join(failures))
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dynaseg`` console script."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "report":
        try:
            log.info("wrote %s", write_report(args.folder))
        except FileNotFoundError as error:
            log.error("%s", error)
            return 1
        return 0
    return segment_command(parser, args)


if __name__ == "__main__":
    sys.exit(main())
