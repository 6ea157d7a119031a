"""Recorder: the user's handle. One FrameRing and one encoder process per camera.

The record loop only validates a frame and copies it into shared memory; all
encoding happens in the encoder processes. Frames are checked for every camera
before any is put, so the cameras' frame indices never drift apart.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import png
from .codecs import EncoderConfig, default_threads, select
from .encoder import EncoderProcess, EncoderSpec, EpisodeVideo
from .errors import EncoderError, FrameError, PeerDied, ShmTooSmall, StreamencError
from .ring import FrameRing, clean_stale

log = logging.getLogger("streamenc")

RING_BUDGET_BYTES = 256 * 2**20  # per camera; 64 slots of 480p fit, 1080p gets fewer
MAX_SLOTS = 64
MIN_SLOTS = 8


@dataclass(frozen=True)
class CameraHealth:
    """A camera's pipeline at a glance: encoder pid, frames waiting in the ring, frames
    spilled to disk, frames encoded in total, and encoder restarts."""

    pid: int
    queued: int
    spilled: int
    encoded: int
    restarts: int


def _camera_shape(name: str, shape: tuple[int, ...]) -> tuple[int, int, int]:
    if not name or not re.fullmatch(r"[\w.\-]+", name):
        raise StreamencError(f"camera name {name!r} must be letters, digits, '_', '.' or '-'")
    dims = tuple(int(d) for d in shape)
    if len(dims) == 2:
        dims = (*dims, 3)
    if len(dims) != 3 or dims[2] != 3 or dims[0] < 16 or dims[1] < 16 or dims[0] % 2 or dims[1] % 2:
        raise StreamencError(
            f"camera {name!r}: shape must be (height, width) or (height, width, 3), "
            f"even and at least 16 px, got {shape}"
        )
    return dims  # type: ignore[return-value]


def default_slots(shape: tuple[int, int, int]) -> int:
    return int(min(MAX_SLOTS, max(MIN_SLOTS, RING_BUDGET_BYTES // int(np.prod(shape)))))


class Recorder:
    """Record camera frames to one MP4 per camera per episode.

    ``cameras`` maps a name to (height, width). ``png_fallback``: True writes PNGs
    in LeRobot's layout instead of video; None (default) does that only when
    /dev/shm cannot hold the rings, with a warning; False raises ShmTooSmall then.
    """

    def __init__(
        self,
        root: str | Path,
        fps: int = 30,
        cameras: dict[str, tuple[int, ...]] | None = None,
        encoder: EncoderConfig | None = None,
        png_fallback: bool | None = None,
        *,
        slots: int | None = None,
        nice: int = 0,
    ) -> None:
        if not isinstance(fps, int) or fps <= 0:
            raise StreamencError(f"fps must be a positive int, got {fps!r}")
        self.root = Path(root)
        self.fps = fps
        self.cameras = {n: _camera_shape(n, s) for n, s in (cameras or {"front": (480, 640)}).items()}
        self.config = encoder or EncoderConfig()
        self._rings: dict[str, FrameRing] = {}
        self._encoders: dict[str, EncoderProcess] = {}
        self._png: png.PngWriter | None = None
        self._episode: int | None = None
        self._next_episode = 0
        self._index = 0
        self._closed = False
        self.codec = "png"
        clean_stale()
        try:
            if png_fallback:
                self._start_png()
            else:
                try:
                    self._start_encoders(slots, nice)
                except ShmTooSmall as e:
                    if png_fallback is False:
                        raise
                    log.warning("streamenc: %s; recording PNGs instead (png_fallback=False makes this an error)", e)
                    self._teardown_encoders()
                    self._start_png()
        except BaseException:
            self._teardown_encoders()
            raise
        atexit.register(self._at_exit)

    # -- set-up -------------------------------------------------------------------------
    def _start_encoders(self, slots: int | None, nice: int) -> None:
        self.codec = select(self.config)
        threads = self.config.threads or default_threads(len(self.cameras))
        for name, shape in self.cameras.items():
            self._rings[name] = FrameRing.create(shape, "uint8", slots=slots or default_slots(shape))
        for name in self.cameras:
            spec = EncoderSpec(name, self._rings[name].name, self.fps, self.codec, self.config, threads, nice)
            self._encoders[name] = EncoderProcess(spec)
        for enc in self._encoders.values():
            enc.wait_ready()

    def _start_png(self) -> None:
        self.codec = "png"
        self._png = png.PngWriter(self.root, self.cameras, threads=max(2, 2 * len(self.cameras)))

    # -- episodes -------------------------------------------------------------------------
    def video_path(self, camera: str, episode: int) -> Path:
        return self.root / "videos" / camera / f"episode-{episode:06d}.mp4"

    def start_episode(self, episode: int | None = None) -> None:
        """Begin an episode (default: the one after the last). Refuses to overwrite one on disk."""
        self._check_open()
        if self._episode is not None:
            raise StreamencError(f"episode {self._episode} is still open: end_episode() or cancel_episode() first")
        ep = self._next_episode if episode is None else int(episode)
        if self._png is not None:
            existing = [png.episode_dir(self.root, c, ep) for c in self.cameras]
            existing = [p for p in existing if p.is_dir() and any(p.iterdir())]
        else:
            existing = [p for p in (self.video_path(c, ep) for c in self.cameras) if p.exists()]
        if existing:
            raise StreamencError(f"episode {ep} already exists ({existing[0]}); remove it or choose another index")
        if self._png is not None:
            self._png.start_episode(ep)
        else:
            for cam, enc in self._encoders.items():
                enc.send("start", ep, str(self.video_path(cam, ep)))
            for cam, enc in self._encoders.items():
                kind, value = enc._reply(60, "start_episode")
                if kind != "started":
                    raise EncoderError(f"camera {cam}: could not start episode {ep}: {value}")
        self._episode, self._index = ep, 0

    def _validate(self, frames: dict[str, np.ndarray]) -> None:
        if not isinstance(frames, dict):
            raise FrameError(f"add_frame takes a dict camera -> frame, got {type(frames).__name__}")
        unknown = set(frames) - set(self.cameras)
        missing = set(self.cameras) - set(frames)
        if unknown or missing:
            raise FrameError(
                f"cameras do not match: unknown {sorted(unknown)}, missing {sorted(missing)}; "
                f"declared {sorted(self.cameras)}"
            )
        for cam, frame in frames.items():
            h, w, c = self.cameras[cam]
            if not isinstance(frame, np.ndarray):
                raise FrameError(f"camera {cam}: frame must be a numpy array, got {type(frame).__name__}")
            if frame.shape == (c, h, w):
                raise FrameError(f"camera {cam}: frame is CHW {frame.shape}; pass HWC, e.g. frame.transpose(1, 2, 0)")
            if frame.shape != (h, w, c):
                raise FrameError(f"camera {cam}: frame shape {frame.shape}, expected HWC {(h, w, c)}")
            if frame.dtype != np.uint8:
                hint = (
                    " (float in [0, 1]? use (frame * 255).round().astype(np.uint8))" if frame.dtype.kind == "f" else ""
                )
                raise FrameError(f"camera {cam}: frame dtype {frame.dtype}, expected uint8 RGB{hint}")

    def add_frame(self, frames: dict[str, np.ndarray], timestamp_ns: int | None = None) -> int:
        """Hand one frame per camera to the encoders; returns the frame's index in the episode.

        A bad frame raises FrameError and records nothing, for any camera; the episode goes on.
        """
        self._check_open()
        if self._episode is None:
            raise StreamencError("no episode is open: call start_episode() first")
        self._validate(frames)
        index = self._index
        if self._png is not None:
            for cam, frame in frames.items():
                self._png.submit(cam, self._episode, index, frame)
        else:
            ts = time.monotonic_ns() if timestamp_ns is None else timestamp_ns
            for cam, frame in frames.items():
                ring = self._rings[cam]
                try:
                    if frame.flags.c_contiguous:
                        ring.put(frame, ts, episode=self._episode, frame_index=index)
                    else:
                        with ring.reserve(timestamp_ns=ts, episode=self._episode, frame_index=index) as buf:
                            np.copyto(buf, frame)
                except PeerDied as e:
                    raise EncoderError(f"camera {cam}: encoder process died: {e}") from e
        self._index += 1
        return index

    def end_episode(self) -> dict[str, EpisodeVideo]:
        """Wait for every frame to be encoded, close the files, and return them per camera."""
        self._check_open()
        if self._episode is None:
            raise StreamencError("no episode is open")
        ep, n = self._episode, self._index
        self._episode = None
        self._next_episode = ep + 1
        if self._png is not None:
            self._png.wait()
            return {
                cam: EpisodeVideo(
                    png.episode_dir(self.root, cam, ep), self._png.written[cam], "png", self._png.stats(cam)
                )
                for cam in self.cameras
            }
        for enc in self._encoders.values():
            enc.send("end", n)
        videos, errors = {}, []
        for cam, enc in self._encoders.items():
            try:
                kind, value = enc._reply(None, "end_episode")
            except EncoderError as e:
                errors.append(str(e))
                continue
            if kind == "ended" and value.frames == n:
                videos[cam] = value
            elif kind == "ended":
                errors.append(f"camera {cam}: encoded {value.frames} of {n} frames")
            else:
                errors.append(str(value))
        if errors:
            raise EncoderError("; ".join(errors))
        return videos

    def cancel_episode(self) -> None:
        """Drop the open episode: its frames are drained and its files removed. The next
        start_episode() reuses its index, as a re-recorded take."""
        self._check_open()
        if self._episode is None:
            return
        ep, n = self._episode, self._index
        self._episode = None
        if self._png is not None:
            with contextlib.suppress(StreamencError):
                self._png.wait()
            for cam in self.cameras:
                png.remove_episode(self.root, cam, ep)
            return
        for enc in self._encoders.values():
            enc.send("cancel", n)
        for cam, enc in self._encoders.items():
            kind, value = enc._reply(None, "cancel_episode")
            if kind != "cancelled":
                raise EncoderError(f"camera {cam}: cancel failed: {value}")

    def health(self) -> dict[str, CameraHealth]:
        self._check_open()
        if self._png is not None:
            import os

            q = self._png.queued
            return {c: CameraHealth(os.getpid(), q, 0, self._png.written[c], 0) for c in self.cameras}
        return {
            cam: CameraHealth(enc.pid, self._rings[cam].queued, 0, self._rings[cam].tail, 0)
            for cam, enc in self._encoders.items()
        }

    # -- shutdown --------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise StreamencError("recorder is closed")

    def close(self) -> None:
        """Finalize an open episode, stop the encoder processes by pid and unlink the rings.
        Safe to call twice."""
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
            self._teardown_encoders()
            if self._png is not None:
                self._png.close()

    def _teardown_encoders(self) -> None:
        for enc in self._encoders.values():
            enc.stop()
        for ring in self._rings.values():
            ring.close()
            ring.unlink()
        self._encoders.clear()
        self._rings.clear()

    def _at_exit(self) -> None:
        """Ctrl-C or a plain exit with an episode open: finalize it rather than lose it."""
        if self._episode is not None:
            log.warning("streamenc: finalizing episode %s at exit", self._episode)
        self.close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
