"""``dynaseg segment PATH... --out DIR``: segment your own images, no labels, no config files.

``dynaseg fit PATH... --save MODEL`` fits one network on several images; ``segment --model MODEL``
then labels others with it (:mod:`dynaseg.reuse`); ``dynaseg report DIR`` rebuilds a report.

The options are overrides of ``conf/segment.yaml``, the config the experiment framework starts
from too (``--weighting scf`` selects ``conf/weighting/scf.yaml``); an option not given leaves
that file's default. The images then take the same way as in ``python -m dynaseg.run``
(:mod:`dynaseg.pipeline`), written side by side in the flat layout
(:data:`dynaseg.outputs.FLAT`). One bad file never stops the batch: it is reported and listed in
``failures.csv``, the others are segmented, and the exit status is 1 when anything failed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from dynaseg.config import compose_config, options
from dynaseg.data.datamodule import SafeDataset
from dynaseg.data.folder import ImageFiles
from dynaseg.images import collect_inputs
from dynaseg.outputs import FAILURE_FIELDS, FLAT, write_csv
from dynaseg.pipeline import Pipeline, build_segmenter, readable_images, settings_of
from dynaseg.report import write_report
from dynaseg.reuse import fit_shared, save_model
from dynaseg.validation import ConfigError, check_segment_config

log = logging.getLogger("dynaseg")
KEYS = {
    "max_iter": "max_iter",
    "max_side": "max_side",
    "seed": "seed",
    "device": "device",
    "max_pixels": "max_pixels",
    "batch_size": "batch_size",
    "precision": "precision",
    "alpha": "weighting.alpha",
    "mu": "weighting.mu",
    "threshold": "stopping.threshold",
    "scribble_weight": "segmenter.scribble_weight",
    "model": "model",
    "refine": "refine",
    "iterations": "fit_shared.iterations",
    "crop": "fit_shared.crop",
    "batch": "fit_shared.batch",
}
"""Option → the config key it sets (``conf/segment.yaml`` holds the defaults)."""
GROUPS = ("backbone", "weighting", "stopping", "segments")


def build_parser() -> argparse.ArgumentParser:
    """The ``dynaseg`` argument parser (sub-commands ``segment``, ``fit`` and ``report``)."""
    parser = argparse.ArgumentParser(prog="dynaseg", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    report = commands.add_parser("report", help="(re)build report.html of a run or output folder")
    report.add_argument("folder", type=Path, help="a run directory, a --out folder, or a multirun")
    seg = image_command(commands, "segment", "segment images into <stem>_labels.png and friends")
    seg.add_argument("--out", required=True, type=Path, help="output folder")
    seg.add_argument("--stopping", choices=options("stopping"), help="[silhouette]")
    seg.add_argument("--threshold", type=int, help="q' threshold of --stopping threshold")
    seg.add_argument("--max-iter", type=int, help="T, the most iterations [300; --paper: 1000]")
    seg.add_argument("--batch-size", type=int, help="fit up to N same-size images together [1]")
    seg.add_argument("--compile", action="store_true", help="fuse each iteration (torch.compile)")
    seg.add_argument(
        "--paper",
        action="store_true",
        help="the paper's method exactly: its loop (no convergence stop, float32, T = 1000), "
        "zero padding (unless --backbone is given) and the labels as fitted",
    )
    seg.add_argument(
        "--segments",
        choices=options("segments"),
        help="from labels to segments [voted: superpixel vote, connected, specks merged]",
    )
    seg.add_argument(
        "--scribble",
        type=Path,
        help="strokes to follow (PNG: class ids, 255 = unmarked) for the one image given; in a "
        "folder, <stem>_scribble.png beside an image is taken by itself",
    )
    seg.add_argument("--scribble-weight", type=float, help="weight of the scribble term [5]")
    seg.add_argument(
        "--model", type=Path, help="label with a network from `dynaseg fit` (a forward pass each)"
    )
    seg.add_argument("--refine", type=int, help="with --model: N DynaSeg iterations per image [0]")
    seg.add_argument(
        "--warm-start",
        action="store_true",
        help="start each image's fit from the previous one's network (frames of a video)",
    )
    seg.add_argument("--resume", action="store_true", help="skip images whose outputs exist")
    seg.add_argument("--quiet", action="store_true", help="no progress bars")
    fit = image_command(
        commands, "fit", "fit one network on several images and save it (for segment --model)"
    )
    fit.add_argument("--save", required=True, type=Path, help="the model file (.safetensors)")
    fit.add_argument("--iterations", type=int, help="parameter updates [300]")
    fit.add_argument("--crop", type=int, help="side of the random crops [160]")
    fit.add_argument("--batch", type=int, help="crops per update [4]")
    fit.add_argument("--quiet", action="store_true", help="no progress bar")
    fit.set_defaults(stopping=None, paper=False, compile=False)
    return parser


def image_command(commands: Any, name: str, help: str) -> argparse.ArgumentParser:
    """A sub-command over image paths with the options that choose the method (``segment``,
    ``fit``); their defaults are conf/segment.yaml's."""
    parser = commands.add_parser(
        name, help=help, description="Defaults in brackets are those of conf/segment.yaml."
    )
    parser.add_argument("paths", nargs="+", help="image files, folders of images, or glob patterns")
    add_method_options(parser)
    return parser


def add_method_options(parser: argparse.ArgumentParser) -> None:
    """The options that choose the per-image method, shared by ``segment`` and ``fit``."""
    parser.add_argument("--backbone", choices=options("backbone"), help="[cnn_replicate]")
    parser.add_argument("--weighting", choices=options("weighting"), help="[fsf]")
    parser.add_argument("--alpha", type=float, help="α of fsf (μ = q'/α) or scf (μ = α/q')")
    parser.add_argument("--mu", type=float, help="μ of the fixed weighting")
    parser.add_argument("--max-side", type=int, help="downscale the long side to this for speed")
    parser.add_argument("--seed", type=int, help="[0]")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, … [auto: cuda if any]")
    parser.add_argument("--max-pixels", type=int, help="refuse larger fits (after --max-side)")
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        help="forward-pass precision [auto: bf16 where the hardware computes it natively]",
    )


def group_overrides(args: argparse.Namespace) -> list[str]:
    """The config groups the options choose (only those given)."""
    chosen = [
        f"{group}={getattr(args, group, None)}" for group in GROUPS if getattr(args, group, None)
    ]
    if args.paper:
        chosen += ["loop=paper"]
        chosen += [] if args.backbone else ["backbone=cnn"]
        chosen += [] if getattr(args, "segments", None) else ["segments=as_fitted"]
    return chosen


def config_overrides(args: argparse.Namespace) -> list[str]:
    """Hydra overrides for the options given; the others keep conf/segment.yaml's defaults."""
    overrides = group_overrides(args)
    for option, key in KEYS.items():
        if getattr(args, option, None) is not None:
            overrides.append(f"{key}={getattr(args, option)}")
    if args.compile:
        overrides.append("segmenter.compile=true")
    if getattr(args, "warm_start", False):
        overrides.append("warm_start=true")
    return overrides


def flag(key: str) -> str:
    """The option that sets a config key (``weighting.mu`` → ``--mu``)."""
    option = next((name for name, k in KEYS.items() if k == key), key)
    return "--" + option.replace("_", "-")


def segment_config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> DictConfig:
    """The checked config of a ``segment`` call; a mistake exits (status 2) before any compute."""
    chosen = compose_config("segment", group_overrides(args), return_hydra_config=True)
    for key in ("weighting.alpha", "weighting.mu", "stopping.threshold"):
        group, name = key.split(".")
        if getattr(args, name, None) is not None and name not in chosen[group]:
            choice = chosen.hydra.runtime.choices[group]
            accepted = ", ".join(flag(f"{group}.{k}") for k in chosen[group] if k != "_target_")
            parser.error(f"{flag(key)} does not apply to --{group} {choice} (it takes {accepted})")
    config = compose_config("segment", config_overrides(args))
    try:
        check_segment_config(config)
    except ConfigError as error:
        key = str(error).split(" ", 1)[0].split(":")[0]
        message = str(error)
        parser.error(message.replace(key, flag(key), 1) if key in KEYS.values() else message)
    return config


def segment_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run ``dynaseg segment``; returns the exit status."""
    config = segment_config(parser, args)
    try:
        segmenter, settings, segments = build_segmenter(config, config.max_side)
    except ConfigError as error:
        parser.error(str(error))
    paths, unmatched = collect_inputs(args.paths)
    files = ImageFiles(paths, config.max_side)
    if args.scribble is not None:
        if len(files.paths) != 1:
            parser.error(
                f"--scribble takes one image, got {len(files.paths)}; for many, put "
                "<stem>_scribble.png beside each image"
            )
        if not args.scribble.is_file():
            parser.error(f"--scribble {args.scribble}: no such file")
        files.scribbles = {next(iter(files.paths.values())): args.scribble}
    dataset = SafeDataset(files, config.max_pixels)
    pipeline = Pipeline(
        segmenter,
        args.out,
        FLAT,
        settings,
        batch_size=config.batch_size,
        resume=args.resume,
        progress=not args.quiet,
        segments=segments,
    )
    for message in unmatched:
        pipeline.fail(message.split(": ", 1)[0], message)
    start = time.perf_counter()
    with logging_redirect_tqdm():
        for index in tqdm(range(len(dataset)), desc="images", disable=args.quiet):
            pipeline.submit(dataset[index])
        pipeline.flush()
    seconds = time.perf_counter() - start
    done = len(pipeline.records) - pipeline.n_resumed
    summary = f"Segmented {done} image(s) into {args.out}/ in {seconds:.1f} s"
    if pipeline.n_resumed:
        summary += f"; skipped {pipeline.n_resumed} already done (--resume)"
    log.info(summary)
    write_csv(args.out / "failures.csv", pipeline.failures, FAILURE_FIELDS)
    log.info("report: %s", write_report(args.out))
    if pipeline.failures:
        lines = [failure["error"] for failure in pipeline.failures]
        log.error("%d input(s) failed:\n  %s", len(lines), "\n  ".join(lines))
        return 1
    return 0


def fit_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run ``dynaseg fit``: one network over all the readable images, saved; the exit status."""
    config = segment_config(parser, args)
    segmenter = instantiate(config.segmenter)
    images, failures = readable_images(args.paths, config.max_side, config.max_pixels)
    for message in failures:
        log.error("%s", message)
    if not images:
        log.error("no image to fit on")
        return 1
    start = time.perf_counter()
    shared = OmegaConf.to_container(config.fit_shared, resolve=True)
    with tqdm(total=shared["iterations"], desc="fit", disable=args.quiet) as bar:

        def progress(iteration: int, q: int, mu: float) -> None:
            bar.update(1)
            bar.set_postfix(q=q, mu=f"{mu:.3g}", refresh=False)

        net, history = fit_shared(segmenter, images, config.seed, **shared, on_iteration=progress)
    settings = settings_of(config, segmenter, config.max_side)
    settings.update(fit_shared=shared, fitted_on=len(images))
    save_model(args.save, net, settings)
    log.info(
        "Fitted one network on %d image(s) in %.1f s (q' %d at the last update) into %s",
        len(images),
        time.perf_counter() - start,
        history["q"][-1],
        args.save,
    )
    return 1 if failures else 0


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
    if args.command == "fit":
        return fit_command(parser, args)
    return segment_command(parser, args)


if __name__ == "__main__":
    sys.exit(main())
