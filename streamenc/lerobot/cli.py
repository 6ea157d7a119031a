"""The CLI: ``lerobot-record`` and ``lerobot-rollout`` with streamenc installed.

LeRobot's scripts open their dataset themselves, so these run the scripts' own entry
points inside ``installing()``, which makes the module that opens the dataset return
installed ones; everything else, flags included, is LeRobot's (console scripts
``streamenc-lerobot-record`` and ``streamenc-lerobot-rollout``).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from ..errors import ConfigError
from .hooks import installing
from .versions import check_version


def _run(script_module: str, dataset_module: str, entry: str, argv: list[str] | None) -> Any:
    check_version()
    from lerobot.utils.import_utils import register_third_party_plugins

    script = importlib.import_module(script_module)
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    with installing(importlib.import_module(dataset_module)):
        register_third_party_plugins()
        return getattr(script, entry)()


def record(argv: list[str] | None = None) -> Any:
    """``lerobot-record`` with streamenc installed on the dataset it records; same flags.

    ``--dataset.streaming_encoding`` is ignored: streamenc replaces both of LeRobot's
    encoding paths.
    """
    return _run("lerobot.scripts.lerobot_record", "lerobot.scripts.lerobot_record", "record", argv)


def rollout(argv: list[str] | None = None) -> Any:
    """``lerobot-rollout`` (lerobot 0.6.x) with streamenc installed on the dataset it records;
    same flags. Its sentry, highlight and DAgger modes force LeRobot's streaming encoding,
    which streamenc then stands in for."""
    try:
        import lerobot.rollout.context  # noqa: F401
    except ImportError:
        raise ConfigError("lerobot-rollout arrived in lerobot 0.6.0; this lerobot has none") from None
    return _run("lerobot.scripts.lerobot_rollout", "lerobot.rollout.context", "rollout", argv)


def main() -> None:
    """Console script ``streamenc-lerobot-record``."""
    record()


def main_rollout() -> None:
    """Console script ``streamenc-lerobot-rollout``."""
    rollout()
