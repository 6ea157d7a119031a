"""streamenc: record robot camera frames straight to video through shared memory."""

from .errors import (
    DiskFull,
    EncoderError,
    EncoderUnavailable,
    FrameError,
    PeerDied,
    RingTimeout,
    ShmTooSmall,
    StreamencError,
)
from .ring import FrameRing, Slot

__version__ = "0.1.0"

__all__ = [
    "FrameRing",
    "Slot",
    "StreamencError",
    "FrameError",
    "RingTimeout",
    "PeerDied",
    "ShmTooSmall",
    "EncoderUnavailable",
    "EncoderError",
    "DiskFull",
]
