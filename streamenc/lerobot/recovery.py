"""Recovery: a dataset a crash interrupted, made whole again from its journal.

``repair(root)`` reads the session's journal (``journal.py``) and writes what LeRobot
would have written at ``finalize()`` for the episodes whose ``save_episode`` returned:
each data file of the session (one row group per episode, as LeRobot writes them), each
episode-metadata file, and ``info.json``, ``stats.json`` and ``tasks.parquet`` as they
stood after the last saved episode. Each file is written under a temporary name, synced
and renamed; the journal goes once all of it is durable, so a repair interrupted in its
turn runs again. A repair that cannot restore everything keeps the journal.
Video chunk files are cut back to the saved episodes (``chunks.trim``); the episode that
was being recorded is dropped, with whatever the session added for it (a file LeRobot had
begun, temporary directories, spill files), so the episode indices have no gap. The
result is an ordinary v3.0 dataset, and a second repair finds nothing to do.

A dataset without a journal (recorded by LeRobot alone, or already clean) is only read:
a clean one is left byte for byte as it is; an unclean one gets an honest report of what
can be read (videos whose frames decode) and what cannot (rows in a parquet file that has
no footer). Nothing here imports LeRobot: pyarrow and PyAV read and write the files.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import chunks, liveness, spill
from ..errors import WriteError, is_disk_full
from ..parts import fsync
from . import health
from .journal import (
    BASE,
    EPISODES_PATH,
    INFO,
    INTERRUPTED,
    JOURNAL,
    KEY,
    META_KEY,
    STATS,
    TASKS,
    TRACKED,
    exclusive,
    files_of,
    retire,
    set_aside,
    sync_dataset,
)
from .report import Report

log = logging.getLogger("streamenc")

WORK = JOURNAL.parent  # .streamenc: the journal and the spill files
ENCODERS_S = 60.0  # how long a repair waits for a dead recorder's encoders to finish


def needs_repair(root: Path) -> bool:
    """A session's journal is there: it crashed, or has not finalized yet."""
    return (Path(root) / JOURNAL).is_dir()


def repair(root: Path, *, dry_run: bool = False, keep_partial: bool = False) -> Report:
    """Make ``root`` whole from its journal; only report on a dataset with none.
    ``keep_partial``: the episode the crash interrupted is kept, as an episode of its own,
    with the frames durable in both its rows and its video (``partial.keep``; this
    imports LeRobot, which saves it). Two repairs of one dataset take turns."""
    root = Path(root)
    if dry_run or not (root / JOURNAL).is_dir():
        return _repair(root, dry_run, keep_partial)
    with exclusive(root, ENCODERS_S) as report:
        return report or _repair(root, dry_run, keep_partial)


def _repair(root: Path, dry_run: bool, keep_partial: bool) -> Report:
    report = Report(str(root))
    journal = root / JOURNAL
    base_path = journal / BASE
    if not journal.is_dir():
        health.inspect(root, report)
        return report
    if not base_path.exists():  # a session that died as it began: it saved nothing
        if not dry_run:
            shutil.rmtree(root / WORK, ignore_errors=True)
        health.inspect(root, report)
        report.dropped.append("a session that had saved no episode")
        if report.ok:
            report.state = "would repair" if dry_run else "repaired"
        return report
    base = json.loads(base_path.read_text())
    if liveness.alive(int(base["pid"]), int(base.get("pid_start") or 0)) and base["pid"] != os.getpid():
        report.state = "damaged"
        report.problems.append(f"process {base['pid']} is recording into it now; repair it once that has stopped")
        return report
    deadline = time.monotonic() + ENCODERS_S
    while spill.in_use(root / WORK) and time.monotonic() < deadline:
        time.sleep(0.1)  # a dead recorder's encoders finish the frames they were given, then exit
    if spill.in_use(root / WORK):
        report.state = "damaged"
        report.problems.append(f"encoder processes still write into it after {ENCODERS_S:.0f} s; try again later")
        return report
    records = _records(root, int(base["episodes"]))
    plan = _plan(root, base, records, report)
    report.state = "would repair" if dry_run else "repaired"
    if dry_run and keep_partial:
        from .partial import read_rows, rows_file

        rows = len(read_rows(rows_file(journal, report.episodes)))
        report.kept = f"episode {report.episodes}: would keep up to {rows} frames (its durable rows)" if rows else ""
    if dry_run:
        return report
    # Each step leaves what a repair run again needs, until the journal goes: the
    # interrupted episode's video (for keep_partial) is set aside into it, and goes with it.
    with _room(root):
        _write(root, plan)
    videos = [s for s in plan.strays if _ours_temporary(s)]  # the interrupted episode's
    _remove([s for s in plan.strays if s not in videos])
    videos = set_aside(root, videos)
    if report.problems:  # what could not be restored stays on record: recording on would bury it
        report.problems.append(f"the journal stays in {root / JOURNAL}: a repair run again finds the same")
        if keep_partial:
            report.dropped.append(f"episode {report.episodes} is not kept until the saved ones are whole")
        return report
    if keep_partial:
        _keep(root, videos, plan, report)
    with _room(root):
        chunks.finish_all(root / "videos")  # as finalize() leaves them: ordinary MP4s (each file atomically)
    sync_dataset(root)
    retire(root)  # the dataset's own files hold everything now; the set-aside videos go with it
    shutil.rmtree(root / WORK, ignore_errors=True)  # the spill files of the dead session
    fsync(root)  # its entry gone (sync_dataset synced the layout's directories already)
    return report


@contextlib.contextmanager
def _room(root: Path) -> Iterator[None]:
    """A full disk while repairing is a clear error: nothing is lost, the journal stays."""
    try:
        yield
    except OSError as e:
        if is_disk_full(e):
            raise WriteError(
                e.errno,
                f"the disk is full: {root} is not repaired yet, and nothing of it is lost; free some space "
                f"and run the repair again ({e})",
            ) from e
        raise


# -- reading the journal -------------------------------------------------------------------
@dataclasses.dataclass
class _Record:
    index: int
    rows: Any  # pyarrow Table, as LeRobot wrote it
    meta: Any  # one-row pyarrow Table
    info: str
    stats: str | None
    tasks: str | None

    def value(self, column: str) -> Any:
        return self.meta.column(column)[0].as_py()

    def data_path(self, info: dict) -> str:
        chunk, file = self.value("data/chunk_index"), self.value("data/file_index")
        return info["data_path"].format(chunk_index=chunk, file_index=file)

    def meta_path(self) -> str:
        return EPISODES_PATH.format(
            chunk_index=self.value("meta/episodes/chunk_index"), file_index=self.value("meta/episodes/file_index")
        )

    def video_path(self, info: dict, key: str) -> str:
        return info["video_path"].format(
            video_key=key,
            chunk_index=self.value(f"videos/{key}/chunk_index"),
            file_index=self.value(f"videos/{key}/file_index"),
        )


def _records(root: Path, first: int) -> list[_Record]:
    """The session's saved episodes, in order from ``first``; the first missing one ends them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = []
    index = first
    while (path := root / JOURNAL / f"episode-{index:06d}.parquet").exists():
        table = pq.read_table(path)
        metadata = dict(table.schema.metadata)
        record = json.loads(metadata.pop(KEY))
        meta = pa.ipc.open_stream(metadata.pop(META_KEY)).read_all()
        rows = table.replace_schema_metadata(metadata)
        out.append(_Record(index, rows, meta, record["info"], record["stats"], record["tasks"]))
        index += 1
    return out


@dataclasses.dataclass
class _Plan:
    data: dict[str, list[Any]]  # relative path -> the episodes' row tables, in order
    meta: dict[str, list[Any]]  # relative path -> the episodes' metadata rows
    videos: dict[str, float]  # relative path -> where its saved episodes end (s)
    files: dict[str, bytes | None]  # info.json, stats.json, tasks.parquet: content (None: remove)
    strays: list[Path]
    keep: set[str]  # the dataset's files once repaired (relative paths)


def _plan(root: Path, base: dict, records: list[_Record], report: Report) -> _Plan:
    info = json.loads(records[-1].info if records else base["info"])
    data: dict[str, list[Any]] = defaultdict(list)
    meta: dict[str, list[Any]] = defaultdict(list)
    videos: dict[str, float] = {}
    for r in records:
        data[r.data_path(info)].append(r.rows)
        meta[r.meta_path()].append(r.meta)
        for key in _video_keys(info):
            path = r.video_path(info, key)
            videos[path] = max(videos.get(path, 0.0), float(r.value(f"videos/{key}/to_timestamp")))
    last = records[-1] if records else None
    info_text: str | None = last.info if last else base["info"]
    stats_text: str | None = last.stats if last else base["stats"]
    tasks_b64: str | None = last.tasks if last else base["tasks"]
    files = {
        INFO: None if info_text is None else info_text.encode(),
        STATS: None if stats_text is None else stats_text.encode(),
        TASKS: None if tasks_b64 is None else base64.b64decode(tasks_b64),
    }
    keep = set(base["files"]) | set(data) | set(meta) | set(videos) | {p for p, c in files.items() if c is not None}
    strays = [root / p for p in files_of(root) if p not in keep]
    known = set(base["root_entries"]) | set(TRACKED) | {WORK.name}
    strays += [p for p in root.iterdir() if p.name not in known and _ours_temporary(p)]
    report.restored = [r.index for r in records]
    report.episodes = int(info["total_episodes"])
    changed = [p for p, c in files.items() if c is not None and not _same(root / p, c)]
    report.written = sorted([*data, *meta, *changed])
    report.removed = sorted(p.relative_to(root).as_posix() for p in strays)
    aside = root / JOURNAL / INTERRUPTED
    unsaved = _unsaved(root, info, [*strays, *(sorted(aside.iterdir()) if aside.is_dir() else [])])
    if unsaved:
        report.dropped.append(unsaved)
    for path in videos:
        spans = [
            (r.index, float(r.value(f"videos/{k}/from_timestamp")), float(r.value(f"videos/{k}/to_timestamp")),
             r.value("length"))
            for k in _video_keys(info)
            for r in records
            if r.video_path(info, k) == path
        ]  # fmt: skip
        report.problems += health.video_problems(root / path, path, spans)
    return _Plan(dict(data), dict(meta), videos, files, strays, keep)


def _same(path: Path, content: bytes) -> bool:
    try:
        return path.read_bytes() == content
    except OSError:
        return False


def _video_keys(info: dict) -> list[str]:
    return [k for k, ft in info["features"].items() if ft.get("dtype") == "video"]


def _ours_temporary(path: Path) -> bool:
    """A directory made for an episode's MP4 (``tmpXXXX/<cam>_streaming.mp4``, and its
    parts), empty until the encoder opened the file."""
    return (
        path.is_dir()
        and path.name.startswith("tmp")
        and all(p.name.split(".mp4")[0].endswith("_streaming") for p in path.iterdir())
    )


def _unsaved(root: Path, info: dict, strays: list[Path]) -> str:
    """Words for the episode the crash interrupted, if anything of it is on disk."""
    index = info["total_episodes"]
    frames = [health.frames_in(p) for s in strays if s.is_dir() for p in s.glob("*_streaming.mp4*")]
    spill = any(p.is_file() and p.relative_to(root).parts[:2] != JOURNAL.parts for p in (root / WORK).rglob("*"))
    if not frames and not strays and not spill:
        return ""
    durable = f", {max(frames)} frames of video durable" if frames else ""
    return f"episode {index}, not saved when the recorder stopped{durable}"


# -- writing -------------------------------------------------------------------------------
def _write(root: Path, plan: _Plan) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for rel, tables in plan.data.items():

        def write_rows(tmp: Path, tables: list[Any] = tables) -> None:
            with pq.ParquetWriter(tmp, schema=tables[0].schema, compression="snappy", use_dictionary=True) as w:
                for t in tables:  # one row group per episode, as LeRobot writes them
                    w.write_table(t)

        _replace(root / rel, write_rows)
    for rel, rows in plan.meta.items():
        table = pa.concat_tables(rows, promote_options="default")

        def write_meta(tmp: Path, table: Any = table) -> None:
            pq.write_table(table, tmp, compression="snappy", use_dictionary=True)

        _replace(root / rel, write_meta)
    for rel, end in plan.videos.items():
        if not (root / rel).exists():
            continue  # reported as a problem: nothing to cut
        try:
            chunks.trim(root / rel, end)
        except chunks.Unsupported:
            pass  # LeRobot's own layout: it holds the episodes LeRobot moved or remuxed into it
    for rel, content in plan.files.items():
        if content is None:
            (root / rel).unlink(missing_ok=True)
        elif not _same(root / rel, content):
            _replace(root / rel, lambda tmp, content=content: tmp.write_bytes(content))


def _remove(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _keep(root: Path, videos: list[Path], plan: _Plan, report: Report) -> None:
    """``keep_partial``: the interrupted episode saved as the dataset's next one. When
    LeRobot fails to save it, the dataset goes back to what the journal restored."""
    from .partial import keep, read_rows, rows_file

    index = report.episodes
    rows = read_rows(rows_file(root / JOURNAL, index))
    try:
        frames, why = keep(root, rows, videos, root / JOURNAL) if rows else (0, "none of its rows were durable")
    except Exception as e:  # LeRobot's own save path failed: the episode is dropped, as by default
        log.debug("streamenc: the interrupted episode could not be kept", exc_info=True)
        frames, why = 0, f"LeRobot could not save it ({type(e).__name__}: {e})"
        if index == 0:  # 0.4.x: LeRobotDataset takes a dataset of no episodes for one on the hub
            why = "this LeRobot opens no dataset of no saved episodes to save it into"
        with _room(root):
            _write(root, plan)
        _remove([root / p for p in files_of(root) if p not in plan.keep])
    report.dropped = [d for d in report.dropped if not d.startswith(f"episode {index},")]
    if frames:
        report.kept = f"episode {index}, {frames} frames (durable in both its rows and its video)"
        report.episodes += 1
    else:
        report.dropped.append(f"episode {index}, not saved when the recorder stopped, not kept: {why}")


def _replace(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".repairing")
    write(tmp)
    fsync(tmp)
    os.replace(tmp, path)
    fsync(path.parent)


# -- the command line: streamenc repair ROOT -----------------------------------------------
def main(args: Any) -> int:
    """``streamenc repair``: 0 clean or repaired, 1 when something could not be restored."""
    report = repair(Path(args.root), dry_run=args.dry_run, keep_partial=args.keep_partial)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report.line())
        for label, items in (("written", report.written), ("removed", report.removed), ("readable", report.readable)):
            for item in items:
                print(f"  {label}: {item}")
    return 0 if report.ok else 1
