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
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from dynaseg.config import compose_config, options
from dynaseg.data.base import resize_long_side
from dynaseg.engine import Segmenter, image_seed
from dynaseg.images import (
    DEFAULT_MAX_PIXELS,
    ImageReadError,
    collect_inputs,
    load_image,
    resize_labels,
)
from dynaseg.outputs import output_paths, write_outputs

log = logging.getLogger("dynaseg")


def build_parser() -> argparse.ArgumentParser:
    """The ``dynaseg`` argument parser (one sub-command, ``segment``)."""
    parser = argparse.ArgumentParser(prog="dynaseg", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
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


def segment_one(
    segmenter: Segmenter,
    path: Path,
    stem: str,
    out: Path,
    args: argparse.Namespace,
    settings: dict[str, Any],
    quiet: bool,
) -> dict[str, Any]:
    """Segment one file and write its outputs; returns the JSON record."""
    image = load_image(path, args.max_pixels)
    work = resize_long_side(image, args.max_side)
    seed = image_seed(args.seed, stem)
    with tqdm(total=segmenter.max_iter + 1, desc=stem, leave=False, disable=quiet) as bar:

        def progress(iteration: int, q: int, mu: float) -> None:
            bar.update(1)
            bar.set_postfix(q=q, mu=f"{mu:.3g}", refresh=False)

        result = segmenter.fit(work, seed=seed, on_iteration=progress)
    labels = result.labels
    if labels.shape != image.shape[:2]:
        labels = resize_labels(labels, image.shape[:2])
    record = {
        "input": str(path),
        "size": list(image.shape[:2]),
        "processed_size": list(work.shape[:2]),
        **result.summary(),
        "image_seed": seed,
        "settings": settings,
        "history": result.history,
    }
    write_outputs(out, stem, image, labels, record)
    return record


def segment_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run ``dynaseg segment``; returns the exit status."""
    check_options(parser, args)
    config = compose_config("segment", config_overrides(args))
    segmenter: Segmenter = instantiate(config.segmenter)
    settings = OmegaConf.to_container(config, resolve=True)
    settings.pop("segmenter")
    settings["max_side"] = args.max_side

    paths, failures = collect_inputs(args.paths)
    for message in failures:
        log.error(message)
    done = skipped = 0
    start = time.perf_counter()
    with logging_redirect_tqdm():
        for path, stem in tqdm(
            list(zip(paths, unique_stems(paths), strict=True)), desc="images", disable=args.quiet
        ):
            if args.resume and all(p.is_file() for p in output_paths(args.out, stem)):
                skipped += 1
                continue
            try:
                record = segment_one(segmenter, path, stem, args.out, args, settings, args.quiet)
            except ImageReadError as error:
                failures.append(str(error))
                log.error("%s", error)
                continue
            except (FloatingPointError, RuntimeError, ValueError, OSError) as error:
                failures.append(f"{path}: {type(error).__name__}: {error}")
                log.error("%s", failures[-1])
                continue
            done += 1
            log.info(
                "%s: %d clusters after %d iterations (%s) in %.1f s",
                path,
                record["n_clusters"],
                record["iterations"],
                record["stop_reason"],
                record["seconds"],
            )
    seconds = time.perf_counter() - start
    summary = f"Segmented {done} image(s) into {args.out}/ in {seconds:.1f} s"
    if skipped:
        summary += f"; skipped {skipped} already done (--resume)"
    log.info(summary)
    if failures:
        log.error("%d input(s) failed:\n  %s", len(failures), "\n  ".join(failures))
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dynaseg`` console script."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    parser = build_parser()
    args = parser.parse_args(argv)
    return segment_command(parser, args)


if __name__ == "__main__":
    sys.exit(main())
