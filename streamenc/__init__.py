"""streamenc: record robot camera frames straight to video through shared memory."""

from .codecs import EncoderConfig, EncoderInfo, probe
from .encoder import EpisodeVideo
from .errors import (
    ConfigError,
    DiskFull,
    EncoderError,
    EncoderUnavailable,
    FrameError,
    PeerDied,
    RingTimeout,
    ShmTooSmall,
    StreamencError,
)
from .recorder import CameraHealth, Recorder
from .ring import FrameRing, Slot

__version__ = "0.1.0"

__all__ = [
    "FrameRing",
    "Recorder",
    "EncoderConfig",
    "EncoderInfo",
    "EpisodeVideo",
    "CameraHealth",
    "probe",
    "Slot",
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
