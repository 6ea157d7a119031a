"""Typed errors. Each also derives from the builtin it matches (PyAV's habit),
so ``except ValueError``, ``except RuntimeError`` or ``except OSError`` keep working
for callers who do not know streamenc.

What each class means:

- ``FrameError``: a frame of the wrong shape, dtype, layout or range (ValueError);
- ``ConfigError``: a setting out of range, refused at construction (ValueError);
- ``StateError``: a call that does not fit the object's state, such as a frame with no
  episode open, or a ring used after close (RuntimeError);
- ``RingTimeout``: a put or get waited longer than its timeout (TimeoutError);
- ``PeerDied``: the process on the other side of a ring died or closed it (BrokenPipeError);
- ``RingError``: a shared-memory segment that is missing, not a ring, damaged, or held by
  another consumer (OSError);
- ``ShmTooSmall``: /dev/shm cannot back a ring (OSError, ENOSPC);
- ``EncoderUnavailable``: the requested encoder cannot open a session here (RuntimeError);
- ``EncoderError``: an encoder process failed (RuntimeError);
- ``WriteError``: a file could not be written (OSError), and ``DiskFull``, one that hit ENOSPC;
- ``SpillError``: a spill file that is not one, or is damaged (OSError).
"""

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
    """An encoder, recorder or ring setting is out of range; raised at construction."""


class StateError(StreamencError, RuntimeError):
    """A call that does not fit the current state: no episode open, one still open, a
    sealed episode, a closed recorder or ring, the wrong side of a ring."""


class RingTimeout(StreamencError, TimeoutError):
    """A put or get waited longer than its timeout."""


class PeerDied(StreamencError, BrokenPipeError):
    """The process on the other side of a ring died or closed it while we waited."""


class RingError(StreamencError, OSError):
    """A shared-memory segment that is missing, is not a streamenc ring, is damaged, or
    already has a live consumer."""


class ShmTooSmall(StreamencError, OSError):
    """/dev/shm cannot back the requested ring. Raised before mapping, so a
    short tmpfs never turns into a SIGBUS later."""

    def __init__(self, needed: int, free: int, path: str = "/dev/shm") -> None:
        self.needed, self.free, self.path = needed, free, path
        super().__init__(
            errno.ENOSPC,
            f"{path} has {free / 2**20:.1f} MiB free but the ring needs {needed / 2**20:.1f} MiB; "
            f"use fewer slots, or give the container more (docker run --shm-size=1g)",
        )

    def __str__(self) -> str:
        return self.strerror or ""


class EncoderUnavailable(StreamencError, RuntimeError):
    """The requested encoder cannot open a session on this machine."""


class EncoderError(StreamencError, RuntimeError):
    """An encoder process failed; the message carries FFmpeg's text."""


class WriteError(StreamencError, OSError):
    """A file could not be written (a video, a PNG, a spill record)."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


class DiskFull(WriteError):
    """A write hit ENOSPC (or EDQUOT). Names the path and the bytes it needed."""

    def __init__(self, path: str, needed: int) -> None:
        self.path, self.needed = path, needed
        super().__init__(errno.ENOSPC, f"disk full writing {path}: needed {needed} more bytes")


class SpillError(StreamencError, OSError):
    """A spill file that is not one, or whose records are damaged or short."""


@contextlib.contextmanager
def disk_full_guard(path: object, needed: int) -> Iterator[None]:
    """Turn ENOSPC (and EDQUOT) from the block into DiskFull naming ``path``."""
    try:
        yield
    except OSError as e:
        if is_disk_full(e) and not isinstance(e, DiskFull):
            raise DiskFull(str(path), needed) from e
        raise


def is_disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


__all__ = [
    "StreamencError",
    "FrameError",
    "ConfigError",
    "StateError",
    "RingTimeout",
    "PeerDied",
    "RingError",
    "ShmTooSmall",
    "EncoderUnavailable",
    "EncoderError",
    "WriteError",
    "DiskFull",
    "SpillError",
]
