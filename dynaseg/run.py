"""``python -m dynaseg.run +experiment=NAME [overrides]``: segment a dataset and score it.

Hydra composes ``conf/run.yaml`` (method, dataset, metric, logger, trainer); everything is built
with ``hydra.utils.instantiate`` before any compute, so a config error costs no time. Each run
directory gets ``config.yaml`` (resolved), ``predictions/<id>.png``, ``overlays/``,
``per_image.csv``, ``failures.csv`` and ``metrics.json``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from hydra.utils import instantiate
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

from dynaseg.config import config_dir, register_resolvers
from dynaseg.data.datamodule import SegmentationDataModule
from dynaseg.module import DynaSegModule
from dynaseg.outputs import atomic_write

log = logging.getLogger("dynaseg.run")
register_resolvers()


def run(config: DictConfig) -> dict[str, float]:
    """Build every part from the config, segment and score the dataset, return the scores."""
    output_dir = Path(config.paths.output_dir)
    segmenter = instantiate(config.segmenter)
    dataset = instantiate(config.dataset)
    metrics = {name: instantiate(node) for name, node in config.metric.items()}
    logger = instantiate(config.logger)
    trainer = instantiate(config.trainer, logger=logger)
    module = DynaSegModule(
        segmenter,
        metrics,
        config.seed,
        output_dir,
        save_overlays=config.save_overlays,
        run_name=config.run_name,
    )
    if trainer.is_global_zero:
        text = OmegaConf.to_yaml(config, resolve=True)
        atomic_write(output_dir / "config.yaml", lambda handle: handle.write(text.encode()))
        logger.log_hyperparams(OmegaConf.to_container(config, resolve=True))
    log.info("%s: %d images → %s", config.run_name, len(dataset), output_dir)
    try:
        trainer.test(module, datamodule=SegmentationDataModule(dataset, config.num_workers))
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
    scores = run(config)
    first = next((value for key, value in scores.items() if "/" in key), None)
    return first


if __name__ == "__main__":
    main()
