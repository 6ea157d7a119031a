"""Recorder: the user's handle. One FrameRing, one spill file and one encoder process per camera.

The record loop only validates a frame and copies it into shared memory; all
encoding happens in the encoder processes. Frames are checked for every camera
before any is put, so the cameras' frame indices never drift apart. When a ring is
full the frame goes, in order, to the camera's spill file (``overflow="spill"``),
or the loop waits (``"block"``), or the frame is dropped and counted (``"drop"``).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import frames as framelib
from . import png, sched
from .codecs import EncoderConfig, default_threads, select
from .encoder import EncoderProcess, EncoderSpec, EpisodeVideo, existing_parts
from .errors import DiskFull, EncoderError, FrameError, PeerDied, RingTimeout, ShmTooSmall, StreamencError
from .ring import DROPPED, ENCODED, RT_REPAIRED, SCHED, FrameRing, clean_stale, ring_bytes, shm_free_bytes
from .spill import SpillWriter

log = logging.getLogger("streamenc")

RING_BUDGET_BYTES = 256 * 2**20  # per camera; 64 slots of 480p fit, 1080p gets fewer
MAX_SLOTS = 64
MIN_SLOTS = 16  # below this the encoder's held frames (look-ahead, open fragment) leave too little room
OVERFLOW = ("spill", "block", "drop")
RESTARTS_ALLOWED = 3  # within RESTART_WINDOW_S; one more failure and the camera is given up
RESTART_WINDOW_S = 10.0
PROGRESS_AFTER_S = 1.0


@dataclass(frozen=True)
class CameraHealth:
    """A camera's pipeline at a glance: encoder pid, frames waiting in the ring and in the
    spill file for the encoder to take, frames it has taken in total, its restarts, and
    how the scheduler sees its threads ("other nice 0"; never a real-time class)."""

    pid: int
    queued: int
    spilled: int
    encoded: int
    restarts: int
    sched: str = "unknown"


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


def plan_slots(shapes: list[tuple[int, int, int]], wanted: int | None, free: int) -> list[int]:
    """Slots per camera: the wanted number, or fewer (down to MIN_SLOTS) so that all rings
    fit in /dev/shm. Raises ShmTooSmall when even MIN_SLOTS do not fit."""
    slots = [wanted or default_slots(s) for s in shapes]
    need = sum(ring_bytes(s, "uint8", n) for s, n in zip(shapes, slots, strict=True))
    if need <= free:
        return slots
    floor = sum(ring_bytes(s, "uint8", MIN_SLOTS) for s in shapes)
    if floor > free:
        raise ShmTooSmall(floor, free)
    scale = free / need
    slots = [max(MIN_SLOTS, int(n * scale)) for n in slots]
    while sum(ring_bytes(s, "uint8", n) for s, n in zip(shapes, slots, strict=True)) > free:
        slots = [max(MIN_SLOTS, n - 1) for n in slots]
    log.warning(
        "streamenc: /dev/shm has %.0f MiB free; rings use %s slots instead of %s",
        free / 2**20,
        slots,
        [wanted or default_slots(s) for s in shapes],
    )
    return slots


class _Camera:
    """One camera's ring, spill file and encoder process, and this episode's counts."""

    def __init__(self, name: str, shape: tuple[int, int, int], slots: int, spec: dict, spill_dir: Path) -> None:
        self.name, self.shape = name, shape
        self.ring = FrameRing.create(shape, "uint8", slots=slots)
        self.spill = SpillWriter(spill_dir / f"{name}-{self.ring.name}.spill", self.ring)
        self.spec = EncoderSpec(name, self.ring.name, str(self.spill.path), **spec)
        self.enc = EncoderProcess(self.spec)
        self.restarts: list[float] = []
        self.failed: str | None = None
        self.put_count = 0
        self.last_index = -1
        self.dropped = 0
        self.warned = False

    # -- frames --------------------------------------------------------------------------
    def check(self) -> None:
        """Raise at once what the encoder reported failing (a full disk), before any frame of
        this call is put; a dead encoder is left to put(), which restarts it."""
        if self.failed is not None:
            return
        try:
            msg = self.enc.poll()
        except EncoderError:
            return
        if msg is not None and msg[0] == "failed":
            kind, *detail = msg[1]
            if kind == "disk":
                raise DiskFull(detail[0], self.ring.frame_bytes)
            raise EncoderError(f"camera {self.name}: {detail[-1]}")

    def _ring_put(self, frame: np.ndarray, ts: int, ep: int, index: int, timeout: float | None) -> None:
        if frame.dtype == np.uint8 and frame.flags.c_contiguous:
            self.ring.put(frame, ts, timeout, episode=ep, frame_index=index)
        else:  # strided (CHW) or float input: converted straight into the slot
            with self.ring.reserve(timeout, timestamp_ns=ts, episode=ep, frame_index=index) as buf:
                framelib.write(buf, frame)

    def rescue_put(self, frame: np.ndarray, ts: int, ep: int, index: int) -> bool:
        """A frame the spill could not write goes to the ring instead, if there is room."""
        try:
            self.ring.put(frame, ts, 0, episode=ep, frame_index=index)
            return True
        except (RingTimeout, PeerDied):  # a dead encoder is restarted by put() or end_episode
            return False

    def put(self, frame: np.ndarray, ts: int, ep: int, index: int, overflow: str, video: Path) -> None:
        if self.failed is None and not self.enc.alive:
            self.restart(ep, video)
        if self.spill.error is not None:  # a failed spill write: its frames go first, through the ring
            self.spill.rescue(self.rescue_put)
        if overflow == "block":
            while True:
                try:
                    self._ring_put(frame, ts, ep, index, None if self.failed is None else 0)
                    break
                except PeerDied:
                    self.restart(ep, video)
                except RingTimeout:  # the camera's encoder is given up: keep the frame on disk
                    self.spill.append(frame, ep, index, ts)
                    break
        elif overflow == "drop":
            try:
                self._ring_put(frame, ts, ep, index, 0)
            except (RingTimeout, PeerDied):
                self.dropped += 1
                self.ring.set_counter("producer", DROPPED, self.ring.counter("producer", DROPPED) + 1)
                return
        else:
            if self.spill.active and self.spill.caught_up():
                self.spill.active = False
            if not self.spill.active:
                try:
                    self._ring_put(frame, ts, ep, index, 0)
                except RingTimeout:
                    self.spill.active = True
                except PeerDied:
                    self.restart(ep, video)
                    self.spill.active = True
            if self.spill.active:
                self.spill.append(frame, ep, index, ts)
        self.put_count += 1
        self.last_index = index

    # -- the encoder process ----------------------------------------------------------------
    def restart(self, ep: int | None, video: Path | None) -> None:
        """Start a new encoder in place of a dead one; it resumes the open episode from the
        first frame not yet durable. Gives up after RESTARTS_ALLOWED in RESTART_WINDOW_S."""
        if self.failed is not None:
            return
        code = self.enc.exit_code
        self.enc.stop(timeout=1)
        now = time.monotonic()
        recent = [t for t in self.restarts if now - t < RESTART_WINDOW_S]
        if len(recent) >= RESTARTS_ALLOWED:
            self.failed = (
                f"encoder for {self.name} died {len(recent) + 1} times in {RESTART_WINDOW_S:g} s "
                f"(last exit code {code}); frames not encoded are kept in {self.spill.path}"
            )
            log.error("streamenc: %s", self.failed)
            return
        log.warning("streamenc: encoder for %s died (exit code %s); restarting", self.name, code)
        self.restarts.append(now)
        self.enc = EncoderProcess(self.spec)  # its start-up runs while the ring and spill take frames
        if ep is not None:
            self.enc.send("resume", ep, str(video))

    def health(self) -> CameraHealth:
        schedule = sched.unpack(self.ring.counter("consumer", SCHED))
        repaired = self.ring.counter("consumer", RT_REPAIRED)
        if repaired:
            schedule += f" ({repaired} real-time threads put back)"
        return CameraHealth(
            self.enc.pid,
            self.ring.unread,
            self.spill.backlog,
            self.ring.counter("consumer", ENCODED),
            len(self.restarts),
            schedule,
        )

    def close(self) -> None:
        self.enc.stop()
        self.spill.close(keep=self.failed is not None or self.spill.backlog > 0)
        self.ring.close()
        self.ring.unlink()


class _Countdown:
    """A progress bar over the frames waiting for their encoders when it appears."""

    def __init__(self, what: str, cams: dict[str, _Camera]) -> None:
        from tqdm import tqdm

        self.cams = list(cams.values())
        self.total = max(1, self.left())
        self.bar = tqdm(total=self.total, desc=f"streamenc: {what}", unit="frame")

    def left(self) -> int:
        return sum(c.ring.unread + c.spill.backlog for c in self.cams if c.failed is None)

    def update(self) -> None:
        done = min(self.total, max(0, self.total - self.left()))
        self.bar.update(max(0, done - self.bar.n))

    def close(self, done: bool) -> None:
        if done:
            self.bar.update(self.total - self.bar.n)
        self.bar.close()


class Recorder:
    """Record camera frames to one MP4 per camera per episode.

    ``cameras`` maps a name to (height, width). ``png_fallback``: True writes PNGs
    in LeRobot's layout instead of video; None (default) does that only when
    /dev/shm cannot hold even the smallest rings, with a warning; False raises
    ShmTooSmall then. ``overflow`` says what a full ring does: "spill" (default, for
    live recording), "block" (offline conversion), or "drop" (counted).
    """

    def __init__(
        self,
        root: str | Path,
        fps: int = 30,
        cameras: dict[str, tuple[int, ...]] | None = None,
        encoder: EncoderConfig | None = None,
        png_fallback: bool | None = None,
        *,
        overflow: str = "spill",
        slots: int | None = None,
        spill_dir: str | Path | None = None,
        warn_behind_s: float = 2.0,
    ) -> None:
        if not isinstance(fps, int) or fps <= 0:
            raise StreamencError(f"fps must be a positive int, got {fps!r}")
        if overflow not in OVERFLOW:
            raise StreamencError(f"overflow must be one of {OVERFLOW}, got {overflow!r}")
        if slots is not None and slots < MIN_SLOTS:
            raise StreamencError(f"slots must be at least {MIN_SLOTS}, got {slots}")
        self.root = Path(root)
        self.fps = fps
        self.cameras = {n: _camera_shape(n, s) for n, s in (cameras or {"front": (480, 640)}).items()}
        self.config = encoder or EncoderConfig()
        self.overflow = overflow
        self.warn_behind_s = warn_behind_s
        self.spill_dir = Path(spill_dir) if spill_dir else self.root / ".spill"
        self._cams: dict[str, _Camera] = {}
        self._png: png.PngWriter | None = None
        self._episode: int | None = None
        self._sealed = False  # seal_episode() called: the encoders are finishing it
        self._videos: dict[str, Path] = {}
        self._counts: dict[str, int] = {}
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
                    self._start_encoders(slots)
                except ShmTooSmall as e:
                    if png_fallback is False:
                        raise
                    log.warning("streamenc: %s; recording PNGs instead (png_fallback=False makes this an error)", e)
                    self._teardown()
                    self._start_png()
        except BaseException:
            self._teardown()
            raise
        atexit.register(self._at_exit)

    # -- set-up -------------------------------------------------------------------------
    def _start_encoders(self, slots: int | None) -> None:
        self.codec = select(self.config)
        names = list(self.cameras)
        plan = plan_slots([self.cameras[n] for n in names], slots, shm_free_bytes())
        spec = {
            "fps": self.fps,
            "vcodec": self.codec,
            "config": self.config,
            "threads": self.config.threads or default_threads(len(names)),
        }
        for name, n in zip(names, plan, strict=True):
            self._cams[name] = _Camera(name, self.cameras[name], n, spec, self.spill_dir)
        for cam in self._cams.values():
            cam.enc.wait_ready()

    def _start_png(self) -> None:
        self.codec = "png"
        self._png = png.PngWriter(self.root, self.cameras, threads=max(2, 2 * len(self.cameras)))

    # -- episodes -------------------------------------------------------------------------
    def video_path(self, camera: str, episode: int) -> Path:
        return self.root / "videos" / camera / f"episode-{episode:06d}.mp4"

    def start_episode(self, episode: int | None = None, videos: dict[str, str | Path] | None = None) -> None:
        """Begin an episode (default: the one after the last). Refuses to overwrite one on disk.

        ``videos`` puts this episode's file for each camera at the given path instead of
        ``video_path(camera, episode)``; an embedding app (the LeRobot adapter) chooses them.
        """
        self._check_open()
        if self._episode is not None:
            raise StreamencError(f"episode {self._episode} is still open: end_episode() or cancel_episode() first")
        ep = self._next_episode if episode is None else int(episode)
        if videos is not None and set(videos) != set(self.cameras):
            raise StreamencError(
                f"videos must name a path for each camera {sorted(self.cameras)}, got {sorted(videos)}"
            )
        paths = {c: Path(videos[c]) if videos else self.video_path(c, ep) for c in self.cameras}
        if self._png is not None:
            existing = [png.episode_dir(self.root, c, ep) for c in self.cameras]
            existing = [p for p in existing if p.is_dir() and any(p.iterdir())]
        else:
            existing = [p for p in paths.values() if p.exists()]
        if existing:
            raise StreamencError(f"episode {ep} already exists ({existing[0]}); remove it or choose another index")
        if self._png is not None:
            self._png.start_episode(ep)
        else:
            failed = [c.failed for c in self._cams.values() if c.failed]
            if failed:
                raise EncoderError("; ".join(failed))
            for name, cam in self._cams.items():
                cam.put_count, cam.last_index, cam.dropped, cam.warned = 0, -1, 0, False
                if not cam.enc.alive:
                    cam.restart(None, None)
                cam.enc.send("start", ep, str(paths[name]))
            for name, cam in self._cams.items():
                kind, value = cam.enc.expect({"started"}, 60, "start_episode")
                if kind != "started":
                    raise EncoderError(f"camera {name}: could not start episode {ep}: {value}")
        self._episode, self._index, self._videos, self._sealed = ep, 0, paths, False
        self._counts = dict.fromkeys(self.cameras, 0)

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
            framelib.strict(cam, frame, self.cameras[cam])

    def add_frame(self, frames: dict[str, np.ndarray], timestamp_ns: int | None = None) -> int:
        """Hand one frame per camera to the encoders; returns the frame's index in the episode.

        A bad frame raises FrameError and records nothing, for any camera; the episode goes on.
        A full disk, under the spill or under a video, raises DiskFull.
        """
        self._check_taking_frames()
        self._validate(frames)
        index, ep = self._index, self._episode
        if any(n != index for n in self._counts.values()):
            raise StreamencError("cameras are out of step in this episode: add_frame cannot follow add_camera_frame")
        if self._png is not None:
            for cam, frame in frames.items():
                self._png.submit(cam, ep, index, frame)
        else:
            for cam in self._cams.values():
                cam.check()
            ts = time.monotonic_ns() if timestamp_ns is None else timestamp_ns
            for name, frame in frames.items():
                self._cams[name].put(frame, ts, ep, index, self.overflow, self._videos[name])
            if index % self.fps == 0 and self.overflow != "block":  # blocking is the point there
                self._warn_if_behind()
        self._index += 1
        self._counts = dict.fromkeys(self.cameras, self._index)
        return index

    def add_camera_frame(self, camera: str, frame: object, timestamp_ns: int | None = None) -> int:
        """Hand one camera's next frame over, for loops that deliver cameras one at a time.

        Accepts what LeRobot accepts: HWC or CHW, uint8 or float in [0, 1], or a PIL
        image; it is converted in one pass into the ring slot. Returns its index.
        """
        self._check_taking_frames()
        if camera not in self.cameras:
            raise FrameError(f"unknown camera {camera!r}; declared {sorted(self.cameras)}")
        view = framelib.lenient(camera, frame, self.cameras[camera])
        ep = self._episode
        index = self._counts[camera]
        if self._png is not None:
            self._png.submit(camera, ep, index, framelib.as_uint8(view))
        else:
            cam = self._cams[camera]
            cam.check()
            ts = time.monotonic_ns() if timestamp_ns is None else timestamp_ns
            cam.put(view, ts, ep, index, self.overflow, self._videos[camera])
            if index % self.fps == 0 and self.overflow != "block":
                self._warn_if_behind()
        self._counts[camera] = index + 1
        self._index = max(self._index, index + 1)
        return index

    def _warn_if_behind(self) -> None:
        for name, cam in self._cams.items():
            backlog = cam.ring.unread + cam.spill.backlog
            if not cam.warned and backlog > self.warn_behind_s * self.fps:
                cam.warned = True
                log.warning(
                    "streamenc: camera %s is %.1f s behind (%d frames waiting, %d on disk); "
                    "no frame is lost, but end_episode will wait",
                    name,
                    backlog / self.fps,
                    backlog,
                    cam.spill.backlog,
                )

    def _send_all(self, what: str) -> None:
        """Tell each working encoder the index of the last frame it gets for this episode."""
        for cam in self._cams.values():
            if cam.failed is None:
                try:
                    cam.enc.send(what, cam.last_index)
                except EncoderError:
                    pass  # it died just now: _wait_all restarts it and sends again

    def _wait_all(self, ep: int, kinds: set[str], what: str, message: str) -> dict[str, tuple]:
        """Wait for every camera's answer, restarting encoders that die meanwhile. Once the
        wait passes PROGRESS_AFTER_S a progress bar counts down the frames still waiting for
        their encoder (in the rings and spill files), and ends at 100%."""
        waiting = dict(self._cams)
        answers: dict[str, tuple] = {}
        t0, bar = time.monotonic(), None
        try:
            while waiting:
                for name, cam in list(waiting.items()):
                    if cam.spill.error is not None:  # frames the spill could not write still go in
                        cam.spill.rescue(cam.rescue_put)
                    if cam.failed:
                        answers[name] = ("error", ("encoder", cam.failed))
                        del waiting[name]
                        continue
                    try:
                        msg = cam.enc.poll()
                    except EncoderError:
                        cam.restart(ep, self._videos[name])
                        if not cam.failed:
                            cam.enc.send(message, cam.last_index)
                        continue
                    if msg is not None and (msg[0] in kinds or msg[0] == "error"):
                        answers[name] = msg
                        del waiting[name]
                if waiting:
                    if bar is None and time.monotonic() - t0 > PROGRESS_AFTER_S:
                        bar = _Countdown(what, self._cams)
                    if bar is not None:
                        bar.update()
                    time.sleep(0.01)
        finally:
            if bar is not None:
                bar.close(done=not waiting)
        return answers

    def seal_episode(self) -> None:
        """Declare the open episode's last frame added, without waiting: the encoders start
        flushing it now (SVT-AV1 at g=2 still holds 8 frames, ~50 ms of work), while the caller
        does its own saving. end_episode() then only waits for what is left. No frame can
        be added after this; cancel_episode() still drops the episode."""
        self._check_open()
        if self._episode is None:
            raise StreamencError("no episode is open")
        if self._sealed or self._index == 0:
            return  # an empty episode is refused (and cancelled) by end_episode
        self._sealed = True
        if self._png is None:
            self._send_all("end")

    def end_episode(self) -> dict[str, EpisodeVideo]:
        """Wait for every frame to be encoded, close the files, and return them per camera."""
        self._check_open()
        if self._episode is None:
            raise StreamencError("no episode is open")
        ep, n = self._episode, self._index
        if n == 0:
            self.cancel_episode()
            raise StreamencError(f"episode {ep} has no frames; nothing was saved")
        self.seal_episode()
        self._episode, self._sealed = None, False
        self._next_episode = ep + 1
        if self._png is not None:
            self._png.wait()
            return {
                cam: EpisodeVideo(
                    png.episode_dir(self.root, cam, ep), self._png.written[cam], "png", self._png.stats(cam)
                )
                for cam in self.cameras
            }
        answers = self._wait_all(ep, {"ended"}, "encoding backlog", "end")
        videos, errors, disk = {}, [], None
        for name, (kind, value) in answers.items():
            cam = self._cams[name]
            cam.spill.active = False
            cam.spill.trim()
            if kind == "ended" and value.frames == cam.put_count:
                videos[name] = value
            elif kind == "ended":
                errors.append(f"camera {name}: video has {value.frames} of {cam.put_count} frames")
            elif value[0] == "disk":
                disk = disk or DiskFull(value[1], self.cameras[name][0] * self.cameras[name][1] * 3)
                errors.append(f"camera {name}: {value[3]}")
            else:
                errors.append(f"camera {name}: {value[-1]}")
        if disk is not None:
            raise disk
        if errors:
            raise EncoderError("; ".join(errors))
        return videos

    def cancel_episode(self) -> None:
        """Drop the open episode: its frames are drained and its files removed. The next
        start_episode() reuses its index, as a re-recorded take."""
        self._check_open()
        if self._episode is None:
            return
        ep, sealed = self._episode, self._sealed
        self._episode, self._sealed = None, False
        if self._png is not None:
            with contextlib.suppress(StreamencError):
                self._png.wait()
            for cam in self.cameras:
                png.remove_episode(self.root, cam, ep)
            return
        if sealed:  # the encoders are finishing it already: let them, then remove what they wrote
            self._wait_all(ep, {"ended"}, "cancelling", "end")
            for video in self._videos.values():
                for _, part in existing_parts(video):
                    part.unlink(missing_ok=True)
                video.unlink(missing_ok=True)
            return
        self._send_all("cancel")
        answers = self._wait_all(ep, {"cancelled"}, "cancelling", "cancel")
        bad = [f"camera {n}: {v}" for n, (k, v) in answers.items() if k != "cancelled"]
        if bad:
            raise EncoderError("; ".join(bad))

    def health(self) -> dict[str, CameraHealth]:
        self._check_open()
        if self._png is not None:
            q = self._png.queued
            written = self._png.written
            return {c: CameraHealth(os.getpid(), q, 0, written[c], 0, "png writer threads") for c in self.cameras}
        return {name: cam.health() for name, cam in self._cams.items()}

    @property
    def dropped(self) -> dict[str, int]:
        """Frames dropped per camera in this or the last episode (overflow="drop" only)."""
        return {name: cam.dropped for name, cam in self._cams.items()}

    # -- shutdown --------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise StreamencError("recorder is closed")

    def _check_taking_frames(self) -> None:
        self._check_open()
        if self._episode is None:
            raise StreamencError("no episode is open: call start_episode() first")
        if self._sealed:
            raise StreamencError(f"episode {self._episode} is sealed: end_episode() or cancel_episode() it first")

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
            self._teardown()
            if self._png is not None:
                self._png.close()

    def _teardown(self) -> None:
        for cam in self._cams.values():
            cam.close()
        self._cams.clear()

    def _at_exit(self) -> None:
        """Ctrl-C or a plain exit with an episode open: finalize it rather than lose it."""
        if self._episode is not None:
            log.warning("streamenc: finalizing episode %s at exit", self._episode)
        self.close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
