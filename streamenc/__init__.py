"""streamenc: record robot camera frames straight to video through shared memory."""

from ._version import __version__
from .codecs import EncoderConfig, EncoderInfo, depth_config, probe
from .depth import Depth
from .errors import (
    ConfigError,
    DiskFull,
    EncoderError,
    EncoderUnavailable,
    FrameError,
    PeerDied,
    RingError,
    RingTimeout,
    ShmTooSmall,
    SpillError,
    StateError,
    StreamencError,
    WriteError,
)
from .recorder import CameraHealth, EpisodeVideo, Recorder
from .ring import FrameRing, Slot

__all__ = [
    "FrameRing",
    "Recorder",
    "EncoderConfig",
    "Depth",
    "depth_config",
    "EncoderInfo",
    "EpisodeVideo",
    "CameraHealth",
    "probe",
    "Slot",
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
    "__version__",
]
