"""The journal: one durable file per saved episode, so that a crash loses no saved episode.

LeRobot writes a session's rows through a parquet writer whose footer comes at
``finalize()``, and buffers episode metadata until then (10 episodes by default): a kill
before that leaves files no reader opens, and every episode of the session is lost. The
videos are not the problem (streamenc's chunk files stay readable at every instant).

So when ``save_episode`` has returned, the episode is written once more, durably, beside
the dataset, in ``<root>/.streamenc/journal/episode-NNNNNN.parquet``: its rows exactly as
LeRobot handed them to its parquet writer, and, in that file's schema metadata, its
metadata row (as LeRobot buffers it) and ``info.json``, ``stats.json`` and
``tasks.parquet`` as they stood after the save. The file is written under a temporary
name, synced and renamed into place: an episode is in the journal entirely or not at all.
``base.json``, written when the session starts, holds the same three files and the list
of the dataset's files then. ``finalize()`` removes the journal (``retire``) once LeRobot's
own files are durable (``sync_dataset``: LeRobot writes them without syncing): they hold
everything from then on. ``recovery.repair`` rebuilds a dataset from it.

Only the rows are written twice (a few kB per episode; more where image features embed
their PNGs in the rows): LeRobot's open file holds them in a form nothing reads until
finalize. The video, which is most of the bytes, is not.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .. import liveness
from ..parts import fsync
from .partial import PartialRows, rows_file
from .report import Report

JOURNAL = Path(".streamenc") / "journal"
RETIRED = Path(".streamenc") / "retired"  # a journal on its way out: no longer a journal
BASE = "base.json"
VERSION = 1
# LeRobot's v3.0 layout (the same in 0.4.x, 0.5.x and 0.6.x)
INFO, STATS, TASKS = "meta/info.json", "meta/stats.json", "meta/tasks.parquet"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
TRACKED = ("data", "meta", "videos")  # the directories whose files a session may add
KEY = b"streamenc.episode"  # the schema-metadata key of an episode's record
META_KEY = b"streamenc.meta"  # its metadata row, as Arrow IPC


def episode_file(root: Path, index: int) -> Path:
    return Path(root) / JOURNAL / f"episode-{index:06d}.parquet"


def files_of(root: Path) -> list[str]:
    """The dataset's files (relative paths) under data/, meta/ and videos/."""
    root = Path(root)
    out = []
    for top in TRACKED:
        out += [p.relative_to(root).as_posix() for p in (root / top).rglob("*") if p.is_file()]
    return sorted(out)


def _snapshot(root: Path) -> dict[str, str | None]:
    """info.json and stats.json as text, tasks.parquet as base64 (None where missing)."""

    def read(rel: str) -> bytes | None:
        try:
            return (root / rel).read_bytes()
        except FileNotFoundError:
            return None

    info, stats, tasks = read(INFO), read(STATS), read(TASKS)
    return {
        "info": None if info is None else info.decode(),
        "stats": None if stats is None else stats.decode(),
        "tasks": None if tasks is None else base64.b64encode(tasks).decode(),
    }


def sync_dataset(root: Path) -> None:
    """Make LeRobot's files durable before the journal that stands in for them goes:
    LeRobot writes its parquet files and metadata without syncing them, so after a power
    cut the journal's removal could be on disk and they not. Every file under data/ and
    meta/ (a handful), and every directory of the layout, videos/ included."""
    root = Path(root)
    for top in TRACKED:
        base = root / top
        if not base.is_dir():
            continue
        for p in sorted(base.rglob("*"), reverse=True):  # a directory after what it holds
            if p.is_dir() or top != "videos":
                fsync(p)
        fsync(base)
    fsync(root)


def retire(root: Path) -> None:
    """Remove the journal in one step that a crash cannot leave half done: it is renamed
    out of the way (and that synced) before its files go, so an interrupted removal never
    leaves a journal missing its first episodes, which a repair would take for a session
    that saved fewer."""
    root = Path(root)
    journal, retired = root / JOURNAL, root / RETIRED
    shutil.rmtree(retired, ignore_errors=True)  # one an earlier removal left
    if journal.is_dir():
        os.replace(journal, retired)
        fsync(retired.parent)
    shutil.rmtree(retired, ignore_errors=True)


INTERRUPTED = "interrupted"  # in the journal: the interrupted episode's video directories


def set_aside(root: Path, directories: list[Path]) -> list[Path]:
    """Move the interrupted episode's video directories into the journal (one rename
    each), so that they go with it in one step, and a repair run again still finds them;
    returns all that are there."""
    aside = root / JOURNAL / INTERRUPTED
    if directories:
        aside.mkdir(exist_ok=True)
        for d in directories:
            os.replace(d, aside / d.name)
        fsync(aside)
        fsync(root)
    return sorted(aside.iterdir()) if aside.is_dir() else []


@contextlib.contextmanager
def exclusive(root: Path, wait_s: float) -> Iterator[Report | None]:
    """Hold the journal (an exclusive flock on its directory) while repairing; a repair
    that waited for another finds the journal gone, or a new session's (None: go on)."""
    journal = root / JOURNAL
    report = Report(str(root))
    try:
        fd = os.open(journal, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        yield None
        return
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    report.state = "damaged"
                    report.problems.append(f"another repair of it has run for {wait_s:.0f} s; try again later")
                    yield report
                    return
                time.sleep(0.1)
        yield None
    finally:
        os.close(fd)


def _write_durably(path: Path, write: Any) -> None:
    """``write(tmp)``, then sync, rename over ``path`` and sync the directory."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    fsync(tmp)
    os.replace(tmp, path)
    fsync(path.parent)


def meta_row_table(row: dict[str, Any]) -> Any:
    """One episode's metadata row as the one-row table LeRobot's buffer flush makes of it
    (``_flush_metadata_buffer``: list values unwrapped, numpy arrays as lists)."""
    import pyarrow as pa

    columns = {}
    for key, value in row.items():
        val = value[0] if isinstance(value, list) else value
        columns[key] = [val.tolist() if isinstance(val, np.ndarray) else val]
    return pa.Table.from_pydict(columns)


class Journal:
    """The journal of one recording session on one dataset root."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.dir = self.root / JOURNAL
        self.rows: list[Any] = []  # the data tables LeRobot wrote during the save now running
        self.partial: PartialRows | None = None
        self.synced_dirs: set[Path] = set()  # video directories whose entries are durable already

    @classmethod
    def begin(cls, root: Path, episodes: int, buffer: Any = None, keys: list[str] | None = None) -> Journal:
        """Start a session's journal (``recovery`` has cleaned up any earlier one); with
        ``buffer`` (a function: LeRobot's episode buffer now), the open episode's ``keys``
        are kept durable too, by a thread (``partial.PartialRows``)."""
        journal = cls(root)
        shutil.rmtree(journal.root / RETIRED, ignore_errors=True)
        journal.dir.mkdir(parents=True, exist_ok=True)
        fsync(journal.dir.parent)  # the new directories themselves, in their parents
        fsync(journal.root)
        pid = os.getpid()
        base = {
            "version": VERSION,
            "episodes": int(episodes),
            "pid": pid,
            "pid_start": liveness.start_time(pid),
            "started": time.time(),
            "files": files_of(journal.root),
            "root_entries": sorted(p.name for p in journal.root.iterdir()),
            **_snapshot(journal.root),
        }
        _write_durably(journal.dir / BASE, lambda tmp: tmp.write_text(json.dumps(base)))
        if buffer is not None:
            journal.partial = PartialRows(journal.dir, buffer, list(keys or ()))
            journal.partial.start()
        return journal

    def tap(self, path: Any, table: Any) -> None:
        """A table LeRobot's save path wrote through a parquet writer (hooks.py)."""
        if Path(str(path)).resolve().is_relative_to((self.root / "data").resolve()):
            self.rows.append(table)

    def commit(self, meta_row: dict[str, Any], video_keys: list[str]) -> None:
        """The episode ``save_episode`` just saved, durable: its rows, metadata row and
        the metadata files in one file, renamed into place; its video files synced."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows, self.rows = self.rows, []
        if len(rows) != 1:
            raise RuntimeError(f"expected one data table from save_episode, LeRobot wrote {len(rows)}")
        index = int(_scalar(meta_row["episode_index"]))
        info = json.loads((self.root / INFO).read_text())
        record = {"version": VERSION, "episode_index": index, **_snapshot(self.root)}
        sink = pa.BufferOutputStream()
        meta = meta_row_table(meta_row)
        with pa.ipc.new_stream(sink, meta.schema) as w:
            w.write_table(meta)
        table = rows[0]
        kept = dict(table.schema.metadata or {})
        kept[KEY] = json.dumps(record).encode()
        kept[META_KEY] = sink.getvalue().to_pybytes()
        table = table.replace_schema_metadata(kept)
        for key in video_keys:  # LeRobot moved the episode's MP4 in by a rename: sync its directory
            video = self.root / info["video_path"].format(
                video_key=key,
                chunk_index=int(_scalar(meta_row[f"videos/{key}/chunk_index"])),
                file_index=int(_scalar(meta_row[f"videos/{key}/file_index"])),
            )
            fsync(video)
            fsync(video.parent)
            if video.parent not in self.synced_dirs:  # a chunk directory new to the session: its
                for d in video.parent.parents:  # entry, and those of any new directory above it
                    fsync(d)
                    if d == self.root:
                        break
                self.synced_dirs.add(video.parent)
        _write_durably(episode_file(self.root, index), lambda tmp: pq.write_table(table, tmp))
        rows_file(self.dir, index).unlink(missing_ok=True)  # its rows are in the entry now

    def end(self) -> None:
        """The session finished cleanly (finalize): LeRobot's files hold it all now."""
        if self.partial is not None:
            self.partial.stop()
        sync_dataset(self.root)
        retire(self.root)
        with contextlib.suppress(OSError):
            self.dir.parent.rmdir()  # .streamenc, if nothing else is in it


def _scalar(value: Any) -> Any:
    while isinstance(value, (list, tuple, np.ndarray)):
        value = value[0]
    return value.item() if isinstance(value, np.generic) else value
