"""Recorder: the user's handle on a recording, and the public types it returns.

The Recorder owns what is the same whatever records the frames: the cameras and their
frame contract, episode numbering and state, and shutdown. The frames go to a backend:
``videos.VideoBackend`` (rings, spill files, encoder processes) or ``png.PngBackend``
(LeRobot's PNG layout, when asked or when /dev/shm cannot hold the rings). Frames are
checked for every camera before any is put, so the cameras' frame indices never drift
apart.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .backend import Backend, CameraHealth, EpisodeVideo
from .camera import Camera
from .codecs import EncoderConfig, depth_config
from .depth import Depth
from .errors import ConfigError, FrameError, ShmTooSmall, StateError, StreamencError
from .png import PngBackend
from .segments import clean_stale
from .videos import MIN_SLOTS, VideoBackend

__all__ = ["Recorder", "EpisodeVideo", "CameraHealth"]  # the types it returns live in backend.py

log = logging.getLogger("streamenc")

OVERFLOW = ("spill", "block", "drop")


class Recorder:
    """Record camera frames to one MP4 per camera per episode.

    ``cameras`` maps a name to (height, width) for an RGB camera, or to a ``Depth`` for
    a depth camera (uint16 mm or float32 m frames, encoded as LeRobot 0.6's lossless
    12-bit depth video with ``depth_encoder``, default ``depth_config()``).
    ``png_fallback``: True writes PNGs (TIFFs for depth) in LeRobot's layout instead of
    video; None (default) does that only when /dev/shm cannot hold even the smallest
    rings, with a warning; False raises ShmTooSmall then. ``overflow`` says what a full ring does: "spill" (default, for
    live recording), "block" (offline conversion), or "drop" (counted).
    """

    def __init__(
        self,
        root: str | Path,
        fps: int = 30,
        cameras: dict[str, tuple[int, ...] | Depth | Camera] | None = None,
        encoder: EncoderConfig | None = None,
        png_fallback: bool | None = None,
        *,
        depth_encoder: EncoderConfig | None = None,
        overflow: str = "spill",
        slots: int | None = None,
        spill_dir: str | Path | None = None,
        warn_behind_s: float = 2.0,
    ) -> None:
        if not isinstance(fps, int) or fps <= 0:
            raise ConfigError(f"fps must be a positive int, got {fps!r}")
        if overflow not in OVERFLOW:
            raise ConfigError(f"overflow must be one of {OVERFLOW}, got {overflow!r}")
        if slots is not None and slots < MIN_SLOTS:
            raise ConfigError(f"slots must be at least {MIN_SLOTS}, got {slots}")
        self.root = Path(root)
        self.fps = fps
        declared = cameras or {"front": (480, 640)}
        self.cameras: dict[str, Camera] = {n: Camera.declare(n, s) for n, s in declared.items()}
        self.config = encoder or EncoderConfig()
        self.depth_config = depth_encoder or depth_config()
        if not self.depth_config.depth:
            raise ConfigError(
                f"depth_encoder must encode 12-bit gray codes (pix_fmt gray12le, vcodec libx265), "
                f"got {self.depth_config.vcodec} {self.depth_config.pix_fmt}; see streamenc.depth_config()"
            )
        if self.config.depth:
            raise ConfigError("encoder is for RGB cameras; gray12le is a depth format (depth_encoder=)")
        self.overflow = overflow
        self.spill_dir = Path(spill_dir) if spill_dir else self.root / ".spill"
        self._spill_dir_was_there = self.spill_dir.is_dir()  # else it is ours: removed at close when empty
        self._episode: int | None = None
        self._sealed = False  # seal_episode() called: the backend is finishing it
        self._videos: dict[str, Path] = {}
        self._counts: dict[str, int] = {}
        self._next_episode = 0
        self._index = 0
        self._closed = False
        clean_stale()
        self._backend = self._png() if png_fallback else self._video_or_png(png_fallback, slots, warn_behind_s)
        atexit.register(self._at_exit)

    def _video_or_png(self, png_fallback: bool | None, slots: int | None, warn_behind_s: float) -> Backend:
        """Rings and encoders; PNGs instead when /dev/shm cannot hold the rings, unless
        ``png_fallback`` is False."""
        try:
            return VideoBackend(
                self.fps,
                list(self.cameras.values()),
                self.config,
                depth_config=self.depth_config,
                overflow=self.overflow,
                slots=slots,
                spill_dir=self.spill_dir,
                warn_behind_s=warn_behind_s,
            )
        except ShmTooSmall as e:
            if png_fallback is False:
                raise
            log.warning("streamenc: %s; recording PNGs instead (png_fallback=False makes this an error)", e)
            return self._png()

    def _png(self) -> Backend:
        return PngBackend(self.root, list(self.cameras.values()), threads=max(2, 2 * len(self.cameras)))

    @property
    def codec(self) -> str:
        """The encoder in use ("libsvtav1", "h264_nvenc", ...), or "png"."""
        return self._backend.codec

    # -- episodes -------------------------------------------------------------------------
    def video_path(self, camera: str, episode: int) -> Path:
        return self.root / "videos" / camera / f"episode-{episode:06d}.mp4"

    def start_episode(self, episode: int | None = None, videos: Mapping[str, str | Path] | None = None) -> None:
        """Begin an episode (default: the one after the last). Refuses to overwrite one on disk.

        ``videos`` puts this episode's file for each camera at the given path instead of
        ``video_path(camera, episode)``; an embedding app (the LeRobot adapter) chooses them.
        """
        self._check_open()
        if self._episode is not None:
            raise StateError(f"episode {self._episode} is still open: end_episode() or cancel_episode() first")
        ep = self._next_episode if episode is None else int(episode)
        if videos is not None and set(videos) != set(self.cameras):
            raise ConfigError(f"videos must name a path for each camera {sorted(self.cameras)}, got {sorted(videos)}")
        paths = {c: Path(videos[c]) if videos else self.video_path(c, ep) for c in self.cameras}
        existing = self._backend.existing(ep, paths)
        if existing:
            raise StateError(f"episode {ep} already exists ({existing[0]}); remove it or choose another index")
        self._backend.start(ep, paths)
        self._episode, self._index, self._videos, self._sealed = ep, 0, paths, False
        self._counts = dict.fromkeys(self.cameras, 0)

    def add_frame(self, frames: dict[str, np.ndarray], timestamp_ns: int | None = None) -> int:
        """Hand one frame per camera to the encoders; returns the frame's index in the episode.

        A bad frame raises FrameError and records nothing, for any camera; the episode goes on.
        A full disk, under the spill or under a video, raises DiskFull.
        """
        self._check_taking_frames()
        if not isinstance(frames, dict):
            raise FrameError(f"add_frame takes a dict camera -> frame, got {type(frames).__name__}")
        unknown, missing = set(frames) - set(self.cameras), set(self.cameras) - set(frames)
        if unknown or missing:
            raise FrameError(
                f"cameras do not match: unknown {sorted(unknown)}, missing {sorted(missing)}; "
                f"declared {sorted(self.cameras)}"
            )
        views = {cam: self.cameras[cam].frame(frame, strict=True) for cam, frame in frames.items()}
        index = self._index
        if any(n != index for n in self._counts.values()):
            raise StateError("cameras are out of step in this episode: add_frame cannot follow add_camera_frame")
        self._backend.check(frames)
        ts = time.monotonic_ns() if timestamp_ns is None else timestamp_ns
        for cam, view in views.items():
            self._put(cam, view, ts)
        return index

    def add_camera_frame(self, camera: str, frame: object, timestamp_ns: int | None = None) -> int:
        """Hand one camera's next frame over, for loops that deliver cameras one at a time.

        Accepts what LeRobot accepts: HWC or CHW, uint8 or float in [0, 1], or a PIL
        image; it is converted in one pass into the ring slot. A depth camera takes
        (H, W), (H, W, 1) or (1, H, W) in its dtype. Returns its index.
        """
        self._check_taking_frames()
        if camera not in self.cameras:
            raise FrameError(f"unknown camera {camera!r}; declared {sorted(self.cameras)}")
        view = self.cameras[camera].frame(frame, strict=False)
        self._backend.check((camera,))
        return self._put(camera, view, time.monotonic_ns() if timestamp_ns is None else timestamp_ns)

    def _put(self, camera: str, frame: np.ndarray, ts: int) -> int:
        """The tail of add_frame and add_camera_frame: one validated frame to the backend."""
        index, episode = self._counts[camera], self._episode
        assert episode is not None  # _check_taking_frames() said so
        self._backend.put(camera, frame, ts, episode, index)
        self._counts[camera] = index + 1
        self._index = max(self._index, index + 1)
        return index

    def seal_episode(self) -> None:
        """Declare the open episode's last frame added, without waiting: the encoders start
        flushing it now (SVT-AV1 at g=2 still holds 8 frames, ~50 ms of work), while the caller
        does its own saving. end_episode() then only waits for what is left. No frame can
        be added after this; cancel_episode() still drops the episode."""
        self._check_open()
        if self._episode is None:
            raise StateError("no episode is open")
        if self._sealed or self._index == 0:
            return  # an empty episode is refused (and cancelled) by end_episode
        self._sealed = True
        self._backend.seal(self._episode)

    def end_episode(self) -> dict[str, EpisodeVideo]:
        """Wait for every frame to be encoded, close the files, and return them per camera."""
        self._check_open()
        if self._episode is None:
            raise StateError("no episode is open")
        ep, n = self._episode, self._index
        if n == 0:
            self.cancel_episode()
            raise StateError(f"episode {ep} has no frames; nothing was saved")
        self.seal_episode()
        self._episode, self._sealed = None, False
        self._next_episode = ep + 1
        return self._backend.end(ep)

    def cancel_episode(self) -> None:
        """Drop the open episode: its frames are drained and its files removed. The next
        start_episode() reuses its index, as a re-recorded take."""
        self._check_open()
        if self._episode is None:
            return
        ep, sealed = self._episode, self._sealed
        self._episode, self._sealed = None, False
        self._backend.cancel(ep, sealed)

    def health(self) -> dict[str, CameraHealth]:
        self._check_open()
        return self._backend.health()

    @property
    def dropped(self) -> dict[str, int]:
        """Frames dropped per camera in this or the last episode (overflow="drop" only)."""
        return self._backend.dropped

    # -- shutdown --------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise StateError("recorder is closed")

    def _check_taking_frames(self) -> None:
        self._check_open()
        if self._episode is None:
            raise StateError("no episode is open: call start_episode() first")
        if self._sealed:
            raise StateError(f"episode {self._episode} is sealed: end_episode() or cancel_episode() it first")

    def close(self) -> None:
        """Finalize an open episode, stop the encoder processes by pid and unlink the rings;
        the spill folder goes too when the recorder made it and it is empty. Safe to call
        twice."""
        if self._closed:
            return
        try:
            if self._episode is not None:
                try:
                    self.end_episode()
                except StreamencError as e:
                    log.error("streamenc: could not finalize episode on close: %s", e)
        finally:
            self._closed = True
            atexit.unregister(self._at_exit)
            self._backend.close()
            if not self._spill_dir_was_there:
                with contextlib.suppress(OSError):  # not empty (a file kept for recovery), or gone
                    self.spill_dir.rmdir()

    def _at_exit(self) -> None:
        """Ctrl-C or a plain exit with an episode open: finalize it rather than lose it."""
        if self._episode is not None:
            log.warning("streamenc: finalizing episode %s at exit", self._episode)
        self.close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
