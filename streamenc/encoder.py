"""The per-camera encoder process.

One process per camera, started once and kept across episodes, so PyAV and the
encoder initialise once. It drains its FrameRing into a fragmented MP4 through
PyAV: each slot is wrapped with ``VideoFrame.from_numpy_buffer`` (no copy), encoded,
and released as soon as PyAV holds no reference to it.

The parent talks to it over a pipe: ``start``, ``end``, ``cancel`` and ``stop``.
``end`` and ``cancel`` carry the number of frames the parent put for the episode,
so the encoder knows exactly how many to drain before it answers.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import socket
import subprocess
import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from . import sched
from .codecs import EncoderConfig, codec_options, input_format, quiet_svt, stream_pix_fmt
from .errors import EncoderError, PeerDied, RingTimeout
from .ring import ENCODED, RT_REPAIRED, SCHED
from .spill import SpillReader
from .stats import EpisodeStats

# a fragment per frame: a frame is in the file as soon as the next packet is muxed, whatever
# the keyframe interval (with frag_keyframe and g=30 a killed writer loses up to 30 frames)
MOVFLAGS = "frag_every_frame+empty_moov+default_base_moof"
# without flush_packets a killed writer leaves only the ftyp box on disk
CONTAINER_OPTIONS = {"movflags": MOVFLAGS, "flush_packets": "1"}
READY_TIMEOUT_S = 120.0
GET_WAIT_S = 0.01  # how long an idle encoder waits in the ring before it looks at its pipe again
SCHED_CHECK_S = 1.0  # how often the encoder checks its threads' scheduling besides after each codec open


@dataclass(frozen=True)
class EpisodeVideo:
    """One camera's episode: the file, its frame count, the encoder, and LeRobot-format stats."""

    path: Path
    frames: int
    codec: str
    stats: dict[str, np.ndarray] | None


@dataclass(frozen=True)
class EncoderSpec:
    camera: str
    ring: str
    spill: str
    fps: int
    vcodec: str
    config: EncoderConfig
    threads: int


def part_path(final: Path, start: int) -> Path:
    """A piece of an episode's video that begins at frame ``start``; a restarted encoder
    begins a new one, and end_episode joins them."""
    return final.with_name(f"{final.name}.part-{start:06d}")


def existing_parts(final: Path) -> list[tuple[int, Path]]:
    prefix = final.name + ".part-"
    found = [
        (int(p.name[len(prefix) :]), p) for p in final.parent.glob(prefix + "*") if p.name[len(prefix) :].isdigit()
    ]
    return sorted(found)


def _whole_packets(container, start: int, fps: int):
    """(frame index, packet) for each packet of a part that is whole; a crash can cut the
    tail. The one place that maps a part's pts to frame indices, so that resume and join agree."""
    stream = container.streams.video[0]
    for packet in container.demux(stream):
        if not packet.size:
            continue
        if packet.is_corrupt or packet.pts is None:
            return
        yield start + int(round(packet.pts * stream.time_base * fps)), packet


def durable_frames(part: Path, start: int, fps: int) -> list[int]:
    """Frame indices whose packets are whole in ``part``."""
    import av

    out: list[int] = []
    try:
        with av.open(str(part)) as c:
            out.extend(index for index, _ in _whole_packets(c, start, fps))
    except (av.error.FFmpegError, OSError, IndexError):
        pass  # keep what was read before the damage
    return out


def join_parts(parts: list[tuple[int, Path]], out: Path, fps: int) -> int:
    """Remux the parts into one MP4, no re-encode; each part up to where the next begins."""
    import av

    n = 0
    with av.open(str(out), "w", format="mp4", options=dict(CONTAINER_OPTIONS)) as dst:
        ostream = None
        for k, (start, part) in enumerate(parts):
            stop = parts[k + 1][0] if k + 1 < len(parts) else None
            with av.open(str(part)) as src:
                if ostream is None:
                    ostream = dst.add_stream_from_template(template=src.streams.video[0], opaque=True)
                    ostream.time_base = Fraction(1, fps)
                for index, packet in _whole_packets(src, start, fps):
                    if stop is not None and index >= stop:
                        break
                    packet.pts = packet.dts = index
                    packet.time_base = Fraction(1, fps)
                    packet.stream = ostream
                    dst.mux(packet)
                    n += 1
    return n


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Episode:
    """The video being written for one episode, possibly resumed after a crash.

    Frames are held (ring slot or spill record) until durable: an encoder holds frames
    for look-ahead, and the MP4 muxer writes a frame's fragment when the next packet
    arrives. So a frame is durable once a packet with a later pts has been muxed. At
    most ``hold_limit`` are held, so that the producer always finds a free slot.
    """

    def __init__(
        self, spec: EncoderSpec, index: int, final: Path, shape: tuple[int, ...], hold_limit: int, on_open=None
    ) -> None:
        import av

        self.spec, self.index, self.final = spec, index, final
        self.on_open = on_open  # called once the codec is open (at the first frame): threads exist then
        self.hold_limit, self.warned_hold = hold_limit, False
        final.parent.mkdir(parents=True, exist_ok=True)
        self.expected_last: int | None = None  # index of the last frame put, once the episode ended
        self.cancel = False
        self.error: tuple | None = None
        self.error_sent = False
        self.stats = EpisodeStats(shape[0], shape[1], shape[2])
        self.held: deque = deque()  # (frame index, release callable) in encode order
        self.last_seen = -1
        # resume after a crash: what earlier parts hold durably is kept, we go on after it
        self.prior = 0
        self.start = 0
        for start, part in existing_parts(final):
            frames = durable_frames(part, start, spec.fps)
            self.prior += len(frames)
            self.start = frames[-1] + 1 if frames else start
        self.last_seen = self.start - 1
        self.encoded = 0
        self.part = part_path(final, self.start)
        self.convert_to = input_format(spec.vcodec)
        self.container = av.open(str(self.part), "w", format="mp4", options=dict(CONTAINER_OPTIONS))
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
            self.error = self.error or ("order", f"frame {frame_index} after frame {self.last_seen}")
        self.last_seen = frame_index
        if self.cancel or self.error is not None:
            release()
            return
        try:
            self._encode(frame_index, array)
        except OSError as e:
            self.error = ("disk", str(self.part), getattr(e, "errno", None), _describe(e))
        except Exception as e:
            self.error = ("encoder", _describe(e))
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
        self._mux(self.stream.encode(None))
        self.container.close()
        _fsync(self.part)
        parts = existing_parts(self.final)
        if len(parts) == 1:
            os.replace(self.part, self.final)
            frames = self.encoded
        else:
            tmp = self.final.with_name(self.final.name + ".joining")
            frames = join_parts(parts, tmp, self.spec.fps)
            _fsync(tmp)
            os.replace(tmp, self.final)
            for _, p in parts:
                p.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            dfd = os.open(self.final.parent, os.O_RDONLY)
            os.fsync(dfd)
            os.close(dfd)
        self._release_all()
        return frames

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            for _ in self.stream.encode(None):  # drain, so the encoder shuts down cleanly
                pass
        with contextlib.suppress(Exception):
            self.container.close()
        for _, p in existing_parts(self.final):
            p.unlink(missing_ok=True)
        self._release_all()

    def keep_what_is_written(self) -> None:
        """After a failure (a full disk): keep the durable part as the episode's file."""
        with contextlib.suppress(Exception):
            self.container.close()
        parts = existing_parts(self.final)
        if len(parts) == 1:
            with contextlib.suppress(OSError):
                os.replace(parts[0][1], self.final)
        self._release_all()


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


def _serve(spec: EncoderSpec, conn: Connection) -> None:
    """The encoder process's main loop."""
    from .ring import FrameRing

    cfg = spec.config
    if len(sched.threads()) > 1:  # a thread started at import would keep the right given up below
        print(f"streamenc: encoder has {len(sched.threads())} threads before giving up real-time", file=sys.stderr)
    sched.apply(cfg.sched, cfg.nice, cfg.cpus)  # while this is the only thread: later ones inherit it
    sched.give_up_realtime()  # before any codec opens: SVT-AV1's request for SCHED_FIFO 99 then fails
    quiet_svt()
    import av  # noqa: F401  (import before "ready", so start-up cost is paid once, up front)

    ring = FrameRing.attach(spec.ring)
    spill = SpillReader(Path(spec.spill), ring)
    frames = _Input(ring, spill)
    watch = _ScheduleWatch(ring, cfg)
    conn.send(("ready", os.getpid()))
    ep: _Episode | None = None
    stopping = False
    try:
        while True:
            if ep is None:
                try:
                    msg = conn.recv()
                except EOFError:
                    return  # the parent is gone and no episode is open
                if msg[0] in ("start", "resume"):
                    try:
                        ep = _Episode(
                            spec, msg[1], Path(msg[2]), ring.shape, hold_limit=ring.slots - 2, on_open=watch.check
                        )
                        conn.send(("started", (msg[1], ep.start)))
                    except Exception as e:
                        conn.send(("error", ("encoder", _describe(e))))
                elif msg[0] == "stop":
                    conn.send(("stopped", None))
                    return
                else:
                    conn.send(("error", ("encoder", f"got {msg[0]!r} outside an episode")))
                continue

            if conn.poll():
                try:
                    msg = conn.recv()
                except EOFError:
                    msg = ("end", None)  # parent died: finish with what is in the ring and the spill
                if msg[0] in ("end", "cancel"):
                    ep.expected_last, ep.cancel = msg[1], msg[0] == "cancel"
                elif msg[0] == "stop":
                    stopping = True
            if ep.complete or (stopping and ep.expected_last is None and not ring.available and not spill.available()):
                conn.send(_close_episode(ep, spec))
                ep = None
                if stopping:
                    return
                continue
            watch.maybe_check()
            try:
                item = frames.next(GET_WAIT_S)
            except EOFError:
                reply = _close_episode(ep, spec)  # producer gone, everything drained: save it
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
            ring.set_counter("consumer", ENCODED, ring.counter("consumer", ENCODED) + 1)
            if ep.error is not None and not ep.error_sent:  # tell the recorder now, not at the end
                ep.error_sent = True
                conn.send(("failed", ep.error))
    finally:
        if ep is not None:
            with contextlib.suppress(Exception):
                _close_episode(ep, spec)
        spill.close()
        ring.close()


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
            self.ring.set_counter("consumer", RT_REPAIRED, self.repaired)
        self.ring.set_counter("consumer", SCHED, sched.pack(sched.observe()))
        self.last = time.monotonic()

    def maybe_check(self) -> None:
        if time.monotonic() - self.last >= SCHED_CHECK_S:
            self.check()


def _close_episode(ep: _Episode, spec: EncoderSpec) -> tuple:
    if ep.cancel:
        ep.discard()
        return ("cancelled", ep.index)
    if ep.error is None:
        try:
            frames = ep.finish()
        except OSError as e:
            ep.error = ("disk", str(ep.final), getattr(e, "errno", None), _describe(e))
        except Exception as e:
            ep.error = ("encoder", _describe(e))
    if ep.error is not None:
        ep.keep_what_is_written()
        return ("error", ep.error)
    return ("ended", EpisodeVideo(ep.final, frames, spec.vcodec, ep.stats.lerobot()))


def _describe(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}"
    if not str(e):
        text += " " + traceback.format_exc(limit=3)
    return text


# SIGINT is ignored before anything else: Ctrl-C is the recorder's to handle (it finalizes)
_BOOT = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "from streamenc.encoder import main; sys.exit(main(sys.argv[1:]))"
)
# A process group of its own, so a Ctrl-C at the terminal reaches only the recorder; but the
# recorder's session, hence its scheduler autogroup: a new session would put the encoder in an
# autogroup of its own, which the scheduler weighs like the record loop's whole group, and its
# SCHED_IDLE or nice value would then count only inside that group (measured: the loop woken
# up to 12 ms late behind SCHED_IDLE encoders in their own sessions, 0.4 ms in the same one).
_GROUP = {"process_group": 0} if sys.version_info >= (3, 11) else {}
_PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)


class EncoderProcess:
    """The parent's handle on one camera's encoder process.

    Started as a fresh interpreter rather than through multiprocessing's spawn, which
    would re-import the user's main script (and fail without an ``if __name__ ==
    "__main__"`` guard). A socketpair carries pickled messages. Its own process group,
    so a Ctrl-C at the terminal reaches only the recorder, which then finalizes.
    """

    def __init__(self, spec: EncoderSpec) -> None:
        self.spec = spec
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_PARENT, env.get("PYTHONPATH")]))
        # no BLAS thread pool: the encoder uses none, and the process should have one thread
        # when it gives up real-time scheduling (capabilities are per thread)
        env.update(OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", OMP_NUM_THREADS="1")
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(theirs.fileno())],
                env=env,
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                **_GROUP,
            )
        finally:
            theirs.close()
        self.pid: int = self._proc.pid
        self._conn = Connection(ours.detach())
        self._ready = select.poll()  # a poll object made once: Connection.poll(0) costs ~50 us per call
        self._ready.register(self._conn.fileno(), select.POLLIN)
        self._conn.send(spec)

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        kind, value = self.expect({"ready"}, timeout, "start")
        if kind != "ready":
            raise EncoderError(f"encoder for {self.spec.camera} did not start: {value}")

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    @property
    def exit_code(self) -> int | None:
        """None while it runs; a negative number is the signal that ended it."""
        return self._proc.poll()

    def send(self, *msg: object) -> None:
        try:
            self._conn.send(msg)
        except (OSError, EOFError) as e:
            raise EncoderError(f"encoder for {self.spec.camera} (pid {self.pid}) is gone: {e}") from None

    def poll(self) -> tuple | None:
        """The next message if one is there; EncoderError if the process has died."""
        try:
            if self._ready.poll(0):
                return self._conn.recv()
        except (EOFError, OSError):
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(5)
        if self._proc.poll() is not None:
            raise EncoderError(
                f"encoder for {self.spec.camera} (pid {self.pid}) died (exit code {self._proc.returncode})"
            )
        return None

    def expect(self, kinds: set[str], timeout: float | None, what: str) -> tuple:
        """Wait for a message of one of ``kinds`` (or an error), passing over the
        start-up notes ("ready", "started") a restarted process sends first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            msg = self.poll()
            if msg is not None:
                if msg[0] in kinds or msg[0] == "error":
                    return msg
                continue
            if deadline is not None and time.monotonic() > deadline:
                raise EncoderError(f"encoder for {self.spec.camera} did not answer {what} in {timeout} s")
            with contextlib.suppress(OSError, EOFError):
                self._conn.poll(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask it to exit, then make sure it has, by pid."""
        if self.alive:
            with contextlib.suppress(EncoderError, OSError):
                self.send("stop")
                self.expect({"stopped"}, timeout, "stop")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout)
        if self.alive:
            self._proc.kill()
            self._proc.wait(5)
        self._conn.close()


def main(argv: list[str]) -> int:
    """Entry point of the encoder process; argv is the socket's file descriptor."""
    conn = Connection(int(argv[0]))
    try:
        spec = conn.recv()
    except (EOFError, OSError, pickle.UnpicklingError):
        return 1
    try:
        _serve(spec, conn)
    except Exception as e:
        with contextlib.suppress(OSError):
            conn.send(("error", _describe(e)))
        raise
    return 0
