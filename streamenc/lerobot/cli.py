"""The CLI: ``lerobot-record`` and ``lerobot-rollout`` with streamenc installed.

LeRobot's scripts open their dataset themselves, so these run the scripts' own entry
points inside ``installing()``, which makes the module that opens the dataset return
installed ones; everything else, flags included, is LeRobot's (console scripts
``streamenc-lerobot-record`` and ``streamenc-lerobot-rollout``).
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator
from typing import Any

from ..errors import ConfigError
from .installer import install, repair_if_needed
from .seams import dataset_root, writable
from .versions import check_version


@contextlib.contextmanager
def installing(module: Any) -> Iterator[type]:
    """While active, ``module.LeRobotDataset`` opens installed datasets: ``create()``,
    ``resume()`` (a classmethod from 0.5.1 on, building the instance with ``cls.__new__``)
    and the constructor (how 0.4.x resumes). A dataset a crash interrupted is repaired
    before LeRobot opens it (``--resume``). The original is put back afterwards."""
    base = module.LeRobotDataset

    class Installed(base):  # type: ignore[misc, valid-type]
        @classmethod
        def create(cls, *args: Any, **kwargs: Any) -> Any:
            return install(base.create(*args, **kwargs))

        def __new__(cls, *args: Any, **kwargs: Any) -> Any:
            _repair(args, kwargs)
            dataset = base(*args, **kwargs)
            return install(dataset) if writable(dataset) else dataset  # 0.6 opens read-only ones too

    def resume(cls: Any, *args: Any, **kwargs: Any) -> Any:
        _repair(args, kwargs)
        return install(base.resume(*args, **kwargs))

    if hasattr(base, "resume"):
        Installed.resume = classmethod(resume)  # type: ignore[attr-defined]
    module.LeRobotDataset = Installed
    try:
        yield Installed
    finally:
        module.LeRobotDataset = base


def _repair(args: tuple, kwargs: dict) -> None:
    """Repair the dataset ``LeRobotDataset(repo_id, root, ...)`` names, if a crash interrupted it."""
    repo_id = kwargs.get("repo_id", args[0] if args else None)
    if repo_id is not None:
        repair_if_needed(dataset_root(repo_id, kwargs.get("root", args[1] if len(args) > 1 else None)))


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
