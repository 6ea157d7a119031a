"""The ordered spill: frames that find their camera's ring full wait on disk, in order.

A spill file is self-describing: a 4096-byte file header (magic, shape, dtype, record
size), then fixed-size records, each a 64-byte record header (magic, episode, frame
index, timestamp, spill index) and the raw frame. A record is written with one
``pwritev``, by a thread of the recorder, never by the record loop itself. Its position
follows from its spill index, so the writer (the recorder) and the reader (the encoder)
share nothing but four counters in the ring header (named in protocol.py):

- ``HEAD``  records written (producer);
- ``BASE``  the spill index stored at the first record position (producer);
- ``READ``  records the encoder has taken (consumer);
- ``DONE``  records whose frames are durable in the video (consumer).

The recorder writes to the ring again once nothing waits in its queue and ``READ == HEAD``,
and deletes the file once ``DONE == HEAD``: disk use is bounded by the backlog.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import select
import struct
import threading
from collections import deque
from pathlib import Path

import numpy as np

from .errors import DiskFull, SpillError, is_disk_full
from .frames import write as write_frame
from .protocol import EncoderCounter, RecorderCounter
from .ring import FrameRing

FILE_MAGIC = b"STRMSPL1"
REC_MAGIC = b"SEFR"
FILE_HEADER = 4096
REC_HEADER = 64
_FILE = struct.Struct("<8sII16s4QQ")  # magic, version, ndim, dtype, shape[4], record bytes
_REC = struct.Struct("<4sIqqqQ")  # magic, pad, episode, frame index, timestamp, spill index


MEMORY_BYTES = 96 * 2**20  # per camera: frames waiting for the disk in memory (104 at 480p, 34 at 720p)
IDLE_MS = 200  # how often an idle writer with a file open checks whether it can delete it

log = logging.getLogger("streamenc")

HEAD, BASE = int(RecorderCounter.SPILL_HEAD), int(RecorderCounter.SPILL_BASE)
READ, DONE = int(EncoderCounter.SPILL_READ), int(EncoderCounter.SPILL_DONE)


def record_bytes(frame_bytes: int) -> int:
    return REC_HEADER + frame_bytes


class SpillWriter:
    """The recorder's side: takes frames in order, and writes them to the file from a thread.

    ``append`` runs on the record loop's thread: it copies the frame into a buffer from
    a small pool and queues it, so the loop never waits for the disk, whose writes
    here took up to 48 ms for two 720p frames. The writer thread writes the queue in
    order and publishes HEAD after each record. Only when the pool is used up (the disk
    is slower than the spill: its sustained limit) does ``append`` wait for a buffer.

    A failed write (a full disk) stops the writer and is raised by the next ``append``.
    The frames it still holds are not lost: once the encoder has read every record in
    the file, ``rescue`` hands them to the ring, in order, and the writer may go on.
    """

    def __init__(self, path: Path, ring: FrameRing, memory_bytes: int = MEMORY_BYTES) -> None:
        self.path = Path(path)
        self.ring = ring
        self.rec = record_bytes(ring.frame_bytes)
        self.max_buffers = max(2, memory_bytes // ring.frame_bytes)
        self._fd = -1  # the file is made on the first spilled frame: most recordings never need it
        self._queue: deque = deque()  # (spill index, episode, frame index, timestamp, buffer): loop -> writer
        self._free: deque = deque()  # buffers written out, for reuse: writer -> loop
        self._buffers = 0
        self._next = self.head  # spill index of the next frame accepted
        self.error: BaseException | None = None
        self._file_lock = threading.Lock()  # the file: the writer thread, and trim()/close() (never append)
        self._wake = os.eventfd(0, os.EFD_NONBLOCK)  # loop -> writer: frames queued
        self._freed = os.eventfd(0, os.EFD_NONBLOCK)  # writer -> loop: a buffer came back
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.write = os.pwritev  # the one place a test injects a slow or failing disk

    # -- the record loop's side ---------------------------------------------------------
    @property
    def head(self) -> int:
        return self.ring.producer_counters[HEAD]

    @property
    def backlog(self) -> int:
        """Frames accepted that the encoder has not taken yet (queued here, or in the file)."""
        return len(self._queue) + self.head - self.ring.consumer_counters[READ]

    @property
    def pool_bytes(self) -> int:
        """Memory held by the frame buffers made so far: bounded, grown as the disk lags."""
        return self._buffers * self.ring.frame_bytes

    def caught_up(self) -> bool:
        """Nothing spilled waits for the encoder: a new frame may go to the ring again
        without passing frames that came before it."""
        return not self._queue and self.ring.consumer_counters[READ] >= self.head

    def append(self, frame: np.ndarray, episode: int, frame_index: int, timestamp_ns: int) -> None:
        """Queue one frame (HWC, any strides, uint8 or float in [0, 1]) for the file.

        Raises what the writer last failed with (DiskFull for ENOSPC); that frame is not taken.
        """
        if self.error is not None:
            raise self.error
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"streamenc-spill-{self.path.name}", daemon=True)
            self._thread.start()
        buf = self._buffer()
        write_frame(buf, frame)
        self._queue.append((self._next, episode, frame_index, timestamp_ns, buf))
        self._next += 1
        os.eventfd_write(self._wake, 1)

    def _buffer(self) -> np.ndarray:
        if self._free:
            return self._free.popleft()
        if self._buffers < self.max_buffers:
            self._buffers += 1
            return np.empty(self.ring.shape, self.ring.dtype)
        waiter = select.poll()  # the pool is used up: the disk sets the pace now
        waiter.register(self._freed, select.POLLIN)
        while not self._free:
            if self.error is not None:
                raise self.error
            waiter.poll(100)
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(self._freed)
        return self._free.popleft()

    def rescue(self, put) -> None:
        """After a failed write: hand the frames the writer holds to the ring, in order,
        with ``put(frame, timestamp, episode, index) -> bool`` (False: the ring is full).

        Only once the encoder has read every record in the file, so that its merge of
        ring and file still sees every frame in order. When none is left, the next
        spilled frame tries the disk again."""
        while self._queue and self.ring.consumer_counters[READ] >= self.head:
            _, episode, index, ts, buf = self._queue[0]
            if not put(buf, ts, episode, index):
                return
            self._queue.popleft()
            self._free.append(buf)
        if not self._queue:
            self._next = self.head  # the rescued frames took no record: spill indices stay gapless
            self.error = None

    # -- the writer thread ------------------------------------------------------------------
    def _run(self) -> None:
        waiter = select.poll()
        waiter.register(self._wake, select.POLLIN)
        while True:
            waiter.poll(IDLE_MS if self._fd >= 0 else None)
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(self._wake)
            if self.error is None:  # after a failure the queue is rescue()'s until it is empty
                self._drain()
            if self._stopping:
                return
            if not self._queue:
                self.trim()

    def _drain(self) -> None:
        while self._queue:
            j, episode, index, ts, buf = self._queue[0]
            try:
                with self._file_lock:
                    self._write(j, episode, index, ts, buf)
            except OSError as e:
                self.error = DiskFull(str(self.path), self.rec) if is_disk_full(e) else e
                return
            self._queue.popleft()
            self._free.append(buf)
            os.eventfd_write(self._freed, 1)

    def _write(self, j: int, episode: int, index: int, ts: int, buf: np.ndarray) -> None:
        if self._fd < 0:
            self._open()
        header = _REC.pack(REC_MAGIC, 0, episode, index, ts, j).ljust(REC_HEADER, b"\0")
        offset = FILE_HEADER + (j - self.ring.producer_counters[BASE]) * self.rec
        n = self.write(self._fd, [header, buf], offset)
        if n != self.rec:
            raise OSError(errno.ENOSPC, "short write", str(self.path))  # a full disk can also write short
        self.ring.producer_counters[HEAD] = j + 1

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        shape = tuple(self.ring.shape) + (0,) * (4 - len(self.ring.shape))
        header = _FILE.pack(FILE_MAGIC, 1, len(self.ring.shape), self.ring.dtype.str.encode(), *shape, self.rec)
        try:
            os.pwrite(self._fd, header.ljust(FILE_HEADER, b"\0"), 0)
        except OSError:
            os.close(self._fd)
            self._fd = -1
            self.path.unlink(missing_ok=True)
            raise

    def trim(self) -> None:
        """Delete the file once every record in it is durable in the video; the next spilled
        frame starts a new one. BASE moves on, which tells the reader to reopen."""
        with self._file_lock:
            if self._fd < 0:
                return
            head = self.head
            if self.ring.consumer_counters[DONE] >= head:
                os.close(self._fd)
                self._fd = -1
                self.path.unlink(missing_ok=True)
                self.ring.producer_counters[BASE] = head

    def close(self, keep: bool = False) -> None:
        """Stop the writer once it has written what it holds, then close the file; ``keep``
        keeps it on disk for a later recovery. Frames still held after a failed write
        (a recorder closed without ending its episode) are reported, then dropped."""
        if self._thread is not None:
            self._stopping = True
            os.eventfd_write(self._wake, 1)
            self._thread.join()
            self._thread = None
        if self._queue:
            log.error(
                "streamenc: %d frames for %s could not be written to %s: %s",
                len(self._queue),
                self.ring.name,
                self.path,
                self.error,
            )
            self._queue.clear()
        with self._file_lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
                if not keep:
                    self.path.unlink(missing_ok=True)
        for fd in (self._wake, self._freed):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake = self._freed = -1


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
        self.next = ring.consumer_counters[DONE]
        ring.consumer_counters[READ] = self.next

    def _open(self) -> bool:
        base = self.ring.producer_counters[BASE]
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
        return self.ring.producer_counters[HEAD] - self.next

    def peek(self) -> tuple[int, int] | None:
        """(episode, frame index) of the next record, or None if there is none yet."""
        if self.available() <= 0 or not self._open():
            return None
        raw = os.pread(self._fd, REC_HEADER, self._offset(self.next))
        magic, _, episode, index, _, j = _REC.unpack_from(raw)
        if magic != REC_MAGIC or j != self.next:
            raise SpillError(f"spill {self.path}: record {self.next} is damaged")
        return episode, index

    def _offset(self, j: int) -> int:
        return FILE_HEADER + (j - self._base) * self.rec

    def read(self) -> tuple[int, int, int, int, np.ndarray]:
        """(spill index, episode, frame index, timestamp, frame) of the next record."""
        j = self.next
        n = os.preadv(self._fd, [self._head, self.buf], self._offset(j))  # one syscall, straight into buf
        if n != self.rec:
            raise SpillError(f"spill {self.path}: record {j} is short ({n} of {self.rec} bytes)")
        _, _, episode, index, ts, _ = _REC.unpack_from(self._head)
        self.next = j + 1
        self.ring.consumer_counters[READ] = self.next
        return j, episode, index, ts, self.buf

    def done(self, j: int) -> None:
        """Record j's frame is durable in the video."""
        self.ring.consumer_counters[DONE] = j + 1

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
        raise SpillError(f"{path} is not a streamenc spill file")
    magic, _, ndim, dtype, *rest = _FILE.unpack_from(head)
    if magic != FILE_MAGIC:
        raise SpillError(f"{path} is not a streamenc spill file")
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
                    except (OSError, ValueError):
                        frames = 0
                    out.append((path, frames))
    return sorted(out)


def hold(directory: Path) -> int:
    """Mark the spill directory in use for as long as this process lives: a shared flock
    on the directory itself, which the kernel drops when the process dies however it dies
    (``in_use``; every encoder holds its camera's)."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def in_use(directory: Path) -> bool:
    """Whether a live encoder still holds ``directory`` (``hold``)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except (FileNotFoundError, NotADirectoryError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
