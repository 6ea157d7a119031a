"""Typed errors. Each also derives from the builtin it matches (PyAV's habit),
so ``except ValueError`` and ``except TimeoutError`` keep working for callers
who do not know streamenc."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator


class StreamencError(Exception):
    """Base class of every error streamenc raises on purpose."""


class FrameError(StreamencError, ValueError):
    """A frame of the wrong shape, dtype, layout or range. Nothing is recorded
    for it, and the ring or episode stays usable."""


class ConfigError(StreamencError, ValueError):
    """An encoder or recorder setting is out of range; raised at construction."""


class RingTimeout(StreamencError, TimeoutError):
    """A put or get waited longer than its timeout."""


class PeerDied(StreamencError):
    """The process on the other side of a ring died or closed it while we waited."""


class ShmTooSmall(StreamencError, MemoryError):
    """/dev/shm cannot back the requested ring. Raised before mapping, so a
    short tmpfs never turns into a SIGBUS later."""

    def __init__(self, needed: int, free: int, path: str = "/dev/shm") -> None:
        self.needed, self.free, self.path = needed, free, path
        super().__init__(
            f"{path} has {free / 2**20:.1f} MiB free but the ring needs {needed / 2**20:.1f} MiB; "
            f"use fewer slots, or give the container more (docker run --shm-size=1g)"
        )


class EncoderUnavailable(StreamencError, RuntimeError):
    """The requested encoder cannot open a session on this machine."""


class EncoderError(StreamencError, RuntimeError):
    """An encoder process failed; the message carries FFmpeg's text."""


class DiskFull(StreamencError, OSError):
    """A write hit ENOSPC. Names the path and the bytes it needed."""

    def __init__(self, path: str, needed: int) -> None:
        self.path, self.needed = path, needed
        super().__init__(f"disk full writing {path}: needed {needed} more bytes")


@contextlib.contextmanager
def disk_full_guard(path: object, needed: int) -> Iterator[None]:
    """Turn ENOSPC (and EDQUOT) from the block into DiskFull naming ``path``."""
    try:
        yield
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT) and not isinstance(e, DiskFull):
            raise DiskFull(str(path), needed) from e
        raise


__all__ = [
    "StreamencError",
    "FrameError",
    "ConfigError",
    "RingTimeout",
    "PeerDied",
    "ShmTooSmall",
    "EncoderUnavailable",
    "EncoderError",
    "DiskFull",
]
