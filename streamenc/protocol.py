"""The messages between a Recorder and its encoder processes, as one typed protocol.

Each message is a small frozen dataclass, pickled over the socketpair; a few numbers the
two sides share all the time (spill cursors, counts) are counters in the ring header instead,
named here. The recorder sends
an ``EncoderSpec`` first, then commands; the encoder answers with replies. ``End`` and
``Cancel`` carry the index of the last frame the recorder put for the episode, so the
encoder knows exactly how many to drain before it answers ``Ended`` / ``Cancelled``.
A failure is a ``Failed``: sent at once mid-episode (``final=False``, the episode goes on
until its end), or as the answer to a command (``final=True``). ``error_for`` is the one
place a failure becomes the exception the user sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from .codecs import EncoderConfig
from .depth import Depth
from .errors import DiskFull, EncoderError, StreamencError, WriteError, is_disk_full


@dataclass(frozen=True)
class EncoderSpec:
    """What an encoder process is for: its camera, ring, spill file and settings."""

    camera: str
    ring: str
    spill: str
    fps: int
    vcodec: str
    config: EncoderConfig
    threads: int
    depth: Depth | None = None  # a depth camera: quantized to 12-bit codes before encoding


# -- the ring header's counters: each side stores its own line (ring.Counters) -------------
class RecorderCounter(IntEnum):
    """The recorder's counters in a camera's ring header (``ring.producer_counters``)."""

    SPILL_HEAD = 0  # records written to the spill file
    SPILL_BASE = 1  # spill index of the spill file's first record
    DROPPED = 2  # frames dropped (overflow="drop")


class EncoderCounter(IntEnum):
    """The encoder's counters in its camera's ring header (``ring.consumer_counters``)."""

    SPILL_READ = 0  # spill records the encoder has taken
    SPILL_DONE = 1  # spill records durable in the video
    ENCODED = 2  # frames the encoder has taken, in total
    SCHED = 3  # sched.pack() of its threads at the last check (0: not checked yet)
    RT_REPAIRED = 4  # real-time threads the encoder found and put back, in total
    CPU_MILLI = 5  # CPU the encoder process got over its last second, in thousandths of a core


# -- recorder -> encoder -------------------------------------------------------------------
@dataclass(frozen=True)
class Start:
    """Begin an episode's video at ``path``; ``resume``: after a restart, go on from the
    first frame not yet durable in the parts already written."""

    episode: int
    path: str
    resume: bool = False


@dataclass(frozen=True)
class End:
    """The episode's last frame is ``last`` (None: whatever the ring and spill still hold,
    when the recorder is gone)."""

    last: int | None


@dataclass(frozen=True)
class Cancel:
    """Drop the episode once frame ``last`` has gone by; remove its files."""

    last: int | None


@dataclass(frozen=True)
class Stop:
    """Finish and exit."""


# -- encoder -> recorder -------------------------------------------------------------------
@dataclass(frozen=True)
class Ready:
    pid: int


@dataclass(frozen=True)
class Started:
    episode: int
    first: int  # the first frame this encoder will write (> 0 after a resume)


@dataclass(frozen=True)
class Ended:
    episode: int
    path: str
    frames: int
    codec: str
    stats: dict | None


@dataclass(frozen=True)
class Cancelled:
    episode: int


@dataclass(frozen=True)
class Failed:
    """``kind``: "disk" (writing the video), "encoder" (FFmpeg, a codec), "order" (a frame
    out of order), "protocol" (a command that does not fit), "crash" (the serve loop died)."""

    kind: str
    text: str
    path: str | None = None
    errno: int | None = None
    final: bool = True


@dataclass(frozen=True)
class Stopped:
    pass


def error_for(failed: Failed, camera: str, frame_bytes: int) -> StreamencError:
    """The exception a failure becomes: DiskFull (needing one frame's bytes) for a full
    disk, WriteError for another write error, EncoderError for the rest."""
    if failed.kind == "disk":
        if is_disk_full(OSError(failed.errno, "")):
            return DiskFull(failed.path or "?", frame_bytes)
        return WriteError(failed.errno, f"camera {camera}: {failed.text} ({failed.path})")
    return EncoderError(f"camera {camera}: {failed.text}")
