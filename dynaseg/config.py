"""Where the Hydra configs live, and composing them outside ``@hydra.main``.

The top-level ``conf/`` of a source checkout is packaged into the wheel as ``dynaseg/conf``, so
the same configs are found after a plain ``pip install .`` and from an editable checkout.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

_PACKAGE = Path(__file__).resolve().parent


def config_dir() -> Path:
    """The config folder: inside the installed package, else the source checkout's ``conf/``."""
    for candidate in (_PACKAGE / "conf", _PACKAGE.parent / "conf"):
        if (candidate / "segment.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"no dynaseg configs next to {_PACKAGE}: the installation is broken")


def options(group: str) -> list[str]:
    """The option names of a config group (``weighting`` → ``["fixed", "fsf", "scf"]``)."""
    return sorted(path.stem for path in (config_dir() / group).glob("*.yaml"))


def compose_config(config_name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """Compose a config by name with Hydra overrides, as ``@hydra.main`` would."""
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose(config_name, overrides=list(overrides))
