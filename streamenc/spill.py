"""The ordered spill: frames that find their camera's ring full wait on disk, in order.

A spill file is self-describing: a 4096-byte file header (magic, shape, dtype, record
size), then fixed-size records, each a 64-byte record header (magic, episode, frame
index, timestamp, spill index) and the raw frame. A record is written with one
``pwritev``. Its position follows from its spill index, so the writer (the recorder)
and the reader (the encoder) share nothing but four counters in the ring header:

- ``HEAD``  records written (producer);
- ``BASE``  the spill index stored at the first record position (producer);
- ``READ``  records the encoder has taken (consumer);
- ``DONE``  records whose frames are durable in the video (consumer).

The recorder writes to the ring again once ``READ == HEAD``, and deletes the file
once ``DONE == HEAD``: disk use is bounded by the backlog.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from .errors import StreamencError, disk_full_guard
from .ring import FrameRing

FILE_MAGIC = b"STRMSPL1"
REC_MAGIC = b"SEFR"
FILE_HEADER = 4096
REC_HEADER = 64
_FILE = struct.Struct("<8sII16s4QQ")  # magic, version, ndim, dtype, shape[4], record bytes
_REC = struct.Struct("<4sIqqqQ")  # magic, pad, episode, frame index, timestamp, spill index

# producer counters
HEAD, BASE, DROPPED = 0, 1, 2
# consumer counters
READ, DONE, ENCODED = 0, 1, 2


def record_bytes(frame_bytes: int) -> int:
    return REC_HEADER + frame_bytes


class SpillWriter:
    """The recorder's side: appends frames in order; knows when the encoder has caught up."""

    def __init__(self, path: Path, ring: FrameRing) -> None:
        self.path = Path(path)
        self.ring = ring
        self.rec = record_bytes(ring.frame_bytes)
        self._fd = -1  # the file is made on the first spilled frame: most recordings never need it
        self.active = False  # frames go here, not to the ring, until the encoder catches up

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        shape = tuple(self.ring.shape) + (0,) * (4 - len(self.ring.shape))
        header = _FILE.pack(FILE_MAGIC, 1, len(self.ring.shape), self.ring.dtype.str.encode(), *shape, self.rec)
        with disk_full_guard(self.path, FILE_HEADER):
            os.pwrite(self._fd, header.ljust(FILE_HEADER, b"\0"), 0)

    @property
    def head(self) -> int:
        return self.ring.counter("producer", HEAD)

    @property
    def backlog(self) -> int:
        """Records written that the encoder has not taken yet."""
        return self.head - self.ring.counter("consumer", READ)

    def caught_up(self) -> bool:
        return self.ring.counter("consumer", READ) >= self.head

    def append(self, frame: np.ndarray, episode: int, frame_index: int, timestamp_ns: int) -> None:
        """Write one record (one syscall) and publish it. ENOSPC raises DiskFull."""
        if self._fd < 0:
            self._open()
        j = self.head
        base = self.ring.counter("producer", BASE)
        header = _REC.pack(REC_MAGIC, 0, episode, frame_index, timestamp_ns, j).ljust(REC_HEADER, b"\0")
        offset = FILE_HEADER + (j - base) * self.rec
        with disk_full_guard(self.path, self.rec):
            n = os.pwritev(self._fd, [header, np.ascontiguousarray(frame)], offset)
            if n != self.rec:
                raise OSError(28, "short write", str(self.path))  # a full disk can also write short
        self.ring.set_counter("producer", HEAD, j + 1)

    def trim(self) -> None:
        """Delete the file once every record in it is durable in the video; the next spilled
        frame starts a new one. BASE moves on, which tells the reader to reopen."""
        if self._fd < 0:  # no file: the common case, on every frame that goes to the ring
            return
        head = self.head
        if self.ring.counter("consumer", DONE) >= head:
            os.close(self._fd)
            self._fd = -1
            self.path.unlink(missing_ok=True)
            self.ring.set_counter("producer", BASE, head)

    def close(self, keep: bool = False) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            if not keep:
                self.path.unlink(missing_ok=True)


class SpillReader:
    """The encoder's side: reads records in order into one reusable buffer."""

    def __init__(self, path: Path, ring: FrameRing) -> None:
        self.path = Path(path)
        self.ring = ring
        self.rec = record_bytes(ring.frame_bytes)
        self._fd = -1
        self._base = 0
        self.buf = np.empty(ring.shape, ring.dtype)
        self._head = bytearray(REC_HEADER)
        # a restarted encoder goes back to the first record that is not durable yet
        self.next = ring.counter("consumer", DONE)
        ring.set_counter("consumer", READ, self.next)

    def _open(self) -> bool:
        base = self.ring.counter("producer", BASE)
        if self._fd >= 0 and base != self._base:  # the writer deleted that file and began another
            os.close(self._fd)
            self._fd = -1
        if self._fd < 0:
            try:
                self._fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                return False
            self._base = base
        return True

    def available(self) -> int:
        return self.ring.counter("producer", HEAD) - self.next

    def peek(self) -> tuple[int, int] | None:
        """(episode, frame index) of the next record, or None if there is none yet."""
        if self.available() <= 0 or not self._open():
            return None
        raw = os.pread(self._fd, REC_HEADER, self._offset(self.next))
        magic, _, episode, index, _, j = _REC.unpack_from(raw)
        if magic != REC_MAGIC or j != self.next:
            raise StreamencError(f"spill {self.path}: record {self.next} is damaged")
        return episode, index

    def _offset(self, j: int) -> int:
        return FILE_HEADER + (j - self._base) * self.rec

    def read(self) -> tuple[int, int, int, int, np.ndarray]:
        """(spill index, episode, frame index, timestamp, frame) of the next record."""
        j = self.next
        n = os.preadv(self._fd, [self._head, self.buf], self._offset(j))  # one syscall, straight into buf
        if n != self.rec:
            raise StreamencError(f"spill {self.path}: record {j} is short ({n} of {self.rec} bytes)")
        _, _, episode, index, ts, _ = _REC.unpack_from(self._head)
        self.next = j + 1
        self.ring.set_counter("consumer", READ, self.next)
        return j, episode, index, ts, self.buf

    def done(self, j: int) -> None:
        """Record j's frame is durable in the video."""
        self.ring.set_counter("consumer", DONE, j + 1)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def read_records(path: Path):
    """Yield (episode, frame index, timestamp, frame) from a spill file: for recovering
    raw frames by hand, when an encoder could not be restarted."""
    with open(path, "rb") as f:
        shape, dtype, rec = _file_header(path, f.read(FILE_HEADER))
        while True:
            raw = f.read(rec)
            if len(raw) < rec:
                return
            _, _, episode, index, ts, _ = _REC.unpack_from(raw)
            yield (
                episode,
                index,
                ts,
                np.frombuffer(raw, dtype, offset=REC_HEADER).reshape(shape),
            )


def _file_header(path: Path, head: bytes) -> tuple[tuple[int, ...], np.dtype, int]:
    """(frame shape, dtype, record size) from a spill file's header."""
    if len(head) < FILE_HEADER:
        raise StreamencError(f"{path} is not a streamenc spill file")
    magic, _, ndim, dtype, *rest = _FILE.unpack_from(head)
    if magic != FILE_MAGIC:
        raise StreamencError(f"{path} is not a streamenc spill file")
    return tuple(rest[:ndim]), np.dtype(dtype.rstrip(b"\0").decode()), rest[4]


def record_count(path: Path) -> int:
    """Whole records in a spill file, from its size (without reading the frames)."""
    with open(path, "rb") as f:
        _, _, rec = _file_header(path, f.read(FILE_HEADER))
    return (os.path.getsize(path) - FILE_HEADER) // rec


def stale_spills(roots: list[Path], live_rings: set[str], depth: int = 3) -> list[tuple[Path, int]]:
    """Spill files under ``roots`` (spill directories at most ``depth`` levels down) whose
    ring is not in ``live_rings``: their recorder is gone. Each with its record count."""
    out = []
    for root in roots:
        base = len(root.resolve().parts)
        for dirpath, dirnames, filenames in os.walk(root):
            if len(Path(dirpath).resolve().parts) - base >= depth:
                dirnames.clear()
            for name in filenames:
                ring = name.rsplit("-streamenc-", 1)[-1].removesuffix(".spill")
                if name.endswith(".spill") and "-streamenc-" in name and f"streamenc-{ring}" not in live_rings:
                    path = Path(dirpath) / name
                    try:
                        frames = record_count(path)
                    except (StreamencError, OSError, ValueError):
                        frames = 0
                    out.append((path, frames))
    return sorted(out)
