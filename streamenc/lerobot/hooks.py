"""The monkeypatches: what streamenc changes in LeRobot besides the encoder at its hook.

LeRobot has no hook for these, so they replace functions and methods, each as narrowly
as it can: the installed dataset's ``add_frame`` (frames checked before LeRobot buffers
them) and ``save_episode`` (the encoders flush while it writes the parquet, and its chunk
remux becomes an in-place append), its ``start_image_writer`` (a no-op when nothing would
go through the writer), its ``finalize`` (the session's journal goes once LeRobot's files
are complete), the parquet writer its save path writes rows with (a subclass that hands
each table to the journal too), and, for the console scripts, a script module's
``LeRobotDataset`` (``installing``).
"""

from __future__ import annotations

import contextvars
import importlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from .. import chunks
from ..errors import DiskFull, WriteError, is_disk_full
from .encoder import StreamencVideoEncoder
from .journal import Journal
from .seams import Seams

log = logging.getLogger("streamenc")

# The dataset whose save_episode is running, for the append hook below.
_saving: contextvars.ContextVar[Any] = contextvars.ContextVar("streamenc_saving", default=None)
# The journal of the dataset whose save_episode is running, for the parquet tap below.
_journal: contextvars.ContextVar[Journal | None] = contextvars.ContextVar("streamenc_journal", default=None)
# Where LeRobot's save path calls concatenate_video_files: 0.6.x, then 0.4.x and 0.5.x
_SAVE_MODULES = ("lerobot.datasets.dataset_writer", "lerobot.datasets.lerobot_dataset")


def wrap_add_frame(dataset: Any, encoder: StreamencVideoEncoder) -> None:
    """``dataset.add_frame`` checks every video frame first: a bad one raises FrameError
    before LeRobot's episode buffer has changed, so it records nothing for any key."""
    lerobot_add_frame = dataset.add_frame

    def add_frame(frame: dict) -> None:
        encoder.check(frame)
        lerobot_add_frame(frame)

    add_frame.__doc__ = lerobot_add_frame.__doc__
    dataset.add_frame = add_frame


def wrap_save_episode(dataset: Any, encoder: StreamencVideoEncoder, journal: Journal | None = None) -> None:
    """``dataset.save_episode`` seals the episode, so the encoders flush while LeRobot writes
    the parquet and stats, and runs with the append hook (``_hook_appends``) on. When it
    has returned, the episode goes into the session's journal (durable: a crash from then
    on loses nothing of it)."""
    lerobot_save_episode = dataset.save_episode
    _hook_appends()
    if journal is not None:
        _tap_parquet_writers()

    def save_episode(*args: Any, **kwargs: Any) -> None:
        encoder.seal()
        if journal is not None:
            journal.rows.clear()  # what an earlier save that raised had written is not this episode's
        token, tap = _saving.set(dataset), _journal.set(journal)
        try:
            lerobot_save_episode(*args, **kwargs)
        finally:
            _saving.reset(token)
            _journal.reset(tap)
        if journal is not None:
            _commit(dataset, journal)

    save_episode.__doc__ = lerobot_save_episode.__doc__
    dataset.save_episode = save_episode


def _commit(dataset: Any, journal: Journal) -> None:
    meta_row = dataset.meta.latest_episode
    index = meta_row["episode_index"]
    try:
        journal.commit(meta_row, list(dataset.meta.video_keys))
    except OSError as e:
        what = f"episode {index} is in LeRobot's files but not yet crash-safe (its journal entry could not be written)"
        if is_disk_full(e):
            raise DiskFull(f"{journal.dir} ({what})", 0) from e
        raise WriteError(e.errno, f"{what}: {e}") from e


def wrap_finalize(dataset: Any, journal: Journal | None) -> None:
    """``dataset.finalize`` leaves every chunk file an ordinary MP4, as LeRobot's own are
    (``chunks.finish``: the appendable layout's index slots and a one-episode file's
    fragments go), then removes the session's journal once LeRobot's own files are
    complete (its parquet footers written, its metadata buffer flushed)."""
    lerobot_finalize = dataset.finalize

    def finalize(*args: Any, **kwargs: Any) -> Any:
        result = lerobot_finalize(*args, **kwargs)
        try:
            finished = chunks.finish_all(Path(dataset.root) / "videos")
        except OSError as e:  # the dataset is whole, its files readable; the journal stays for a repair
            if is_disk_full(e):
                raise DiskFull(f"{dataset.root}/videos (the chunk files stay appendable: `streamenc repair`)", 0) from e
            raise
        if finished:
            log.info("streamenc: %d chunk files made ordinary MP4s (index first, no fragments)", len(finished))
        if journal is not None:
            journal.end()
        return result

    finalize.__doc__ = lerobot_finalize.__doc__
    dataset.finalize = finalize


def _tap_parquet_writers() -> None:
    """LeRobot's save path writes an episode's rows with ``pq.ParquetWriter``: in the
    modules it does so from, ``pq`` becomes a view of pyarrow.parquet whose ParquetWriter
    also hands each table it writes to the journal of the dataset being saved."""
    import pyarrow.parquet as pq

    class TappedParquetWriter(pq.ParquetWriter):  # type: ignore[misc]
        def write_table(self, table: Any, *args: Any, **kwargs: Any) -> None:
            super().write_table(table, *args, **kwargs)
            journal = _journal.get()
            if journal is not None:
                journal.tap(self.where, table)

    class Parquet:
        """pyarrow.parquet, but for its ParquetWriter."""

        ParquetWriter = TappedParquetWriter
        _streamenc = True

        def __getattr__(self, name: str) -> Any:
            return getattr(pq, name)

    for name in _SAVE_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if getattr(module, "pq", None) is pq:
            module.pq = Parquet()


def _hook_appends() -> None:
    """Make LeRobot's "chunk file + this episode -> chunk file" remux an in-place append
    (``chunks.append``) while an installed dataset saves an episode; every other use of
    ``concatenate_video_files`` (merging datasets, editing them, datasets without
    streamenc) and whatever ``append`` declines goes to LeRobot's own function."""
    for name in _SAVE_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        original = getattr(module, "concatenate_video_files", None)
        if original is None or getattr(original, "_streamenc", False):
            continue
        module.concatenate_video_files = _appending(original)


def _appending(original: Any) -> Any:
    def concatenate_video_files(input_video_paths: list, output_video_path: Any, *args: Any, **kwargs: Any) -> Any:
        dataset = _saving.get()
        paths = [Path(p) for p in input_video_paths]
        if dataset is not None and len(paths) == 2 and Path(output_video_path) == paths[0]:
            key = paths[0].parent.parent.name  # videos/{key}/chunk-NNN/file-NNN.mp4
            try:
                chunks.append(paths[0], paths[1], keep_s=_recorded_end(dataset, key))
                return None
            except chunks.Unsupported as e:
                log.info("streamenc: %s: LeRobot's full remux (%s)", paths[0], e)
        return original(input_video_paths, output_video_path, *args, **kwargs)

    concatenate_video_files._streamenc = True  # type: ignore[attr-defined]
    concatenate_video_files.__doc__ = original.__doc__
    return concatenate_video_files


def _recorded_end(dataset: Any, key: str) -> float | None:
    """Where the dataset's metadata says ``key``'s current chunk file ends (seconds)."""
    latest = getattr(dataset.meta, "latest_episode", None)
    try:
        value = latest[f"videos/{key}/to_timestamp"]
    except (TypeError, KeyError):
        return None
    return float(value[0] if isinstance(value, (list, tuple, np.ndarray)) else value)


def without_image_writer(seams: Seams) -> None:
    """Stop the dataset's image writer and make ``start_image_writer`` a no-op: for a dataset
    without image features, whose video frames no longer go through it."""
    seams.owner.stop_image_writer()
    seams.owner.start_image_writer = _image_writer_not_needed
    if seams.owner is not seams.dataset and hasattr(seams.dataset, "start_image_writer"):
        seams.dataset.start_image_writer = _image_writer_not_needed


def _image_writer_not_needed(*args: Any, **kwargs: Any) -> None:
    """Replaces start_image_writer on an installed dataset without image features:
    lerobot-record starts one after opening a dataset, and it would only idle."""
    log.debug("streamenc: image writer not started; video frames go to streamenc")
