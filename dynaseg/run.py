"""``python -m dynaseg.run +experiment=NAME [overrides]``: segment a dataset and score it.

Hydra composes ``conf/run.yaml`` (method, dataset, metric, logger, trainer). The config is checked
(:mod:`dynaseg.validation`) and everything is built with ``hydra.utils.instantiate`` before any
compute, so a config error costs no time and reads as one line (exit status 2). Each run
directory gets ``config.yaml`` (resolved), each image's files in the run layout
(:data:`dynaseg.outputs.RUN`: predictions, records, overlays, report thumbnails), ``per_image.csv``,
``failures.csv``, ``metrics.json`` and ``report.html``. What happens to one image is
:mod:`dynaseg.pipeline`'s, exactly as for ``dynaseg segment``.

A killed run is finished with ``resume=true hydra.run.dir=<its directory>``: images whose record
exists are read back, the others are segmented, and the scores equal an uninterrupted run's. An
image that cannot be used (unreadable, too large, non-finite loss, …) is listed in failures.csv
and the run goes on; ``strict=true`` stops at the first one instead (exit status 1).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import hydra
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

from dynaseg.config import config_dir, register_resolvers
from dynaseg.data.datamodule import SegmentationDataModule
from dynaseg.module import DynaSegModule
from dynaseg.outputs import RUN, atomic_write
from dynaseg.pipeline import ImageFailure, build_segmenter
from dynaseg.validation import ConfigError, build, check_config, check_run_dir

log = logging.getLogger("dynaseg.run")
register_resolvers()


def remove_temporaries(output_dir: Path) -> None:
    """Delete the temporary files a killed run left behind (never a file under a final name)."""
    for folder in RUN.folders(output_dir):
        for path in folder.glob(".*.tmp"):
            path.unlink(missing_ok=True)


def run(config: DictConfig) -> dict[str, float]:
    """Build every part from the config, segment and score the dataset, return the scores.

    Raises:
        ConfigError: a config mistake, found before any compute.
        ImageFailure: an image failed and ``strict`` is set.
    """
    check_config(config)
    output_dir = Path(config.paths.output_dir)
    check_run_dir(config, output_dir)
    dataset = build(config, "dataset")
    segmenter, settings, segments = build_segmenter(config, getattr(dataset, "max_side", None))
    metrics = {name: build(config, f"metric.{name}") for name in config.metric}
    logger = build(config, "logger")
    trainer = build(config, "trainer", logger=logger)
    module = DynaSegModule(
        segmenter,
        metrics,
        settings,
        output_dir,
        save_overlays=config.save_overlays,
        run_name=config.run_name,
        resume=config.resume,
        strict=config.strict,
        batch_size=config.batch_size,
        segments=segments,
    )
    if trainer.is_global_zero:
        remove_temporaries(output_dir)
        text = OmegaConf.to_yaml(config, resolve=True)
        atomic_write(output_dir / "config.yaml", lambda handle: handle.write(text.encode()))
        logger.log_hyperparams(OmegaConf.to_container(config, resolve=True))
    log.info("%s: %d images → %s", config.run_name, len(dataset), output_dir)
    datamodule = SegmentationDataModule(dataset, config.num_workers, config.max_pixels)
    try:
        trainer.test(module, datamodule=datamodule)
    finally:
        if isinstance(logger, WandbLogger):
            import wandb

            wandb.finish()
    if trainer.is_global_zero:
        print(json.dumps(module.summary, indent=2))  # noqa: T201 - the run's result, for the user
    return module.summary


@hydra.main(config_path=str(config_dir()), config_name="run", version_base="1.3")
def main(config: DictConfig) -> float | None:
    """Hydra entry point; returns the first score so that sweepers can optimise it."""
    try:
        scores = run(config)
    except ConfigError as error:
        log.error("config error: %s", error)
        sys.exit(2)
    except ImageFailure as error:
        log.error("stopped at the first failed image (strict=true): %s", error)
        sys.exit(1)
    first = next((value for key, value in scores.items() if "/" in key), None)
    return first


if __name__ == "__main__":
    main()
