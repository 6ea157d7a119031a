"""Inside an encoder process: one camera's frames, from its ring and spill, into video.

One process per camera, started once and kept across episodes, so PyAV and the encoder
initialise once. ``serve`` answers the recorder's commands (protocol.py) and drains the
camera's frames, merged from the ring and the spill file in order (``_Input``), into the
open episode's fragmented MP4 (``_Episode``): each slot is wrapped with
``VideoFrame.from_numpy_buffer`` (no copy), encoded, and released once it is durable.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
import time
import traceback
from collections import deque
from fractions import Fraction
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from . import parts, sched
from .codecs import DEPTH_PIX_FMT, EncoderConfig, codec_options, input_format, quiet_svt, stream_pix_fmt
from .depth import DepthStats, Quantizer
from .errors import PeerDied, RingTimeout
from .protocol import (
    Cancel,
    Cancelled,
    EncoderCounter,
    EncoderSpec,
    End,
    Ended,
    Failed,
    Ready,
    Start,
    Started,
    Stop,
    Stopped,
)
from .ring import FrameRing
from .spill import SpillReader
from .stats import EpisodeStats

GET_WAIT_S = 0.01  # how long an idle encoder waits in the ring before it looks at its pipe again
SCHED_CHECK_S = 1.0  # how often the encoder checks its threads' scheduling besides after each codec open


class _Episode:
    """The video being written for one episode, possibly resumed after a crash.

    Frames are held (ring slot or spill record) until durable: an encoder holds frames
    for look-ahead, and the MP4 muxer writes a frame's fragment when the next packet
    arrives. So a frame is durable once a packet with a later pts has been muxed. At
    most ``hold_limit`` are held, so that the producer always finds a free slot.
    """

    def __init__(
        self,
        spec: EncoderSpec,
        index: int,
        final: Path,
        shape: tuple[int, ...],
        hold_limit: int,
        on_open=None,
        resume: bool = False,
    ) -> None:
        import av

        self.spec, self.index, self.final = spec, index, final
        self.on_open = on_open  # called once the codec is open (at the first frame): threads exist then
        self.hold_limit, self.warned_hold = hold_limit, False
        final.parent.mkdir(parents=True, exist_ok=True)
        self.expected_last: int | None = None  # index of the last frame put, once the episode ended
        self.cancel = False
        self.error: Failed | None = None
        self.error_sent = False
        self.quantize: Quantizer | None = None
        if spec.depth is not None:
            self.quantize = Quantizer(spec.depth)
            self.stats: EpisodeStats | DepthStats = DepthStats(shape[0], shape[1], spec.depth.dtype)
        else:
            self.stats = EpisodeStats(shape[0], shape[1], shape[2])
        self.held: deque = deque()  # (frame index, release callable) in encode order
        # resume after a crash: what earlier parts hold durably is kept, we go on after it
        if resume and final.exists():
            # The dead encoder had finished the file: it only ever appears whole (a fsynced file
            # renamed), and start_episode refuses an episode already on disk. Any parts left
            # beside it are in it too. It becomes the first part, and nothing is lost.
            for _, part in parts.existing_parts(final):
                part.unlink()
            os.replace(final, parts.part_path(final, 0))
        self.start = 0
        for start, part in parts.existing_parts(final):
            frames = parts.durable_frames(part, start, spec.fps)
            self.start = frames[-1] + 1 if frames else start
        self.last_seen = self.start - 1
        self.encoded = 0
        self.part = parts.part_path(final, self.start)
        self.convert_to = input_format(spec.vcodec)
        self.container = av.open(str(self.part), "w", format="mp4", options=dict(parts.CONTAINER_OPTIONS))
        self.stream = self.container.add_stream(spec.vcodec, rate=spec.fps)
        self.stream.width, self.stream.height = shape[1], shape[0]
        self.stream.pix_fmt = stream_pix_fmt(spec.config, spec.vcodec)
        self.stream.time_base = Fraction(1, spec.fps)
        self.stream.codec_context.time_base = Fraction(1, spec.fps)
        self.stream.options = codec_options(spec.config, spec.vcodec, threads=spec.threads)
        # An encoder that took our rgb24 as is could keep a reference to the slot after
        # encode() returns; every format we configure needs a conversion, which copies.
        self.must_copy = self.stream.pix_fmt == "rgb24"

    @property
    def complete(self) -> bool:
        return self.expected_last is not None and self.last_seen >= self.expected_last

    def take(self, frame_index: int, array: np.ndarray, release) -> None:
        """One frame in order: encode it, or let it go if it is durable already or cancelled."""
        if frame_index <= self.last_seen:
            if frame_index < self.start:  # a restarted encoder meets frames the dead one made durable
                release()
                return
            self.error = self.error or Failed("order", f"frame {frame_index} after frame {self.last_seen}")
        self.last_seen = frame_index
        if self.cancel or self.error is not None:
            release()
            return
        try:
            self._encode(frame_index, array)
        except OSError as e:
            self.error = _disk_failure(e, self.part)
        except Exception as e:
            self.error = Failed("encoder", _describe(e))
        self.held.append((frame_index, release))
        if self.error is not None:
            self._release_all()
        elif len(self.held) > self.hold_limit:
            # The encoder holds more frames (look-ahead) than the ring can spare: keep the
            # producer going, at the price of these frames not surviving an encoder crash.
            if not self.warned_hold:
                self.warned_hold = True
                print(
                    f"streamenc: encoder for {self.spec.camera} holds more than {self.hold_limit} frames in "
                    f"flight; releasing some before they are durable (give the ring more slots)",
                    file=sys.stderr,
                )
            while len(self.held) > self.hold_limit:
                self.held.popleft()[1]()

    def _encode(self, frame_index: int, array: np.ndarray) -> None:
        import av

        if self.quantize is not None:  # depth: 12-bit codes straight into a new frame's plane
            h, w = array.shape
            frame = av.VideoFrame(w, h, DEPTH_PIX_FMT)
            plane = frame.planes[0]
            self.quantize(array, np.frombuffer(plane, np.uint16).reshape(h, plane.line_size // 2)[:, :w])
        else:
            frame = av.VideoFrame.from_numpy_buffer(array.copy() if self.must_copy else array, format="rgb24")
            if self.convert_to:
                frame = frame.reformat(format=self.convert_to)
        frame.pts = frame_index
        frame.time_base = self.stream.codec_context.time_base
        self._mux(self.stream.encode(frame))
        if self.on_open is not None:  # the codec opened in that encode() and started its threads
            self.on_open()
            self.on_open = None
        self.stats.update(array)
        self.encoded += 1

    def _mux(self, packets) -> None:
        for packet in packets:
            pts = packet.pts
            self.container.mux(packet)
            if pts is not None:  # muxing this packet wrote out the fragments of all before it
                self._release_before(pts)

    def _release_before(self, pts: int) -> None:
        while self.held and self.held[0][0] < pts:
            self.held.popleft()[1]()

    def _release_all(self) -> None:
        while self.held:
            self.held.popleft()[1]()

    def finish(self) -> int:
        """Flush, close, make it durable, join parts; returns the frame count of the video."""
        if self.encoded or not self.start:
            self._mux(self.stream.encode(None))
            self.container.close()
            parts.fsync(self.part)
        else:  # resumed where every frame was durable already: this part stays empty
            with contextlib.suppress(Exception):
                self.container.close()
            self.part.unlink(missing_ok=True)
        written = parts.existing_parts(self.final)
        if len(written) == 1 and written[0][1] == self.part:
            os.replace(self.part, self.final)
            frames = self.encoded
        else:
            tmp = self.final.with_name(self.final.name + ".joining")
            frames = parts.join(written, tmp, self.spec.fps)
            parts.fsync(tmp)
            os.replace(tmp, self.final)
            for _, p in written:
                p.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            parts.fsync(self.final.parent)
        self._release_all()
        return frames

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            for _ in self.stream.encode(None):  # drain, so the encoder shuts down cleanly
                pass
        with contextlib.suppress(Exception):
            self.container.close()
        for _, p in parts.existing_parts(self.final):
            p.unlink(missing_ok=True)
        self._release_all()

    def keep_what_is_written(self) -> None:
        """After a failure (a full disk): keep the durable part as the episode's file."""
        with contextlib.suppress(Exception):
            self.container.close()
        written = parts.existing_parts(self.final)
        if len(written) == 1:
            with contextlib.suppress(OSError):
                os.replace(written[0][1], self.final)
        self._release_all()

    def close(self) -> Ended | Cancelled | Failed:
        """The episode's answer to End or Cancel: its file finished, or removed, or kept as
        far as it is durable after a failure."""
        if self.cancel:
            self.discard()
            return Cancelled(self.index)
        if self.error is None:
            try:
                frames = self.finish()
            except OSError as e:
                self.error = _disk_failure(e, self.final)
            except Exception as e:
                self.error = Failed("encoder", _describe(e))
        if self.error is not None:
            self.keep_what_is_written()
            return Failed(self.error.kind, self.error.text, self.error.path, self.error.errno, final=True)
        return Ended(self.index, str(self.final), frames, self.spec.vcodec, self.stats.lerobot())


class _Input:
    """The camera's frames in order, merged from the ring and the spill by (episode, index)."""

    def __init__(self, ring, spill: SpillReader) -> None:
        self.ring, self.spill = ring, spill
        self.pending = None  # a slot taken from the ring, not used yet
        self.producer_gone = False

    def next(self, wait: float):
        """(episode, frame index, array, release) or None if nothing came within ``wait``."""
        spill_next = self.spill.peek()
        if self.pending is None and not self.producer_gone:
            try:
                self.pending = self.ring.get(timeout=0 if spill_next else wait)
            except RingTimeout:
                pass
            except PeerDied:
                self.producer_gone = True
            spill_next = spill_next or self.spill.peek()
        slot = self.pending
        if slot is not None and (spill_next is None or (slot.episode, slot.frame_index) < spill_next):
            self.pending = None
            return slot.episode, slot.frame_index, slot.array, slot.release
        if spill_next is not None:
            j, episode, index, _, array = self.spill.read()
            return episode, index, array, lambda: self.spill.done(j)
        if self.producer_gone:
            raise EOFError
        return None


class _ScheduleWatch:
    """Checks the encoder's threads: real-time ones are put back (and counted, because it
    means a codec got round give_up_realtime), and what the threads look like is published
    in the ring header for the recorder's health()."""

    def __init__(self, ring, cfg: EncoderConfig) -> None:
        self.ring, self.cfg, self.repaired = ring, cfg, 0
        self.check()

    def check(self) -> None:
        found = sched.enforce(self.cfg.sched, self.cfg.nice)
        if found:
            self.repaired += found
            print(f"streamenc: encoder put {found} real-time thread(s) back to {self.cfg.sched}", file=sys.stderr)
            self.ring.consumer_counters[EncoderCounter.RT_REPAIRED] = self.repaired
        self.ring.consumer_counters[EncoderCounter.SCHED] = sched.pack(sched.observe())
        self.last = time.monotonic()

    def maybe_check(self) -> None:
        if time.monotonic() - self.last >= SCHED_CHECK_S:
            self.check()


def serve(spec: EncoderSpec, conn: Connection) -> None:
    """The encoder process's main loop."""
    cfg = spec.config
    if len(sched.threads()) > 1:  # a thread started at import would keep the right given up below
        print(f"streamenc: encoder has {len(sched.threads())} threads before giving up real-time", file=sys.stderr)
    sched.apply(cfg.sched, cfg.nice, cfg.cpus)  # while this is the only thread: later ones inherit it
    sched.give_up_realtime()  # before any codec opens: SVT-AV1's request for SCHED_FIFO 99 then fails
    quiet_svt()
    import av  # noqa: F401  (import before Ready, so start-up cost is paid once, up front)

    ring = FrameRing.attach(spec.ring)
    spill = SpillReader(Path(spec.spill), ring)
    frames = _Input(ring, spill)
    watch = _ScheduleWatch(ring, cfg)
    conn.send(Ready(os.getpid()))
    ep: _Episode | None = None
    stopping = False
    try:
        while True:
            if ep is None:
                try:
                    msg = conn.recv()
                except EOFError:
                    return  # the parent is gone and no episode is open
                if isinstance(msg, Start):
                    try:
                        ep = _Episode(
                            spec,
                            msg.episode,
                            Path(msg.path),
                            ring.shape,
                            ring.slots - 2,
                            on_open=watch.check,
                            resume=msg.resume,
                        )
                        conn.send(Started(msg.episode, ep.start))
                    except Exception as e:
                        conn.send(Failed("encoder", _describe(e)))
                elif isinstance(msg, Stop):
                    conn.send(Stopped())
                    return
                else:
                    conn.send(Failed("protocol", f"got {type(msg).__name__} outside an episode"))
                continue

            if conn.poll():
                try:
                    msg = conn.recv()
                except EOFError:
                    msg = End(None)  # parent died: finish with what is in the ring and the spill
                if isinstance(msg, (End, Cancel)):
                    ep.expected_last, ep.cancel = msg.last, isinstance(msg, Cancel)
                elif isinstance(msg, Stop):
                    stopping = True
            if ep.complete or (stopping and ep.expected_last is None and not ring.available and not spill.available()):
                conn.send(ep.close())
                ep = None
                if stopping:
                    return
                continue
            watch.maybe_check()
            try:
                item = frames.next(GET_WAIT_S)
            except EOFError:
                reply = ep.close()  # producer gone, everything drained: save it
                ep = None
                with contextlib.suppress(OSError):
                    conn.send(reply)
                spill.close()
                Path(spec.spill).unlink(missing_ok=True)  # drained, and nobody will write it again
                return
            if item is None:
                continue
            episode, index, array, release = item
            if episode != ep.index:
                release()  # a frame of a cancelled or earlier episode
                continue
            ep.take(index, array, release)
            ring.consumer_counters.add(EncoderCounter.ENCODED)
            if ep.error is not None and not ep.error_sent:  # tell the recorder now, not at the end
                ep.error_sent = True
                conn.send(Failed(ep.error.kind, ep.error.text, ep.error.path, ep.error.errno, final=False))
    finally:
        if ep is not None:
            with contextlib.suppress(Exception):
                ep.close()
        spill.close()
        ring.close()


def _disk_failure(e: OSError, path: Path) -> Failed:
    return Failed("disk", _describe(e), str(path), getattr(e, "errno", None))


def _describe(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}"
    if not str(e):
        text += " " + traceback.format_exc(limit=3)
    return text


def main(argv: list[str]) -> int:
    """Entry point of the encoder process; argv is the socket's file descriptor."""
    conn = Connection(int(argv[0]))
    try:
        spec = conn.recv()
    except (EOFError, OSError, pickle.UnpicklingError):
        return 1
    try:
        serve(spec, conn)
    except Exception as e:
        with contextlib.suppress(OSError):
            conn.send(Failed("crash", f"the encoder process failed: {_describe(e)}"))
        raise
    return 0
