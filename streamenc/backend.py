"""What records a Recorder's frames (a ``Backend``), and what it reports back.

Two backends exist: ``videos.VideoBackend`` (rings, spill files, encoder processes) and
``png.PngBackend`` (LeRobot's image layout). Both import this module and nothing of the
Recorder's, and the Recorder imports both: the dependencies run one way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class EpisodeVideo:
    """One camera's episode: the file, its frame count, the encoder, and LeRobot-format stats."""

    path: Path
    frames: int
    codec: str
    stats: dict[str, np.ndarray] | None


@dataclass(frozen=True)
class CameraHealth:
    """A camera's pipeline at a glance: encoder pid, frames waiting in the ring and in the
    spill file for the encoder to take, frames it has taken in total, its restarts, how
    the scheduler sees its threads ("idle nice 0"; never a real-time class), the slots of
    its ring (fewer than asked when /dev/shm is short; 0 without a ring), how far behind
    the encoder is (the frames waiting, in seconds of video), and the CPU it got over its
    last second, in cores (what is left to it on a busy machine)."""

    pid: int
    queued: int
    spilled: int
    encoded: int
    restarts: int
    sched: str = "unknown"
    slots: int = 0
    behind_s: float = 0.0
    cpu: float = 0.0


class Backend(Protocol):
    """What records a Recorder's frames. Each call is for all cameras unless it names one."""

    codec: str

    def existing(self, episode: int, videos: dict[str, Path]) -> list[Path]:
        """What is already on disk for this episode (the Recorder never overwrites it)."""

    def start(self, episode: int, videos: dict[str, Path]) -> None: ...

    def check(self, cameras: Iterable[str]) -> None:
        """Raise a failure already reported for these cameras, before a frame is put."""

    def put(self, camera: str, frame: np.ndarray, ts: int, episode: int, index: int) -> None:
        """One frame ``Camera.frame`` accepted: HWC (any strides; uint8, or float in [0, 1]),
        or for a depth camera (H, W) in its dtype (or float64 for a float32 one)."""

    def seal(self, episode: int) -> None:
        """The last frame is in: start finishing, without waiting."""

    def end(self, episode: int) -> dict[str, EpisodeVideo]: ...

    def cancel(self, episode: int, sealed: bool) -> None: ...

    def health(self) -> dict[str, CameraHealth]: ...

    @property
    def dropped(self) -> dict[str, int]: ...

    def close(self) -> None: ...
