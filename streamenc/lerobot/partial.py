"""The episode a crash interrupted: its rows kept durable while it records, and, when asked
(``keep_partial``), saved after the crash as an episode of its own.

While an episode records, LeRobot holds its rows in memory only (its episode buffer).
``PartialRows`` is a thread of the recording process that copies the rows added since
its last look into ``<journal>/partial-NNNNNN.rows`` every quarter second (synced every
second): the record loop's thread does nothing for it. A record there is a length, a CRC
and a pickled list of rows; a torn last record is ignored when read.

``keep`` saves such an episode through LeRobot's own save path, so that its rows, stats,
metadata and video land as LeRobot writes them: the dataset (already repaired) is opened
for writing, the durable rows go in through ``add_frame``, and the encoder at LeRobot's
hook hands back the episode's durable video (cut to the frames that are durable in both)
instead of encoding anything.
"""

from __future__ import annotations

import logging
import os
import pickle
import struct
import tempfile
import threading
import zlib
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("streamenc")
HEAD = struct.Struct("<II")  # length, crc32 of the pickle that follows
EVERY_S, SYNC_S = 0.25, 1.0


def rows_file(journal: Path, episode: int) -> Path:
    return Path(journal) / f"partial-{episode:06d}.rows"


class PartialRows(threading.Thread):
    """Copies the open episode's new rows from LeRobot's episode buffer to disk."""

    def __init__(self, journal: Path, buffer: Callable[[], dict | None], keys: list[str]) -> None:
        super().__init__(name="streamenc-partial-rows", daemon=True)
        self.journal, self.buffer, self.keys = Path(journal), buffer, keys
        self.stopped = threading.Event()
        self._seen: dict | None = None
        self._index = 0
        self._file: Any = None
        self._done = 0

    def run(self) -> None:
        synced, warned = 0.0, ""
        while not self.stopped.wait(EVERY_S):
            try:
                self._copy()
                synced += EVERY_S
                if synced >= SYNC_S and self._file is not None:
                    os.fsync(self._file.fileno())
                    synced = 0.0
            except Exception as e:  # a full disk must not end the recording: the saved episodes are safe
                if str(e) != warned:  # once per cause, not four times a second
                    log.warning("streamenc: the open episode's rows are not kept durable: %s", e)
                    warned = str(e)
        if self._file is not None:
            self._file.close()

    def _copy(self) -> None:
        buf = self.buffer()
        if buf is None:
            return
        if buf is not self._seen:  # a new episode, or the same one taken again (re-record)
            index = int(np.asarray(buf["episode_index"]).reshape(-1)[0])
            if self._file is not None:
                self._file.close()
                if index == self._index:  # a retake starts over; a saved episode's rows go at its commit
                    rows_file(self.journal, self._index).unlink(missing_ok=True)
            self._seen, self._index, self._done, self._file = buf, index, 0, None
        if "size" not in buf or "task" not in buf:  # save_episode is taking this buffer apart
            return
        size = int(buf["size"])  # LeRobot counts a frame last, after every key has it
        if size <= self._done:
            return
        if self._file is None:  # opened at the episode's first rows (a retake starts it over)
            self._file = open(rows_file(self.journal, self._index), "wb")  # noqa: SIM115
        rows = [{"task": buf["task"][i], **{k: buf[k][i] for k in self.keys}} for i in range(self._done, size)]
        data = pickle.dumps(rows, protocol=pickle.HIGHEST_PROTOCOL)
        self._file.write(HEAD.pack(len(data), zlib.crc32(data)) + data)
        self._file.flush()
        self._done = size

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=2)


def read_rows(path: Path) -> list[dict]:
    """The durable rows of a partial episode, up to the first torn record."""
    rows: list[dict] = []
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return rows
    at = 0
    while at + HEAD.size <= len(data):
        n, crc = HEAD.unpack_from(data, at)
        body = data[at + HEAD.size : at + HEAD.size + n]
        if len(body) < n or zlib.crc32(body) != crc:
            break
        rows += pickle.loads(body)
        at += HEAD.size + n
    return rows


# -- saving it after the crash -------------------------------------------------------------
def durable_video(directories: list[Path], camera: str, fps: int, out: Path) -> int:
    """The episode's video of ``camera`` from the temporary directories, as one MP4 at
    ``out`` (its finished file, else its parts joined); returns its frames (0: none)."""
    from .. import parts

    for d in directories:
        final = d / f"{camera}_streaming.mp4"
        if parts.existing_parts(final):
            return parts.join(parts.existing_parts(final), out, fps)
        if final.exists():
            return parts.join([(0, final)], out, fps)
    return 0


def _cut(video: Path, frames: int, fps: int, out: Path) -> None:
    """The first ``frames`` frames of ``video``, remuxed (no re-encode)."""
    import av

    from ..parts import CONTAINER_OPTIONS

    with av.open(str(video)) as src, av.open(str(out), "w", format="mp4", options=dict(CONTAINER_OPTIONS)) as dst:
        s = dst.add_stream_from_template(template=src.streams.video[0], opaque=True)
        s.time_base = Fraction(1, fps)
        for n, p in enumerate(p for p in src.demux(video=0) if p.size):
            if n >= frames:
                break
            p.pts = p.dts = n
            p.duration = 1
            p.time_base = Fraction(1, fps)
            p.stream = s
            dst.mux(p)


def _stats(video: Path) -> dict[str, np.ndarray] | None:
    """Raw RGB stats (0-255, shape (3,)) of the decoded frames, as streamenc's encoders
    compute them from the frames they encode."""
    import av

    from ..stats import EpisodeStats

    stats = None
    with av.open(str(video)) as c:
        for frame in c.decode(video=0):
            img = frame.to_ndarray(format="rgb24")
            stats = stats or EpisodeStats(img.shape[0], img.shape[1], 3)
            stats.update(img)
    got = stats.lerobot() if stats is not None else None
    if got is None:
        return None
    return {k: v if k == "count" else np.asarray(v).reshape(-1) * 255.0 for k, v in got.items()}


class _Replay:
    """Stands at LeRobot's streaming-encoder hook for one episode: takes the frames LeRobot
    feeds it and ignores them, and finishes with videos already on disk."""

    def __init__(self, videos: dict[str, Path]) -> None:
        self.videos = videos

    def start_episode(self, *args: Any, **kwargs: Any) -> None:
        pass

    def feed_frame(self, *args: Any) -> None:
        pass

    def finish_episode(self) -> dict[str, tuple[Path, Any]]:
        return {key: (path, _stats(path)) for key, path in self.videos.items()}

    def cancel_episode(self) -> None:
        pass

    def close(self) -> None:
        pass


def keep(root: Path, rows: list[dict], directories: list[Path], scratch: Path) -> tuple[int, str]:
    """Save the interrupted episode of the (repaired) dataset at ``root`` through LeRobot,
    as its next episode: the frames durable in both its rows and every camera's video
    (``directories``: its temporary video directories). ``scratch``: where its videos are
    cut (the journal: what a crash leaves there goes with it). Returns the frames kept,
    or 0 and why not."""
    import json

    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from .seams import Seams

    info = json.loads((root / "meta" / "info.json").read_text())
    opener = getattr(LeRobotDataset, "resume", None) or LeRobotDataset
    dataset = opener("streamenc/repair", root=root)  # the repo id is only ever used for the hub
    meta = dataset.meta
    if list(getattr(meta, "depth_keys", []) or []):
        return 0, "it has a depth camera, whose partial video streamenc does not keep"
    if list(meta.image_keys):
        return 0, "it has image features, whose PNGs LeRobot removes"
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        whole = {}
        for key in meta.video_keys:
            whole[key] = Path(tmp) / f"{key}.whole.mp4"
            if not durable_video(directories, key.replace("/", "_"), info["fps"], whole[key]):
                return 0, f"no durable video of {key}"
        frames = min([len(rows), *(_count(p) for p in whole.values())])
        if frames < 2:
            return 0, f"{frames} frames durable in both rows and video"
        videos = {}
        for key, path in whole.items():
            episode_dir = Path(tempfile.mkdtemp(dir=tmp))  # save_episode removes the MP4's directory
            videos[key] = episode_dir / f"{key}.mp4"
            _cut(path, frames, info["fps"], videos[key])
        Seams(dataset).encoder = _Replay(videos)
        blank = {k: np.zeros(tuple(meta.features[k]["shape"]), np.uint8) for k in meta.video_keys}
        for row in rows[:frames]:
            dataset.add_frame({**row, **blank})
        dataset.save_episode()
        dataset.finalize()
    return frames, ""


def _count(path: Path) -> int:
    import av

    with av.open(str(path)) as c:
        return sum(1 for p in c.demux(video=0) if p.size)
