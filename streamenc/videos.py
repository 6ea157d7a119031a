"""The Recorder's video backend: per camera a ring, a spill file and an encoder process.

The record loop only copies a frame into its camera's pipeline (pipeline.py); the encoder
processes do the rest. This module sizes the rings to what /dev/shm holds, starts one
pipeline per camera, and waits for the encoders at the episode's end, restarting any that
die meanwhile, with a progress bar over the backlog when that wait is long.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from . import parts
from .backend import CameraHealth, EpisodeVideo
from .camera import Camera
from .codecs import EncoderConfig, default_threads, select
from .errors import EncoderError, ShmTooSmall, StreamencError
from .pipeline import CameraPipeline
from .protocol import Cancel, Cancelled, End, Ended, Failed, Start, error_for
from .segments import ring_bytes, shm_free_bytes

log = logging.getLogger("streamenc")

MIN_SLOTS = 16  # the fewest ring slots: an encoder holds frames (look-ahead, open fragment)
RING_BUDGET_BYTES = 256 * 2**20  # per camera; 64 slots of 480p fit, 1080p gets fewer
MAX_SLOTS = 64
PROGRESS_AFTER_S = 1.0
LONG_WAIT_S = 2.0  # an end_episode wait estimated at least this long is a warning, not news


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


def advice(config: EncoderConfig, health: CameraHealth) -> str:
    """What would let an encoder keep up, in words a user can act on."""
    tips = ["fewer cameras or a smaller frame size"]
    if config.vcodec in ("libsvtav1", "auto"):
        tips.append('vcodec="h264" (libx264, several times cheaper than SVT-AV1 at g=2)')
    if health.sched.startswith("idle") and config.sched == "idle":
        tips.append('EncoderConfig(sched="auto"): SCHED_IDLE encoders get no CPU while other programs keep it busy')
    elif config.nice:
        tips.append(f"a lower nice value than {config.nice}")
    tips.append("more CPU cores, or fewer other programs beside the recorder")
    return "; ".join(tips) + " (docs/tuning.md, Scheduling)"


class Countdown:
    """A progress bar over the frames waiting for their encoders when it appears. As tqdm
    has it (``disable=None``), none when stderr is no terminal: a log file gets one line
    when the wait is over instead of a carriage-return update per refresh."""

    def __init__(self, what: str, cams: list[CameraPipeline]) -> None:
        from tqdm import tqdm

        self.cams, self.what, self.t0 = cams, what, time.monotonic()
        self.total = max(1, self.left())
        self.bar = tqdm(total=self.total, desc=f"streamenc: {what}", unit="frame", disable=None)

    def left(self) -> int:
        return sum(c.backlog for c in self.cams if c.failed is None)

    def update(self) -> None:
        done = min(self.total, max(0, self.total - self.left()))
        self.bar.update(max(0, done - self.bar.n))

    def close(self, done: bool) -> None:
        if done:
            self.bar.update(self.total - self.bar.n)
        self.bar.close()
        if done and self.bar.disable:
            log.info("streamenc: %s: %d frames in %.1f s", self.what, self.total, time.monotonic() - self.t0)


class VideoBackend:
    """Rings, spill files and encoder processes for the Recorder's cameras."""

    def __init__(
        self,
        fps: int,
        cameras: list[Camera],
        config: EncoderConfig,
        *,
        depth_config: EncoderConfig,
        overflow: str,
        slots: int | None,
        spill_dir: Path,
        warn_behind_s: float,
    ) -> None:
        self.fps, self.overflow, self.warn_behind_s = fps, overflow, warn_behind_s
        self.pipelines: dict[str, CameraPipeline] = {}
        has_rgb = any(not c.is_depth for c in cameras)
        has_depth = any(c.is_depth for c in cameras)
        depth_codec = select(depth_config) if has_depth else ""
        self.codec: str = select(config) if has_rgb else depth_codec
        plan = plan_slots([c.shape for c in cameras], slots, shm_free_bytes(), [c.dtype for c in cameras])
        threads = config.threads or default_threads(len(cameras))
        rgb = {"fps": fps, "vcodec": self.codec, "config": config, "threads": threads}
        # all cores for each depth encoder, not a share: x265 lossless costs ~4x SVT-AV1's
        # RGB per frame and is too slow on one core for 480p at 30 fps (docs/benchmarks.md);
        # its threads are SCHED_IDLE like every encoder's, so the loop still comes first
        depth = {
            "fps": fps,
            "vcodec": depth_codec,
            "config": depth_config,
            "threads": depth_config.threads or default_threads(1),
        }
        try:
            for cam, n in zip(cameras, plan, strict=True):
                self.pipelines[cam.name] = CameraPipeline(cam, n, depth if cam.is_depth else rgb, spill_dir)
            for pipe in self.pipelines.values():
                pipe.enc.wait_ready()
        except BaseException:
            self.close()
            raise

    # -- the Backend interface ------------------------------------------------------------
    def existing(self, episode: int, videos: dict[str, Path]) -> list[Path]:
        return [p for p in videos.values() if p.exists()]

    def start(self, episode: int, videos: dict[str, Path]) -> None:
        """Tell each encoder, without waiting for its answer: the record loop never waits on
        an encoder, however busy the machine. Until an encoder takes the episode, its frames
        wait in its ring or spill; if it cannot start it, the next add_frame raises why."""
        failed = [c.failed for c in self.pipelines.values() if c.failed]
        if failed:
            raise EncoderError("; ".join(failed))
        for name, cam in self.pipelines.items():
            cam.begin(videos[name])
            if not cam.enc.alive:
                cam.restart(None)
            cam.enc.send(Start(episode, str(cam.video)))  # frame 0's put steers it: calm, unless behind

    def check(self, cameras) -> None:
        for name in cameras:
            self.pipelines[name].check()

    def put(self, camera: str, frame: np.ndarray, ts: int, episode: int, index: int) -> None:
        cam = self.pipelines[camera]
        cam.put(frame, ts, episode, index, self.overflow)
        if index % self.fps == 0:  # once a second
            cam.steer()
            if self.overflow != "block":  # blocking is the point there
                self._warn_if_behind(cam)

    def seal(self, episode: int) -> None:
        self._send_all(End)

    def end(self, episode: int) -> dict[str, EpisodeVideo]:
        self._say_wait()
        answers = self._wait_all(episode, Ended, "encoding backlog", End)
        videos: dict[str, EpisodeVideo] = {}
        errors: list[StreamencError] = []
        for name, msg in answers.items():
            cam = self.pipelines[name]
            cam.spill.trim()
            if isinstance(msg, Ended) and msg.frames == cam.put_count:
                videos[name] = EpisodeVideo(Path(msg.path), msg.frames, msg.codec, msg.stats)
            elif isinstance(msg, Ended):
                errors.append(EncoderError(f"camera {name}: video has {msg.frames} of {cam.put_count} frames"))
            elif isinstance(msg, Failed):
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
            for cam in self.pipelines.values():
                if cam.video is not None:
                    parts.remove(cam.video)
            return
        self._send_all(Cancel)
        answers = self._wait_all(episode, Cancelled, "cancelling", Cancel)
        bad = [f"camera {n}: {m.text}" for n, m in answers.items() if isinstance(m, Failed)]
        if bad:
            raise EncoderError("; ".join(bad))

    def health(self) -> dict[str, CameraHealth]:
        return {name: cam.health() for name, cam in self.pipelines.items()}

    @property
    def dropped(self) -> dict[str, int]:
        return {name: cam.dropped for name, cam in self.pipelines.items()}

    def close(self) -> None:
        for cam in self.pipelines.values():
            cam.close()
        self.pipelines.clear()

    # -- helpers --------------------------------------------------------------------------
    def _warn_if_behind(self, cam: CameraPipeline) -> None:
        cam.sample_rate()
        if cam.warned or cam.backlog <= self.warn_behind_s * self.fps:
            return
        cam.warned = True
        h = cam.health()
        log.warning(
            "streamenc: camera %s is %.1f s behind (%d frames waiting, %d of them on disk): its encoder "
            "got %.2f of a core over the last second (%s) and takes %s frames/s of the %d it is given. "
            "No frame is lost, but end_episode will wait for them. What helps: %s",
            cam.name,
            h.behind_s,
            h.queued + h.spilled,
            h.spilled,
            h.cpu,
            h.sched,
            "?" if cam.rate is None else f"{cam.rate:.0f}",
            self.fps,
            advice(cam.spec.config, h),
        )

    def _say_wait(self) -> None:
        """Before end_episode waits for a backlog: about how long, at the rate the encoders
        have managed lately (the loop is no longer running, so they may do better)."""
        live = [(c.backlog, c.rate) for c in self.pipelines.values() if c.failed is None]
        total = sum(backlog for backlog, _ in live)
        if total <= self.fps // 2:
            return
        known = [(backlog, rate) for backlog, rate in live if rate]
        if not known:
            log.info("streamenc: end_episode waits for %d frames still to encode", total)
            return
        seconds = max(backlog / rate for backlog, rate in known)
        rates = [rate for _, rate in known]
        log.log(
            logging.WARNING if seconds >= LONG_WAIT_S else logging.INFO,
            "streamenc: end_episode waits for %d frames still to encode: about %.0f s at the %.0f frames/s "
            "the encoders managed while recording",
            total,
            seconds,
            sum(rates),
        )

    def _send_all(self, command: type) -> None:
        """Tell each working encoder the index of the last frame it gets for this episode."""
        for cam in self.pipelines.values():
            if cam.failed is None:
                try:
                    cam.enc.send(command(cam.last_index))
                    cam.steer(waited_on=True)  # the recorder waits for it from now until the next episode
                except EncoderError:
                    pass  # it died just now: _wait_all restarts it and sends again

    def _wait_all(self, episode: int, kind: type, what: str, command: type) -> dict[str, object]:
        """Wait for every camera's answer (``kind``, or a final Failed), restarting encoders
        that die meanwhile. Once the wait passes PROGRESS_AFTER_S a progress bar counts down
        the frames still waiting for their encoder (in the rings and spill files)."""
        waiting = dict(self.pipelines)
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
                            cam.steer(waited_on=True)
                        continue
                    if isinstance(msg, kind) or (isinstance(msg, Failed) and msg.final):
                        answers[name] = msg
                        del waiting[name]
                if waiting:
                    if bar is None and time.monotonic() - t0 > PROGRESS_AFTER_S:
                        bar = Countdown(what, list(self.pipelines.values()))
                    if bar is not None:
                        bar.update()
                    time.sleep(0.01)
        finally:
            if bar is not None:
                bar.close(done=not waiting)
        return answers
