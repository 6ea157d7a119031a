"""FrameRing: a single-producer, single-consumer ring of frames in POSIX shared memory.

The Cython core (``streamenc._ring``) owns the byte layout, the cursors and
the GIL-free copy. This module adds what a user touches: named segments and
semaphores, waits that notice a dead peer, typed errors and stale cleanup.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import time
import uuid
from collections.abc import Iterator

import numpy as np
import posix_ipc

from . import _ring
from .errors import ConfigError, FrameError, PeerDied, RingError, RingTimeout, ShmTooSmall, StateError

SHM_DIR = "/dev/shm"
PREFIX = "streamenc-"
POLL_S = 0.05  # how often a blocked wait looks at the peer's pid
_MAP_FLAGS = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)

# Indices of the header's counters for the ring's users (``counter``/``set_counter``).
# Each side stores only its own line. Producer side:
SPILL_HEAD = 0  # records written to the spill file
SPILL_BASE = 1  # spill index of the spill file's first record
DROPPED = 2  # frames dropped (overflow="drop")
# Consumer side:
SPILL_READ = 0  # spill records the encoder has taken
SPILL_DONE = 1  # spill records durable in the video
ENCODED = 2  # frames the encoder has taken, in total
SCHED = 3  # the encoder's threads at its last check: policy << 8 | (nice + 20), + 1 (0: not yet)
RT_REPAIRED = 4  # real-time threads the encoder found and put back, in total


def shm_free_bytes(path: str = SHM_DIR) -> int:
    """Bytes an unprivileged writer can still allocate in the shm filesystem."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def ring_bytes(shape: tuple[int, ...], dtype: str | np.dtype = "uint8", slots: int = 64) -> int:
    """Size of the segment a ring of this geometry maps."""
    payload = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return _ring.layout(payload, slots)[2]


def proc_start(pid: int) -> int:
    """The process's start time in clock ticks (0 if unknown): with the pid, it names one process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return 0


def pid_alive(pid: int, start: int = 0) -> bool:
    """True if pid runs and is the process that started at ``start``. Zombies count as dead."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: fall back to a signal probe
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    if fields[0] in (b"Z", b"X"):
        return False
    return not start or int(fields[19]) == start


def _sem_names(name: str) -> tuple[str, str]:
    return f"/{name}-free", f"/{name}-filled"


class Slot:
    """A filled slot, read-only, valid until released. Use it as a context manager."""

    __slots__ = ("seq", "timestamp_ns", "episode", "frame_index", "array", "_ring", "_done")

    def __init__(
        self, ring: FrameRing, seq: int, timestamp_ns: int, episode: int, frame_index: int, array: np.ndarray
    ) -> None:
        self.seq, self.timestamp_ns, self.episode, self.frame_index = seq, timestamp_ns, episode, frame_index
        self.array = array
        self._ring = ring
        self._done = False

    def release(self) -> None:
        """Hand the slot back to the producer. Idempotent."""
        if not self._done:
            self._done = True
            self.array = None  # type: ignore[assignment]
            self._ring._release(self.seq)

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return (
            f"Slot(seq={self.seq}, timestamp_ns={self.timestamp_ns}, "
            f"episode={self.episode}, frame_index={self.frame_index})"
        )


class FrameRing:
    """One camera's frames in a shared-memory ring.

    ``FrameRing.create`` makes the segment and is the producer;
    ``FrameRing.attach(name)`` in any process is the consumer.
    """

    def __init__(
        self,
        name: str,
        shm: posix_ipc.SharedMemory,
        mm: mmap.mmap,
        free: posix_ipc.Semaphore,
        filled: posix_ipc.Semaphore,
        producer: bool,
    ) -> None:
        self._name = name
        self._shm, self._mm, self._free, self._filled = shm, mm, free, filled
        self._core = _ring.RingCore(mm)
        self._size = len(mm)
        h = self._core.header()
        self.shape: tuple[int, ...] = tuple(int(d) for d in h["shape"])
        self.dtype: np.dtype = np.dtype(h["dtype"])
        self.slots: int = int(h["slots"])
        self.frame_bytes: int = int(h["payload_bytes"])
        self.is_producer = producer
        self._closed = False
        self._unlinked = False
        # producer: a free slot taken by a reserve() that raised, reused by the next write
        self._held_free = False
        # consumer: next seq to hand out, frames the old consumer had taken (after a restart),
        # and seqs released out of order
        self._next = int(h["tail"])
        self._credit = int(h["read"]) - int(h["tail"])
        self._released: set[int] = set()

    # -- construction ---------------------------------------------------------
    @classmethod
    def create(
        cls, shape: tuple[int, ...], dtype: str | np.dtype = "uint8", slots: int = 64, *, shm_free: int | None = None
    ) -> FrameRing:
        """Create a ring for frames of ``shape``/``dtype`` with ``slots`` slots. The caller is the producer.

        Checks /dev/shm's free space first (``shm_free`` overrides the reading, for tests)
        and reserves every page, so a short filesystem raises ShmTooSmall here and never
        becomes a SIGBUS in put().
        """
        shape = tuple(int(d) for d in shape)
        dt = np.dtype(dtype)
        if not 1 <= len(shape) <= _ring.MAX_DIMS or any(d <= 0 for d in shape):
            raise ConfigError(f"shape must have 1..{_ring.MAX_DIMS} positive dims, got {shape}")
        if dt.hasobject or dt.itemsize == 0:
            raise ConfigError(f"dtype {dt} cannot live in shared memory")
        if int(slots) < 1:
            raise ConfigError(f"slots must be >= 1, got {slots}")
        slots = int(slots)
        payload = int(np.prod(shape)) * dt.itemsize
        offset, stride, total = _ring.layout(payload, slots)
        free = shm_free_bytes() if shm_free is None else shm_free
        if total > free:
            raise ShmTooSmall(total, free)

        name = PREFIX + uuid.uuid4().hex
        shm = posix_ipc.SharedMemory("/" + name, posix_ipc.O_CREX, mode=0o600, size=total)
        made: list = [shm]
        try:
            try:
                os.posix_fallocate(shm.fd, 0, total)  # tmpfs reserves the pages now or says ENOSPC
            except OSError as e:
                raise ShmTooSmall(total, shm_free_bytes()) from e
            mm = mmap.mmap(shm.fd, total, flags=_MAP_FLAGS)
            core = _ring.RingCore(mm)
            core.init(shape, dt.str.encode(), payload, slots, offset, stride, os.getpid(), proc_start(os.getpid()))
            core.release()
            free_name, filled_name = _sem_names(name)
            free_sem = posix_ipc.Semaphore(free_name, posix_ipc.O_CREX, mode=0o600, initial_value=slots)
            made.append(free_sem)
            filled_sem = posix_ipc.Semaphore(filled_name, posix_ipc.O_CREX, mode=0o600, initial_value=0)
            made.append(filled_sem)
        except BaseException:
            for obj in reversed(made):
                with contextlib.suppress(posix_ipc.Error):
                    obj.unlink()
            shm.close_fd()
            raise
        shm.close_fd()
        return cls(name, shm, mm, free_sem, filled_sem, producer=True)

    @classmethod
    def attach(cls, name: str) -> FrameRing:
        """Attach to an existing ring as its consumer. A consumer that replaces a dead one
        resumes at the first slot not yet released."""
        name = name.lstrip("/")
        if not name.startswith(PREFIX):
            raise RingError(f"{name!r} is not a streamenc ring name")
        try:
            shm = posix_ipc.SharedMemory("/" + name)
        except posix_ipc.ExistentialError:
            raise RingError(f"no ring named {name!r} in {SHM_DIR}") from None
        try:
            if shm.size < _ring.PAGE:
                raise RingError(f"{name!r} is {shm.size} bytes: not a streamenc ring")
            mm = mmap.mmap(shm.fd, shm.size, flags=_MAP_FLAGS)
        finally:
            shm.close_fd()
        core = _ring.RingCore(mm)
        try:
            h = core.header()
            if h["magic"] != _ring.MAGIC:
                raise RingError(f"{name!r} is not a streamenc ring (bad magic {h['magic']:#x})")
            if h["version"] != _ring.VERSION:
                raise RingError(
                    f"{name!r} has ring layout version {h['version']}, this streamenc reads {_ring.VERSION}"
                )
            if h["slot_offset"] + h["slot_stride"] * h["slots"] > len(mm):
                raise RingError(f"{name!r} is shorter than its header says")
            if (
                h["consumer_pid"]
                and not h["consumer_closed"]
                and h["consumer_pid"] != os.getpid()
                and pid_alive(h["consumer_pid"], h["consumer_start"])
            ):
                raise RingError(f"ring {name!r} already has a live consumer, pid {h['consumer_pid']}")
            core.set_consumer(os.getpid(), proc_start(os.getpid()))
        finally:
            core.release()
        try:
            free_name, filled_name = _sem_names(name)
            free_sem, filled_sem = posix_ipc.Semaphore(free_name), posix_ipc.Semaphore(filled_name)
        except posix_ipc.ExistentialError:
            mm.close()
            raise RingError(f"ring {name!r} has lost its semaphores (was it unlinked?)") from None
        return cls(name, shm, mm, free_sem, filled_sem, producer=False)

    # -- properties -------------------------------------------------------------
    @property
    def name(self) -> str:
        """The segment's name, ``streamenc-<uuid>``; pass it to ``attach``."""
        return self._name

    @property
    def nbytes(self) -> int:
        return self._size

    @property
    def head(self) -> int:
        """Frames committed so far: the seq the next put gets."""
        self._check_open()
        return self._core.head

    @property
    def tail(self) -> int:
        """Frames released by the consumer so far."""
        self._check_open()
        return self._core.tail

    @property
    def queued(self) -> int:
        """Frames in the ring not yet released."""
        self._check_open()
        return self._core.head - self._core.tail

    @property
    def unread(self) -> int:
        """Frames committed that no consumer has taken yet."""
        self._check_open()
        return self._core.head - self._core.read

    @property
    def available(self) -> int:
        """Consumer side: frames committed that this consumer has not taken yet."""
        self._check_open()
        return self._core.head - self._next + self._credit

    def counter(self, side: str, i: int) -> int:
        """One of the shared counters the ring keeps for its users; side is "producer" or "consumer"."""
        self._check_open()
        return self._core.counter(side == "producer", i)

    def set_counter(self, side: str, i: int, value: int) -> None:
        """Store a shared counter. Each side stores only its own."""
        self._check_open()
        if (side == "producer") != self.is_producer:
            raise StateError(f"the {'producer' if self.is_producer else 'consumer'} cannot store {side} counters")
        self._core.set_counter(side == "producer", i, value)

    def header(self) -> dict:
        """The segment header, for diagnostics."""
        self._check_open()
        return self._core.header()

    # -- producer -----------------------------------------------------------------
    def _check_frame(self, frame: object) -> np.ndarray:
        if not isinstance(frame, np.ndarray):
            raise FrameError(f"frame must be a numpy array, got {type(frame).__name__}")
        if frame.shape != self.shape:
            raise FrameError(f"frame shape {frame.shape} does not match the ring's {self.shape}")
        if frame.dtype != self.dtype:
            raise FrameError(f"frame dtype {frame.dtype} does not match the ring's {self.dtype}")
        if not frame.flags.c_contiguous:
            raise FrameError("frame is not C-contiguous; pass np.ascontiguousarray(frame)")
        return frame

    def _take_free(self, timeout: float | None) -> None:
        if self._held_free:
            return
        self._wait(self._free, timeout, self._consumer_gone, "a free slot")
        self._held_free = True

    def put(
        self,
        frame: np.ndarray,
        timestamp_ns: int | None = None,
        timeout: float | None = None,
        *,
        episode: int = 0,
        frame_index: int = -1,
    ) -> int:
        """Copy ``frame`` into the next slot (one memcpy, GIL released) and return its seq.

        Waits up to ``timeout`` seconds for a free slot (None: forever) and raises
        RingTimeout, or PeerDied if the consumer dies or closes meanwhile. A rejected
        frame leaves the ring as it was.
        """
        self._check_producer()
        self._check_frame(frame)
        self._take_free(timeout)
        seq = self._core.write(
            frame, time.monotonic_ns() if timestamp_ns is None else timestamp_ns, episode, frame_index
        )
        self._held_free = False
        self._filled.release()
        return seq

    @contextlib.contextmanager
    def reserve(
        self, timeout: float | None = None, *, timestamp_ns: int | None = None, episode: int = 0, frame_index: int = -1
    ) -> Iterator[np.ndarray]:
        """Yield a writable view of the next slot; commit it on a clean exit.

        If the block raises, nothing is committed and the slot is reused by the next
        put or reserve. Do not keep the view after the block.
        """
        self._check_producer()
        self._take_free(timeout)
        off = self._core.payload_offset(self._core.head)
        view = np.frombuffer(self._mm, self.dtype, int(np.prod(self.shape)), off).reshape(self.shape)
        yield view
        del view
        self._core.commit(time.monotonic_ns() if timestamp_ns is None else timestamp_ns, episode, frame_index)
        self._held_free = False
        self._filled.release()

    # -- consumer -----------------------------------------------------------------
    def get(self, timeout: float | None = None) -> Slot:
        """The next frame, as a read-only Slot that stays valid until released.

        Frames left by a dead producer are still handed out; PeerDied comes only once
        the ring is empty and the producer is dead or has closed.
        """
        self._check_open()
        if self.is_producer:
            raise StateError("get() is for the consumer; attach to the ring by name")
        if self._credit > 0:
            self._credit -= 1
        else:
            self._wait(self._filled, timeout, self._producer_gone, "a frame")
        seq = self._next
        self._next += 1
        if self._next > self._core.read:
            self._core.set_read(self._next)
        meta = self._core.meta(seq)
        off = self._core.payload_offset(seq)
        arr = np.frombuffer(self._mm, self.dtype, int(np.prod(self.shape)), off).reshape(self.shape)
        arr.flags.writeable = False
        return Slot(self, meta[0], meta[1], meta[2], meta[3], arr)

    def _release(self, seq: int) -> None:
        """Free slots in seq order: one released early waits for those before it."""
        if self._closed:
            return
        tail = self._core.tail
        if seq < tail or seq >= self._next:
            raise StateError(f"seq {seq} is not held (held: {tail}..{self._next - 1})")
        self._released.add(seq)
        freed = 0
        while tail in self._released:
            self._released.discard(tail)
            tail += 1
            freed += 1
        if freed:
            self._core.set_tail(tail)
            for _ in range(freed):
                self._free.release()

    # -- waiting --------------------------------------------------------------------
    def _consumer_gone(self) -> str | None:
        pid, start, closed = self._core.consumer
        if closed:
            return f"consumer pid {pid} closed ring {self._name}"
        if pid and not pid_alive(pid, start):
            return f"consumer pid {pid} of ring {self._name} died"
        return None

    def _producer_gone(self) -> str | None:
        pid, start, closed = self._core.producer
        if closed:
            return f"producer pid {pid} closed ring {self._name}"
        if not pid_alive(pid, start):
            return f"producer pid {pid} of ring {self._name} died"
        return None

    def _wait(self, sem: posix_ipc.Semaphore, timeout: float | None, gone, what: str) -> None:
        try:
            sem.acquire(0)
            return
        except posix_ipc.BusyError:
            pass
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            why = gone()
            if why:
                try:  # the peer may have posted just before it went
                    sem.acquire(0)
                    return
                except posix_ipc.BusyError:
                    raise PeerDied(why) from None
            left = POLL_S if deadline is None else min(POLL_S, deadline - time.monotonic())
            if left <= 0:
                raise RingTimeout(f"no {what} in ring {self._name} after {timeout:.3g} s")
            try:
                sem.acquire(left)
                return
            except posix_ipc.BusyError:
                continue

    # -- teardown ---------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise StateError(f"ring {self._name} is closed")

    def _check_producer(self) -> None:
        self._check_open()
        if not self.is_producer:
            raise StateError("put()/reserve() are for the producer that created the ring")

    def close(self) -> None:
        """Tell the peer we are gone and unmap. Idempotent. Views still alive keep the
        mapping until they are garbage."""
        if self._closed:
            return
        with contextlib.suppress(Exception):
            self._core.mark_closed(self.is_producer)
        self._closed = True
        self._core.release()
        for sem in (self._free, self._filled):
            with contextlib.suppress(posix_ipc.Error):
                sem.close()
        with contextlib.suppress(BufferError):
            self._mm.close()

    def unlink(self) -> None:
        """Remove the segment and its semaphores from the system. Idempotent; mappings
        that exist stay valid until closed."""
        if self._unlinked:
            return
        self._unlinked = True
        _unlink_all(self._name)

    def __enter__(self) -> FrameRing:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        if self.is_producer:
            self.unlink()

    def __repr__(self) -> str:
        role = "producer" if self.is_producer else "consumer"
        return f"<FrameRing {self._name} {role} shape={self.shape} dtype={self.dtype} slots={self.slots}>"


def _unlink_all(name: str) -> None:
    for sem in _sem_names(name):
        with contextlib.suppress(posix_ipc.ExistentialError):
            posix_ipc.unlink_semaphore(sem)
    with contextlib.suppress(posix_ipc.ExistentialError):
        posix_ipc.unlink_shared_memory("/" + name)


def _segment_owner(name: str) -> tuple[int, int] | None:
    """(producer pid, start) from a segment's header, or None if it is not one of ours."""
    try:
        with open(os.path.join(SHM_DIR, name), "rb") as f:
            raw = f.read(_ring.HEADER_BYTES)
    except OSError:
        return None
    if len(raw) < _ring.HEADER_BYTES or int.from_bytes(raw[:8], "little") != _ring.MAGIC:
        return None
    at = _ring.PRODUCER_AT
    pid = int.from_bytes(raw[at : at + 8], "little", signed=True)
    start = int.from_bytes(raw[at + 8 : at + 16], "little")
    return pid, start


def clean_stale(dry_run: bool = False) -> list[str]:
    """Remove rings whose producer is dead, and semaphores left without a segment.

    Returns the names (as in /dev/shm) that were, or with ``dry_run`` would be, removed.
    """
    try:
        entries = os.listdir(SHM_DIR)
    except OSError:
        return []
    segments = {e for e in entries if e.startswith(PREFIX)}
    removed: list[str] = []
    for seg in sorted(segments):
        owner = _segment_owner(seg)
        if owner is None or pid_alive(*owner):
            continue
        removed.append(seg)
        removed.extend(f"sem.{s[1:]}" for s in _sem_names(seg) if f"sem.{s[1:]}" in entries)
        if not dry_run:
            _unlink_all(seg)
    for e in sorted(entries):
        if e.startswith("sem." + PREFIX) and e not in removed:
            base = e[4:].rsplit("-", 1)[0]
            if base not in segments:
                removed.append(e)
                if not dry_run:
                    with contextlib.suppress(posix_ipc.ExistentialError):
                        posix_ipc.unlink_semaphore("/" + e[4:])
    return removed
