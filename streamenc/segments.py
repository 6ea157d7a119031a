"""The POSIX objects behind a ring: their names, their removal, and stale ones.

A ring named ``streamenc-<uuid>`` is one shared-memory segment, ``/dev/shm/<name>``, and
two semaphores, ``/dev/shm/sem.<name>-free`` and ``sem.<name>-filled``. The segment's
header names its producer (pid and start time), so anyone can tell whether a segment is
still in use: that is how stale segments are found, and how the test suite tells its own
segments from those of a recorder running beside it.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import posix_ipc

from . import _ring, liveness
from .errors import ConfigError, RingError, ShmTooSmall

SHM_DIR = "/dev/shm"
PREFIX = "streamenc-"
_MAP_FLAGS = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)  # pre-faulted: put() never faults
Semaphores = tuple[posix_ipc.Semaphore, posix_ipc.Semaphore]


def shm_free_bytes(path: str = SHM_DIR) -> int:
    """Bytes an unprivileged writer can still allocate in the shm filesystem."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def sem_names(name: str) -> tuple[str, str]:
    """The ring's two semaphores, as posix_ipc names them: free slots, filled slots."""
    return f"/{name}-free", f"/{name}-filled"


def create(name: str, size: int, slots: int, init: Callable[[mmap.mmap], None]) -> tuple[mmap.mmap, Semaphores]:
    """Make, map and ``init`` a segment of ``size`` bytes, then its semaphores (``slots``
    free). Every page is reserved now, so a short /dev/shm raises ShmTooSmall here rather
    than a SIGBUS at the first write. On any failure nothing is left behind."""
    shm = posix_ipc.SharedMemory("/" + name, posix_ipc.O_CREX, mode=0o600, size=size)
    try:
        try:
            os.posix_fallocate(shm.fd, 0, size)  # tmpfs reserves the pages now or says ENOSPC
        except OSError as e:
            raise ShmTooSmall(size, shm_free_bytes()) from e
        mm = mmap.mmap(shm.fd, size, flags=_MAP_FLAGS)
        init(mm)
        free_name, filled_name = sem_names(name)
        free = posix_ipc.Semaphore(free_name, posix_ipc.O_CREX, mode=0o600, initial_value=slots)
        filled = posix_ipc.Semaphore(filled_name, posix_ipc.O_CREX, mode=0o600, initial_value=0)
    except BaseException:
        unlink(name)
        raise
    finally:
        shm.close_fd()
    return mm, (free, filled)


def open_existing(name: str) -> tuple[mmap.mmap, Semaphores]:
    """Map an existing ring's segment and open its semaphores; RingError if they are gone."""
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
    try:
        free_name, filled_name = sem_names(name)
        return mm, (posix_ipc.Semaphore(free_name), posix_ipc.Semaphore(filled_name))
    except posix_ipc.ExistentialError:
        mm.close()
        raise RingError(f"ring {name!r} has lost its semaphores (was it unlinked?)") from None


@dataclass(frozen=True)
class Geometry:
    """A ring's shape in memory: frame shape and dtype, slot count, and where things lie."""

    shape: tuple[int, ...]
    dtype: np.dtype
    slots: int
    payload: int  # bytes of one frame
    offset: int  # of slot 0
    stride: int  # between slots
    total: int  # of the segment

    @classmethod
    def of(cls, shape: tuple[int, ...], dtype: str | np.dtype, slots: int) -> Geometry:
        """ConfigError for a geometry no ring can have."""
        shape = tuple(int(d) for d in shape)
        dt = np.dtype(dtype)
        if not 1 <= len(shape) <= _ring.MAX_DIMS or any(d <= 0 for d in shape):
            raise ConfigError(f"shape must have 1..{_ring.MAX_DIMS} positive dims, got {shape}")
        if dt.hasobject or dt.itemsize == 0:
            raise ConfigError(f"dtype {dt} cannot live in shared memory")
        if int(slots) < 1:
            raise ConfigError(f"slots must be >= 1, got {slots}")
        payload = int(np.prod(shape)) * dt.itemsize
        return cls(shape, dt, int(slots), payload, *_ring.layout(payload, int(slots)))


def ring_bytes(shape: tuple[int, ...], dtype: str | np.dtype = "uint8", slots: int = 64) -> int:
    """Size of the segment a ring of this geometry maps."""
    return Geometry.of(shape, dtype, slots).total


def check_header(name: str, header: dict, size: int) -> None:
    """RingError unless a mapped segment is a ring this streamenc can read."""
    if header["magic"] != _ring.MAGIC:
        raise RingError(f"{name!r} is not a streamenc ring (bad magic {header['magic']:#x})")
    if header["version"] != _ring.VERSION:
        raise RingError(f"{name!r} has ring layout version {header['version']}, this streamenc reads {_ring.VERSION}")
    if header["slot_offset"] + header["slot_stride"] * header["slots"] > size:
        raise RingError(f"{name!r} is shorter than its header says")


def unlink(name: str) -> None:
    """Remove a ring's segment and semaphores, whichever of them exist."""
    for sem in sem_names(name):
        with contextlib.suppress(posix_ipc.ExistentialError):
            posix_ipc.unlink_semaphore(sem)
    with contextlib.suppress(posix_ipc.ExistentialError):
        posix_ipc.unlink_shared_memory("/" + name)


def owner(name: str) -> tuple[int, int] | None:
    """(producer pid, start time) from a segment's header, or None if it is not a ring."""
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


def ring_of(entry: str) -> str | None:
    """The ring an entry of /dev/shm belongs to (a segment, or one of its semaphores)."""
    if entry.startswith(PREFIX):
        return entry
    if entry.startswith("sem." + PREFIX):
        return entry[4:].rsplit("-", 1)[0]
    return None


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
        found = owner(seg)
        if found is None or liveness.alive(*found):
            continue
        removed.append(seg)
        removed.extend(f"sem.{s[1:]}" for s in sem_names(seg) if f"sem.{s[1:]}" in entries)
        if not dry_run:
            unlink(seg)
    for e in sorted(entries):
        if e.startswith("sem." + PREFIX) and e not in removed and ring_of(e) not in segments:
            removed.append(e)
            if not dry_run:
                with contextlib.suppress(posix_ipc.ExistentialError):
                    posix_ipc.unlink_semaphore("/" + e[4:])
    return removed
