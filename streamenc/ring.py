"""FrameRing: a single-producer, single-consumer ring of frames in POSIX shared memory.

The Cython core (``streamenc._ring``) owns the byte layout, the cursors and
the GIL-free copy. This module adds what a user touches: a named segment and its
semaphores (segments.py), waits that notice a dead peer (liveness.py), typed errors.
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

from . import _ring, liveness, segments
from .errors import FrameError, PeerDied, RingError, RingTimeout, ShmTooSmall, StateError
from .segments import PREFIX, shm_free_bytes

POLL_S = 0.05  # how often a blocked wait looks at the peer's pid


class Counters:
    """One side's shared counters in the ring header, by index: every process reads them,
    only that side stores them. What each one means is for the ring's users to say
    (protocol.py); the ring only keeps them."""

    __slots__ = ("_ring", "_producer")

    def __init__(self, ring: FrameRing, producer: bool) -> None:
        self._ring, self._producer = ring, producer

    def __getitem__(self, i: int) -> int:
        self._ring._check_open()
        return self._ring._core.counter(self._producer, i)

    def __setitem__(self, i: int, value: int) -> None:
        self._ring._check_open()
        if self._producer != self._ring.is_producer:
            side = "producer" if self._ring.is_producer else "consumer"
            raise StateError(f"the {side} cannot store the other side's counters")
        self._ring._core.set_counter(self._producer, i, value)

    def add(self, i: int, n: int = 1) -> None:
        self[i] = self[i] + n


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

    def __init__(self, name: str, mm: mmap.mmap, sems: segments.Semaphores, producer: bool) -> None:
        self._name = name
        self._mm, (self._free, self._filled) = mm, sems
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
        self.producer_counters = Counters(self, producer=True)
        self.consumer_counters = Counters(self, producer=False)

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
        g = segments.Geometry.of(shape, dtype, slots)
        free = shm_free_bytes() if shm_free is None else shm_free
        if g.total > free:
            raise ShmTooSmall(g.total, free)

        def init(mm: mmap.mmap) -> None:
            core = _ring.RingCore(mm)
            me = os.getpid()
            core.init(
                g.shape, g.dtype.str.encode(), g.payload, g.slots, g.offset, g.stride, me, liveness.start_time(me)
            )
            core.release()

        name = PREFIX + uuid.uuid4().hex
        mm, sems = segments.create(name, g.total, g.slots, init)
        return cls(name, mm, sems, producer=True)

    @classmethod
    def attach(cls, name: str) -> FrameRing:
        """Attach to an existing ring as its consumer. A consumer that replaces a dead one
        resumes at the first slot not yet released."""
        name = name.lstrip("/")
        if not name.startswith(PREFIX):
            raise RingError(f"{name!r} is not a streamenc ring name")
        mm, sems = segments.open_existing(name)
        core = _ring.RingCore(mm)
        try:
            h = core.header()
            segments.check_header(name, h, len(mm))
            if (
                h["consumer_pid"]
                and not h["consumer_closed"]
                and h["consumer_pid"] != os.getpid()
                and liveness.alive(h["consumer_pid"], h["consumer_start"])
            ):
                raise RingError(f"ring {name!r} already has a live consumer, pid {h['consumer_pid']}")
            core.set_consumer(os.getpid(), liveness.start_time(os.getpid()))
        except BaseException:
            core.release()
            for sem in sems:
                sem.close()
            mm.close()
            raise
        core.release()
        return cls(name, mm, sems, producer=False)

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
        self._wait(self._free, timeout, False, "a free slot")
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
            self._wait(self._filled, timeout, True, "a frame")
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
    def _gone(self, producer: bool) -> str | None:
        """Why the other side will never post again (it closed, or died), or None."""
        side = "producer" if producer else "consumer"
        pid, start, closed = self._core.producer if producer else self._core.consumer
        if closed:
            return f"{side} pid {pid} closed ring {self._name}"
        if pid and not liveness.alive(pid, start):  # a consumer's pid is 0 until it attaches
            return f"{side} pid {pid} of ring {self._name} died"
        return None

    def _wait(self, sem: posix_ipc.Semaphore, timeout: float | None, producer: bool, what: str) -> None:
        """Take ``sem``, waiting up to ``timeout``; PeerDied once that side is gone."""
        try:
            sem.acquire(0)
            return
        except posix_ipc.BusyError:
            pass
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            why = self._gone(producer)
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
        segments.unlink(self._name)

    def __enter__(self) -> FrameRing:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        if self.is_producer:
            self.unlink()

    def __repr__(self) -> str:
        role = "producer" if self.is_producer else "consumer"
        return f"<FrameRing {self._name} {role} shape={self.shape} dtype={self.dtype} slots={self.slots}>"
