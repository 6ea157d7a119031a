"""The Recorder's video backend: per camera a FrameRing, a spill file and an encoder process.

The record loop only copies a frame into the camera's ring (or, when the ring is full,
into the spill writer's queue); the encoder process does the rest. When a ring is full
the frame goes, in order, to the camera's spill file (``overflow="spill"``), or the
loop waits (``"block"``), or the frame is dropped and counted (``"drop"``). A dead
encoder is restarted and resumes the open episode.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from . import frames as framelib
from . import parts, sched
from .codecs import EncoderConfig, default_threads, select
from .depth import Depth
from .encoder import EncoderProcess
from .errors import EncoderError, PeerDied, RingTimeout, ShmTooSmall
from .protocol import Cancel, Cancelled, EncoderSpec, End, Ended, Failed, Start, Started, error_for
from .recorder import MIN_SLOTS, CameraHealth, EpisodeVideo
from .ring import DROPPED, ENCODED, RT_REPAIRED, SCHED, FrameRing, ring_bytes, shm_free_bytes
from .spill import SpillWriter

log = logging.getLogger("streamenc")

RING_BUDGET_BYTES = 256 * 2**20  # per camera; 64 slots of 480p fit, 1080p gets fewer
MAX_SLOTS = 64
RESTARTS_ALLOWED = 3  # within RESTART_WINDOW_S; one more failure and the camera is given up
RESTART_WINDOW_S = 10.0
ATTACH_POLL_S = 0.005  # overflow="block": how often a full ring is tried while a new encoder attaches
PROGRESS_AFTER_S = 1.0


def default_slots(shape: tuple[int, ...], dtype: str = "uint8") -> int:
    frame = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return int(min(MAX_SLOTS, max(MIN_SLOTS, RING_BUDGET_BYTES // frame)))


def plan_slots(
    shapes: list[tuple[int, ...]], wanted: int | None, free: int, dtypes: list[str] | None = None
) -> list[int]:
    """Slots per camera: the wanted number, or fewer (down to MIN_SLOTS) so that all rings
    fit in /dev/shm. Raises ShmTooSmall when even MIN_SLOTS do not fit."""
    rings = list(zip(shapes, dtypes or ["uint8"] * len(shapes), strict=True))
    slots = [wanted or default_slots(s, d) for s, d in rings]

    def need(counts: list[int]) -> int:
        return sum(ring_bytes(s, d, n) for (s, d), n in zip(rings, counts, strict=True))

    if need(slots) <= free:
        return slots
    floor = need([MIN_SLOTS] * len(rings))
    if floor > free:
        raise ShmTooSmall(floor, free)
    scale = free / need(slots)
    slots = [max(MIN_SLOTS, int(n * scale)) for n in slots]
    while need(slots) > free:
        slots = [max(MIN_SLOTS, n - 1) for n in slots]
    log.warning(
        "streamenc: /dev/shm has %.0f MiB free; rings use %s slots instead of %s",
        free / 2**20,
        slots,
        [wanted or default_slots(s, d) for s, d in rings],
    )
    return slots


class _Camera:
    """One camera's ring, spill file and encoder process, and this episode's counts."""

    def __init__(self, name: str, shape: tuple[int, ...], dtype: str, slots: int, spec: dict, spill_dir: Path) -> None:
        self.name, self.shape = name, shape
        self.ring = FrameRing.create(shape, dtype, slots=slots)
        self.spill = SpillWriter(spill_dir / f"{name}-{self.ring.name}.spill", self.ring)
        self.spec = EncoderSpec(name, self.ring.name, str(self.spill.path), **spec)
        self.enc = EncoderProcess(self.spec)
        self.restarts: list[float] = []
        self.failed: str | None = None
        self.video: Path | None = None  # this episode's file
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
        if isinstance(msg, Failed):
            raise error_for(msg, self.name, self.ring.frame_bytes)

    def _ring_put(self, frame: np.ndarray, ts: int, ep: int, index: int, timeout: float | None) -> None:
        if frame.dtype == self.ring.dtype and frame.flags.c_contiguous:
            self.ring.put(frame, ts, timeout, episode=ep, frame_index=index)
        else:  # strided (CHW) or float input: converted straight into the slot
            with self.ring.reserve(timeout, timestamp_ns=ts, episode=ep, frame_index=index) as buf:
                framelib.write(buf, frame)

    def rescue_put(self, frame: np.ndarray, ts: int, ep: int, index: int) -> bool:
        """A frame the spill could not write goes to the ring instead, if there is room."""
        try:
            self.ring.put(frame, ts, 0, episode=ep, frame_index=index)
            return True
        except (RingTimeout, PeerDied):  # a dead encoder is restarted by put() or end()
            return False

    def put(self, frame: np.ndarray, ts: int, ep: int, index: int, overflow: str) -> None:
        if self.failed is None and not self.enc.alive:
            self.restart(ep)
        if self.spill.error is not None:  # a failed spill write: its frames go first, through the ring
            self.spill.rescue(self.rescue_put)
        if overflow == "block":
            while True:
                try:
                    self._ring_put(frame, ts, ep, index, None if self.failed is None else 0)
                    break
                except (PeerDied, RingTimeout) as e:
                    if self.failed is not None:  # the camera's encoder is given up: keep the frame on disk
                        self.spill.append(frame, ep, index, ts)
                        break
                    if isinstance(e, PeerDied) and not self._replace_dead(ep):
                        time.sleep(ATTACH_POLL_S)
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
                    self._replace_dead(ep)
                    self.spill.active = True
            if self.spill.active:
                self.spill.append(frame, ep, index, ts)
        self.put_count += 1
        self.last_index = index

    @property
    def backlog(self) -> int:
        """Frames waiting for the encoder to take them, in the ring and the spill."""
        return self.ring.unread + self.spill.backlog

    # -- the encoder process ----------------------------------------------------------------
    def _replace_dead(self, ep: int) -> bool:
        """The full ring names a dead encoder: restart it, unless that was done already.
        A new encoder leaves the dead one's pid in the ring's header until it has started
        and attached; restarting it for that would kill a healthy one. True: restarted."""
        if self.enc.alive:
            return False
        self.restart(ep)
        return True

    def restart(self, ep: int | None) -> None:
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
            self.enc.send(Start(ep, str(self.video), resume=True))

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

    def __init__(self, what: str, cams: list[_Camera]) -> None:
        from tqdm import tqdm

        self.cams = cams
        self.total = max(1, self.left())
        self.bar = tqdm(total=self.total, desc=f"streamenc: {what}", unit="frame")

    def left(self) -> int:
        return sum(c.backlog for c in self.cams if c.failed is None)

    def update(self) -> None:
        done = min(self.total, max(0, self.total - self.left()))
        self.bar.update(max(0, done - self.bar.n))

    def close(self, done: bool) -> None:
        if done:
            self.bar.update(self.total - self.bar.n)
        self.bar.close()


class VideoBackend:
    """Rings, spill files and encoder processes for the Recorder's cameras."""

    def __init__(
        self,
        fps: int,
        cameras: dict[str, tuple[int, ...]],
        config: EncoderConfig,
        *,
        depth: dict[str, Depth] | None = None,
        depth_config: EncoderConfig | None = None,
        overflow: str,
        slots: int | None,
        spill_dir: Path,
        warn_behind_s: float,
    ) -> None:
        self.fps, self.overflow, self.warn_behind_s = fps, overflow, warn_behind_s
        depth = depth or {}
        self._cams: dict[str, _Camera] = {}
        names = list(cameras)
        rgb = [n for n in names if n not in depth]
        depth_codec = select(depth_config) if depth else None
        self.codec = select(config) if rgb or not depth else depth_codec
        dtypes = [depth[n].dtype if n in depth else "uint8" for n in names]
        plan = plan_slots([cameras[n] for n in names], slots, shm_free_bytes(), dtypes)
        threads = default_threads(len(names))
        specs = {"rgb": {"fps": fps, "vcodec": self.codec, "config": config, "threads": config.threads or threads}}
        if depth:
            # all cores for each depth encoder, not a share: x265 lossless costs ~4x SVT-AV1's
            # RGB per frame and is too slow on one core for 480p at 30 fps (docs/benchmarks.md);
            # its threads are SCHED_IDLE like every encoder's, so the loop still comes first
            depth_threads = depth_config.threads or default_threads(1)
            specs["depth"] = {"fps": fps, "vcodec": depth_codec, "config": depth_config, "threads": depth_threads}
        try:
            for name, dtype, n in zip(names, dtypes, plan, strict=True):
                spec = specs["rgb"] if name not in depth else {**specs["depth"], "depth": depth[name]}
                self._cams[name] = _Camera(name, cameras[name], dtype, n, spec, spill_dir)
            for cam in self._cams.values():
                cam.enc.wait_ready()
        except BaseException:
            self.close()
            raise

    # -- the Backend interface ------------------------------------------------------------
    def existing(self, episode: int, videos: dict[str, Path]) -> list[Path]:
        return [p for p in videos.values() if p.exists()]

    def start(self, episode: int, videos: dict[str, Path]) -> None:
        failed = [c.failed for c in self._cams.values() if c.failed]
        if failed:
            raise EncoderError("; ".join(failed))
        for name, cam in self._cams.items():
            cam.put_count, cam.last_index, cam.dropped, cam.warned = 0, -1, 0, False
            cam.video = videos[name]
            if not cam.enc.alive:
                cam.restart(None)
            cam.enc.send(Start(episode, str(cam.video)))
        for name, cam in self._cams.items():
            msg = cam.enc.expect((Started,), 60, "start_episode")
            if isinstance(msg, Failed):
                raise EncoderError(f"camera {name}: could not start episode {episode}: {msg.text}")

    def check(self, cameras) -> None:
        for name in cameras:
            self._cams[name].check()

    def put(self, camera: str, frame: np.ndarray, ts: int, episode: int, index: int) -> None:
        cam = self._cams[camera]
        cam.put(frame, ts, episode, index, self.overflow)
        if index % self.fps == 0 and self.overflow != "block":  # blocking is the point there
            self._warn_if_behind(cam)

    def seal(self, episode: int) -> None:
        self._send_all(End)

    def end(self, episode: int) -> dict[str, EpisodeVideo]:
        answers = self._wait_all(episode, Ended, "encoding backlog", End)
        videos, errors = {}, []
        for name, msg in answers.items():
            cam = self._cams[name]
            cam.spill.active = False
            cam.spill.trim()
            if isinstance(msg, Ended) and msg.frames == cam.put_count:
                videos[name] = EpisodeVideo(Path(msg.path), msg.frames, msg.codec, msg.stats)
            elif isinstance(msg, Ended):
                errors.append(EncoderError(f"camera {name}: video has {msg.frames} of {cam.put_count} frames"))
            else:
                errors.append(error_for(msg, name, cam.ring.frame_bytes))
        written = [e for e in errors if isinstance(e, OSError)]
        if written:  # a full disk first: it is the one the user can do something about
            raise written[0]
        if errors:
            raise errors[0] if len(errors) == 1 else EncoderError("; ".join(str(e) for e in errors))
        return videos

    def cancel(self, episode: int, sealed: bool) -> None:
        if sealed:  # the encoders are finishing it already: let them, then remove what they wrote
            self._wait_all(episode, Ended, "cancelling", End)
            for cam in self._cams.values():
                parts.remove(cam.video)
            return
        self._send_all(Cancel)
        answers = self._wait_all(episode, Cancelled, "cancelling", Cancel)
        bad = [f"camera {n}: {m.text}" for n, m in answers.items() if isinstance(m, Failed)]
        if bad:
            raise EncoderError("; ".join(bad))

    def health(self) -> dict[str, CameraHealth]:
        return {name: cam.health() for name, cam in self._cams.items()}

    @property
    def dropped(self) -> dict[str, int]:
        return {name: cam.dropped for name, cam in self._cams.items()}

    def close(self) -> None:
        for cam in self._cams.values():
            cam.close()
        self._cams.clear()

    # -- helpers --------------------------------------------------------------------------
    def _warn_if_behind(self, cam: _Camera) -> None:
        backlog = cam.backlog
        if not cam.warned and backlog > self.warn_behind_s * self.fps:
            cam.warned = True
            log.warning(
                "streamenc: camera %s is %.1f s behind (%d frames waiting, %d on disk); "
                "no frame is lost, but end_episode will wait",
                cam.name,
                backlog / self.fps,
                backlog,
                cam.spill.backlog,
            )

    def _send_all(self, command: type) -> None:
        """Tell each working encoder the index of the last frame it gets for this episode."""
        for cam in self._cams.values():
            if cam.failed is None:
                try:
                    cam.enc.send(command(cam.last_index))
                except EncoderError:
                    pass  # it died just now: _wait_all restarts it and sends again

    def _wait_all(self, episode: int, kind: type, what: str, command: type) -> dict[str, object]:
        """Wait for every camera's answer (``kind``, or a final Failed), restarting encoders
        that die meanwhile. Once the wait passes PROGRESS_AFTER_S a progress bar counts down
        the frames still waiting for their encoder (in the rings and spill files)."""
        waiting = dict(self._cams)
        answers: dict[str, object] = {}
        t0, bar = time.monotonic(), None
        try:
            while waiting:
                for name, cam in list(waiting.items()):
                    if cam.spill.error is not None:  # frames the spill could not write still go in
                        cam.spill.rescue(cam.rescue_put)
                    if cam.failed:
                        answers[name] = Failed("encoder", cam.failed)
                        del waiting[name]
                        continue
                    try:
                        msg = cam.enc.poll()
                    except EncoderError:
                        cam.restart(episode)
                        if not cam.failed:
                            cam.enc.send(command(cam.last_index))
                        continue
                    if isinstance(msg, kind) or (isinstance(msg, Failed) and msg.final):
                        answers[name] = msg
                        del waiting[name]
                if waiting:
                    if bar is None and time.monotonic() - t0 > PROGRESS_AFTER_S:
                        bar = _Countdown(what, list(self._cams.values()))
                    if bar is not None:
                        bar.update()
                    time.sleep(0.01)
        finally:
            if bar is not None:
                bar.close(done=not waiting)
        return answers
