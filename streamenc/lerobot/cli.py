"""The CLI: ``lerobot-record`` and ``lerobot-rollout`` with streamenc installed.

LeRobot's scripts open their dataset themselves, so these run the scripts' own entry
points inside ``installing()``, which makes the module that opens the dataset return
installed ones; everything else, flags included, is LeRobot's (console scripts
``streamenc-lerobot-record`` and ``streamenc-lerobot-rollout``). ``--help`` prints what
streamenc changes first, before LeRobot is imported, then the script's own help.
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
from .versions import UNTESTED_ENV, check_version


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


HELP = """\
{name}: {script} with streamenc recording the dataset's videos.

What changes: each camera's frames go through a shared-memory ring to an encoder
process of its own while you record, so there are no PNGs and save_episode waits only
for the last few frames; episodes are appended to LeRobot's chunk files in place. The
dataset, its files and every flag below are LeRobot's.
  --dataset.streaming_encoding has no effect: streamenc replaces both of LeRobot's
    encoding paths (nor has --dataset.encoder_queue_maxsize, its streaming encoder's).
  The encoder flags are honoured: --dataset.vcodec (lerobot 0.4.x, 0.5.x) or
    --dataset.rgb_encoder.* and --dataset.depth_encoder.* (0.6.x), and
    --dataset.encoder_threads.

streamenc's options: this command adds no flags. {untested}=1 tries a
  lerobot outside 0.4.x to 0.6.x. The rest (overflow, the encoders' scheduling, the
  depth dtype) are options of streamenc.lerobot.install() in your own record loop.
  `streamenc probe` shows the encoders that work here and /dev/shm's size;
  `streamenc clean` removes what a killed recording left in /dev/shm.

After a crash (kill -9, a power cut): --resume=true repairs the dataset before LeRobot
  opens it; every episode whose save returned is kept. By hand: `streamenc repair ROOT`.

Docs: docs/lerobot.md in streamenc's source (what differs from LeRobot's own recording,
  resume, depth), docs/tuning.md (a busy machine); `python -m pydoc streamenc.lerobot`.

{script}'s own help follows.
"""


def _help_first(name: str, script: str, argv: list[str] | None) -> None:
    """On --help, streamenc's part first, before LeRobot is imported (which takes a while)."""
    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in args):
        print(HELP.format(name=name, script=script, untested=UNTESTED_ENV), flush=True)


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
    _help_first("streamenc-lerobot-record", "lerobot-record", argv)
    return _run("lerobot.scripts.lerobot_record", "lerobot.scripts.lerobot_record", "record", argv)


def rollout(argv: list[str] | None = None) -> Any:
    """``lerobot-rollout`` (lerobot 0.6.x) with streamenc installed on the dataset it records;
    same flags. Its sentry, highlight and DAgger modes force LeRobot's streaming encoding,
    which streamenc then stands in for."""
    _help_first("streamenc-lerobot-rollout", "lerobot-rollout", argv)
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
