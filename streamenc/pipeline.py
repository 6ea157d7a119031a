"""One camera's pipeline in the recorder: its ring, its spill file and its encoder process.

``put`` is what the record loop's ``add_frame`` costs per camera: a copy into the ring,
or, when the ring is full, into the spill writer's queue (``overflow="spill"``), a wait
(``"block"``) or a counted drop (``"drop"``). A dead encoder is restarted here and
resumes the open episode from the first frame not yet durable.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np

from . import frames as framelib
from . import sched
from .backend import CameraHealth
from .camera import Camera
from .encoder import EncoderProcess
from .errors import EncoderError, PeerDied, RingTimeout
from .protocol import EncoderCounter, EncoderSpec, Failed, RecorderCounter, Start, error_for
from .ring import FrameRing
from .spill import SpillWriter

log = logging.getLogger("streamenc")

RESTARTS_ALLOWED = 3  # within RESTART_WINDOW_S; one more failure and the camera is given up
RESTART_WINDOW_S = 10.0
ATTACH_POLL_S = 0.005  # overflow="block": how often a full ring is tried while a new encoder attaches


class CameraPipeline:
    """One camera's ring, spill file and encoder process, and this episode's counts."""

    def __init__(self, camera: Camera, slots: int, spec: dict, spill_dir: Path) -> None:
        self.name = camera.name
        self.ring = FrameRing.create(camera.shape, camera.dtype, slots=slots)
        self.spill = SpillWriter(spill_dir / f"{camera.name}-{self.ring.name}.spill", self.ring)
        config = spec["config"]
        # sched="auto": this recorder moves the encoder between SCHED_IDLE (calm) and
        # SCHED_OTHER (boosted); that takes CAP_SYS_NICE, else the encoder runs SCHED_BATCH
        self.steered = config.sched == "auto" and sched.has_sys_nice()
        if config.sched == "auto":  # the encoder starts where this recorder says
            spec = {**spec, "config": dataclasses.replace(config, sched=sched.starting_policy(config.sched))}
        self.spec = EncoderSpec(camera.name, self.ring.name, str(self.spill.path), depth=camera.depth, **spec)
        self.enc = EncoderProcess(self.spec)
        self.restarts: list[float] = []
        self.failed: str | None = None
        self.rate: float | None = None  # frames per second the encoder took, lately
        self._sample: tuple[float, int] | None = None
        self.boosted = False
        self.high = max(2, min(self.spec.fps, slots // 2))  # 1 s of frames, or half the ring
        self.low = max(1, self.high // 4)
        self.begin(None)

    def begin(self, video: Path | None) -> None:
        """A new episode, written to ``video``: its counts start from zero."""
        self.video = video
        self.put_count, self.last_index, self.dropped, self.warned = 0, -1, 0, False

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
                self.ring.producer_counters.add(RecorderCounter.DROPPED)
                return
        elif not self.spill.caught_up():  # frames wait on disk: this one follows them there
            self.spill.append(frame, ep, index, ts)
        else:
            try:
                self._ring_put(frame, ts, ep, index, 0)
            except RingTimeout:
                self.spill.append(frame, ep, index, ts)
            except PeerDied:
                self._replace_dead(ep)
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
        self.boosted = False  # it starts calm
        if ep is not None:
            self.enc.send(Start(ep, str(self.video), resume=True))

    def health(self) -> CameraHealth:
        counters = self.ring.consumer_counters
        schedule = sched.unpack(counters[EncoderCounter.SCHED])
        repaired = counters[EncoderCounter.RT_REPAIRED]
        if repaired:
            schedule += f" ({repaired} real-time threads put back)"
        queued, spilled = self.ring.unread, self.spill.backlog
        return CameraHealth(
            self.enc.pid,
            queued,
            spilled,
            counters[EncoderCounter.ENCODED],
            len(self.restarts),
            schedule,
            self.ring.slots,
            (queued + spilled) / self.spec.fps,
            counters[EncoderCounter.CPU_MILLI] / 1000,
        )

    def steer(self, waited_on: bool = False) -> None:
        """``sched="auto"``: SCHED_OTHER once the encoder is ``high`` frames behind, or while
        the recorder waits for it (``waited_on``: end, cancel, between episodes), so a busy
        machine cannot starve it; SCHED_IDLE again, so the loop always comes first, once an
        episode is recording and the backlog is down to ``low``. A few syscalls, on a change."""
        if not self.steered or self.failed is not None:
            return
        backlog = self.backlog
        if waited_on or backlog >= self.high:
            boost = True
        elif backlog <= self.low:
            boost = False
        else:
            return
        if boost != self.boosted:
            try:
                sched.set_process(self.enc.pid, "other" if boost else "idle", self.spec.config.nice)
            except PermissionError as e:  # this process gave CAP_SYS_NICE up since: stop steering
                self.steered = False
                log.warning("streamenc: cannot steer the encoder of %s any more (%s); it stays as it is", self.name, e)
                return
            self.boosted = boost

    def sample_rate(self) -> None:
        """Note how many frames the encoder has taken by now (about once a second, from the
        record loop's put): ``rate`` is then what it manages on this machine as it is."""
        now, encoded = time.monotonic(), self.ring.consumer_counters[EncoderCounter.ENCODED]
        if self._sample is not None and now - self._sample[0] >= 0.5:
            self.rate = (encoded - self._sample[1]) / (now - self._sample[0])
        if self._sample is None or now - self._sample[0] >= 0.5:
            self._sample = (now, encoded)

    def close(self) -> None:
        self.enc.stop()
        self.spill.close(keep=self.failed is not None or self.spill.backlog > 0)
        self.ring.close()
        self.ring.unlink()
