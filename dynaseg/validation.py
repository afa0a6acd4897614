"""Config checks that run before anything expensive, so that a mistake costs no compute.

Hydra already refuses an unknown option name (``backbone=foo``) and lists the valid ones. The
rest is checked here, each problem as one line that says what to change: values left unset
(``dataset.root=???``), the ranges the parts accept (α > 0, k_min ≤ k_max, T ≥ 1, …; the rules
live in the constructors, which are called here one part at a time so that the message names the
part), a dataset root that does not exist, the run's own keys, and whether a run directory that
already holds results may be continued (``resume=true``, with the same method and data).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dynaseg.backbones import PretrainedWeightsError
from dynaseg.data.base import DatasetError, check_max_side
from dynaseg.outputs import RUN

__all__ = ["ConfigError", "build", "check_config", "check_run_dir", "check_segment_config"]

PARTS = ("backbone", "weighting", "stopping")
"""Built once here to check their arguments: cheap (no fit; a pretrained backbone reads its
weights file, which also finds a missing file before the first image)."""
RESUME_KEYS = ("seed", "segmenter", "dataset", "metric", "max_pixels")
"""What a resumed run must share with the run it continues: everything that changes a
prediction or a score. ``dataset.limit`` may change (finish more images of the same set)."""
WHOLE_MESSAGES = (DatasetError, PretrainedWeightsError)
"""Errors whose message is written for the user (what is missing where, how to get it): kept
as they are; any other constructor error is shown on one line after the part's name."""


class ConfigError(ValueError):
    """A config mistake; the message says what is wrong and what to change (one line, except
    the step-by-step advice of a missing weights file)."""


def build(config: DictConfig, key: str, **kwargs: Any) -> Any:
    """``instantiate`` the node at ``key``, turning a constructor's error into a ConfigError.

    A partial (``_partial_: true``, e.g. the backbone factory) is also called once, so that its
    arguments are checked before the first image rather than during it.
    """
    node = OmegaConf.select(config, key)
    try:
        built = instantiate(node, **kwargs)
        if isinstance(node, DictConfig) and node.get("_partial_", False):
            built()
    except InstantiationException as error:
        raise config_error(key, error.__cause__ or error) from None
    except (ValueError, TypeError, *WHOLE_MESSAGES) as error:
        raise config_error(key, error) from None
    return built


def config_error(key: str, error: BaseException) -> ConfigError:
    """The ConfigError for a part that failed to build."""
    if isinstance(error, WHOLE_MESSAGES):
        return ConfigError(str(error))
    return ConfigError(f"{key}: {one_line(error)}")


def one_line(error: BaseException | str) -> str:
    """A message (or an exception's) on one line: PIL, decoders' and Hydra messages may span
    several; an exception without a message is named by its type."""
    text = " ".join(str(error).split())
    if not text and isinstance(error, BaseException):
        return type(error).__name__
    return text


def check_segment_config(config: DictConfig) -> None:
    """Raise :class:`ConfigError` on the first problem of the per-image settings, the part of a
    config that both entry points share (``conf/segment.yaml``): the CLI's options and a run's
    overrides are checked here alike.

    Example:
        >>> from dynaseg.config import compose_config
        >>> check_segment_config(compose_config("segment", ["max_side=1"]))
        Traceback (most recent call last):
        dynaseg.validation.ConfigError: max_side must be a whole number >= 2 or null, got 1
    """
    parts = used_parts(config)
    missing = sorted(
        key for part in (*parts, "segmenter") for key in OmegaConf.missing_keys(config[part])
    )
    if missing:
        raise ConfigError(
            f"{missing[0]} must be set (it has no default): add {missing[0]}=... to the command"
        )
    for part in (*parts, "segmenter"):
        build(config, part)
    try:
        check_max_side(config.get("max_side"))
    except ValueError as error:
        raise ConfigError(str(error)) from None
    max_pixels = config.get("max_pixels")
    if max_pixels is not None and (not whole(max_pixels) or max_pixels < 4):
        raise ConfigError(f"max_pixels must be a whole number >= 4 or null, got {max_pixels!r}")
    batch_size = config.get("batch_size", 1)
    if not whole(batch_size) or batch_size < 1:
        raise ConfigError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    refine = config.get("refine", 0)
    if not whole(refine) or refine < 0:
        raise ConfigError(f"refine must be a whole number >= 0, got {refine!r}")
    model = config.get("model")
    if model is not None and not Path(str(model)).is_file():
        raise ConfigError(f"model={model}: no such file (fit one with dynaseg fit --save)")
    reuse = [key for key in ("model", "fit_on", "warm_start") if config.get(key)]
    if reuse and "backbone" not in config.segmenter:
        raise ConfigError(f"{reuse[0]} needs a DynaSeg network to reuse: method=dynaseg")
    if model is not None and config.get("fit_on") is not None:
        raise ConfigError("model and fit_on both name the network to label with: give one")
    shared = config.get("fit_shared") or {}
    for key, least in (("iterations", 1), ("crop", 2), ("batch", 1)):
        value = shared.get(key, least)
        if not whole(value) or value < least:
            raise ConfigError(f"fit_shared.{key} must be a whole number >= {least}, got {value!r}")
    if config.get("warm_start", False) and (model is not None or batch_size != 1):
        raise ConfigError(
            "warm_start=true fits one image at a time from scratch: no model, batch 1"
        )


def used_parts(config: DictConfig) -> list[str]:
    """The parts the chosen method is built from: a baseline (``method=kmeans``) uses no
    backbone, weighting or stopping, so those are neither checked nor built for it."""
    return [part for part in PARTS if part in config.segmenter]


def whole(value: Any) -> bool:
    """Whether a config value is an int (a bool is not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_config(config: DictConfig) -> None:
    """Raise :class:`ConfigError` on the first problem of a run config.

    Example:
        >>> from dynaseg.config import compose_config
        >>> check_config(compose_config("run", ["weighting.alpha=0"]))
        Traceback (most recent call last):
        dynaseg.validation.ConfigError: weighting: alpha must be > 0, got 0
    """
    missing = sorted(
        key for part in ("dataset", "metric") for key in OmegaConf.missing_keys(config[part])
    )
    if missing:
        raise ConfigError(
            f"{missing[0]} must be set (it has no default): add {missing[0]}=... to the command"
        )
    check_segment_config(config)
    root = config.dataset.get("root")
    if root is not None and not Path(str(root)).expanduser().is_dir():
        what = "is not a directory" if Path(str(root)).expanduser().exists() else "does not exist"
        raise ConfigError(f"dataset.root={root} {what}")
    for key in ("num_workers", "save_overlays"):
        value = config.get(key, 0)
        if not whole(value) or value < 0:
            raise ConfigError(f"{key} must be a whole number >= 0, got {value!r}")
    for key in ("resume", "strict"):
        if not isinstance(config.get(key, False), bool):
            raise ConfigError(f"{key} must be true or false, got {config.get(key)!r}")


def check_run_dir(config: DictConfig, output_dir: Path) -> None:
    """Refuse to overwrite a run's results, and to resume a run with another method or data.

    Without ``resume=true`` a directory that holds per-image records is refused: finishing it
    silently would mix two runs, starting over would waste them. With ``resume=true`` the
    settings in :data:`RESUME_KEYS` must equal those of the saved ``config.yaml``.
    """
    done = RUN.records(output_dir)
    if not config.get("resume", False):
        if done:
            raise ConfigError(
                f"{output_dir} already holds the results of {len(done)} image(s) of an earlier "
                "run: add resume=true to finish that run, or choose another hydra.run.dir"
            )
        return
    saved_path = output_dir / "config.yaml"
    if not saved_path.is_file():
        return
    saved = OmegaConf.to_container(OmegaConf.load(saved_path))
    changes: list[str] = []
    for key in RESUME_KEYS:
        old, new = saved.get(key), to_plain(OmegaConf.select(config, key))
        if key == "dataset":
            old, new = without_limit(old), without_limit(new)
        changes += differences(key, old, new)
    if changes:
        shown = "; ".join(changes[:3]) + (
            f"; and {len(changes) - 3} more" if len(changes) > 3 else ""
        )
        raise ConfigError(
            f"resume=true, but the settings differ from the run in {output_dir} ({shown}): "
            "resume with the run's settings, or choose another hydra.run.dir"
        )


def to_plain(node: Any) -> Any:
    """A config node as plain, resolved Python values."""
    if OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


def without_limit(node: Any) -> Any:
    """A dataset config without ``limit``, which a resumed run may change."""
    if isinstance(node, dict):
        return {key: value for key, value in node.items() if key != "limit"}
    return node


def differences(key: str, old: Any, new: Any) -> list[str]:
    """``"key.sub: old → new"`` for every leaf that differs between two plain configs."""
    if isinstance(old, dict) and isinstance(new, dict):
        found: list[str] = []
        for sub in sorted(set(old) | set(new), key=str):
            found += differences(f"{key}.{sub}", old.get(sub), new.get(sub))
        return found
    return [] if old == new else [f"{key}: {old!r} → {new!r}"]
