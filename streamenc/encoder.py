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
import signal
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from fractions import Fraction
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from .codecs import EncoderConfig, codec_options, input_format, quiet_svt, stream_pix_fmt
from .errors import EncoderError, PeerDied, RingTimeout
from .stats import EpisodeStats

MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof"
# without flush_packets a killed writer leaves only the ftyp box on disk
CONTAINER_OPTIONS = {"movflags": MOVFLAGS, "flush_packets": "1"}
READY_TIMEOUT_S = 120.0
GET_WAIT_S = 0.01  # how long an idle encoder waits in the ring before it looks at its pipe again


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
    fps: int
    vcodec: str
    config: EncoderConfig
    threads: int
    nice: int = 0


class _Episode:
    """The file being written for one episode."""

    def __init__(self, spec: EncoderSpec, index: int, path: Path, shape: tuple[int, ...]) -> None:
        import av

        self.index, self.path = index, path
        self.partial = path.with_name(path.name + ".partial")
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        self.taken = 0
        self.expected: int | None = None
        self.cancel = False
        self.error: str | None = None
        self.stats = EpisodeStats(shape[0], shape[1], shape[2])
        self.convert_to = input_format(spec.vcodec)
        self.container = av.open(str(self.partial), "w", format="mp4", options=dict(CONTAINER_OPTIONS))
        self.stream = self.container.add_stream(spec.vcodec, rate=spec.fps)
        self.stream.width, self.stream.height = shape[1], shape[0]
        self.stream.pix_fmt = stream_pix_fmt(spec.config, spec.vcodec)
        self.stream.time_base = Fraction(1, spec.fps)
        self.stream.codec_context.time_base = Fraction(1, spec.fps)
        self.stream.options = codec_options(spec.config, spec.vcodec, threads=spec.threads)
        # An encoder that took our rgb24 as is could keep a reference to the slot after
        # encode() returns; every format we configure needs a conversion, which copies.
        self.must_copy = self.stream.pix_fmt == "rgb24"

    def encode(self, array: np.ndarray) -> None:
        import av

        frame = av.VideoFrame.from_numpy_buffer(array.copy() if self.must_copy else array, format="rgb24")
        if self.convert_to:
            frame = frame.reformat(format=self.convert_to)
        frame.pts = self.taken
        frame.time_base = self.stream.codec_context.time_base
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.stats.update(array)

    def finish(self) -> None:
        """Flush the encoder, close the file, make it durable and give it its final name."""
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()
        fd = os.open(self.partial, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self.partial, self.path)
        with contextlib.suppress(OSError):
            dfd = os.open(self.path.parent, os.O_RDONLY)
            os.fsync(dfd)
            os.close(dfd)

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            for _ in self.stream.encode(None):  # drain, so the encoder shuts down cleanly
                pass
        with contextlib.suppress(Exception):
            self.container.close()
        with contextlib.suppress(FileNotFoundError):
            self.partial.unlink()


def _serve(spec: EncoderSpec, conn: Connection) -> None:
    """The encoder process's main loop."""
    from .ring import FrameRing

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the recorder's to handle: it finalizes
    if spec.nice:
        with contextlib.suppress(OSError):
            os.nice(spec.nice)
    quiet_svt()
    import av  # noqa: F401  (import before "ready", so start-up cost is paid once, up front)

    ring = FrameRing.attach(spec.ring)
    conn.send(("ready", os.getpid()))
    ep: _Episode | None = None
    stopping = False
    try:
        while True:
            if ep is None:
                try:
                    msg = conn.recv()
                except EOFError:
                    return  # the parent is gone and nothing is in flight
                if msg[0] == "start":
                    try:
                        ep = _Episode(spec, msg[1], Path(msg[2]), ring.shape)
                        conn.send(("started", msg[1]))
                    except Exception as e:
                        conn.send(("error", _describe(e)))
                elif msg[0] == "stop":
                    conn.send(("stopped", None))
                    return
                else:
                    conn.send(("error", f"encoder for {spec.camera} got {msg[0]!r} outside an episode"))
                continue

            if conn.poll():
                try:
                    msg = conn.recv()
                except EOFError:
                    msg = ("end", None)  # parent died: finish what is in the ring
                if msg[0] in ("end", "cancel"):
                    ep.expected, ep.cancel = msg[1], msg[0] == "cancel"
                elif msg[0] == "stop":  # keep every frame already committed, then exit
                    ep.expected, stopping = ep.taken + ring.available, True
            if ep.expected is not None and ep.taken >= ep.expected:
                conn.send(_close_episode(ep, spec))
                ep = None
                if stopping:
                    return
                continue
            try:
                slot = ring.get(timeout=GET_WAIT_S)
            except RingTimeout:
                continue
            except PeerDied:
                # the producer is gone and the ring is empty: save what we have
                reply = _close_episode(ep, spec)
                ep = None
                with contextlib.suppress(OSError):
                    conn.send(reply)
                return
            with slot:
                if slot.episode != ep.index or slot.frame_index != ep.taken:
                    ep.error = ep.error or (
                        f"frame order broken: expected episode {ep.index} frame {ep.taken}, "
                        f"got episode {slot.episode} frame {slot.frame_index}"
                    )
                elif not ep.cancel and ep.error is None:
                    try:
                        ep.encode(slot.array)
                    except Exception as e:
                        ep.error = _describe(e)
                ep.taken += 1
    finally:
        if ep is not None:
            with contextlib.suppress(Exception):
                _close_episode(ep, spec)
        ring.close()


def _close_episode(ep: _Episode, spec: EncoderSpec) -> tuple:
    if ep.cancel:
        ep.discard()
        return ("cancelled", ep.index)
    if ep.error is None:
        try:
            ep.finish()
        except Exception as e:
            ep.error = _describe(e)
    if ep.error is not None:
        ep.discard()
        return ("error", f"camera {spec.camera}, episode {ep.index}: {ep.error}")
    return ("ended", EpisodeVideo(ep.path, ep.taken, spec.vcodec, ep.stats.lerobot()))


def _describe(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}"
    if not str(e):
        text += " " + traceback.format_exc(limit=3)
    return text


_BOOT = "import sys; from streamenc.encoder import main; sys.exit(main(sys.argv[1:]))"
_PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)


class EncoderProcess:
    """The parent's handle on one camera's encoder process.

    Started as a fresh interpreter rather than through multiprocessing's spawn, which
    would re-import the user's main script (and fail without an ``if __name__ ==
    "__main__"`` guard). A socketpair carries pickled messages. Its own session, so a
    Ctrl-C at the terminal reaches only the recorder, which then finalizes.
    """

    def __init__(self, spec: EncoderSpec) -> None:
        self.spec = spec
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_PARENT, env.get("PYTHONPATH")]))
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(theirs.fileno())],
                env=env,
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            theirs.close()
        self.pid: int = self._proc.pid
        self._conn = Connection(ours.detach())
        self._conn.send(spec)

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        kind, value = self._reply(timeout, "start")
        if kind != "ready":
            raise EncoderError(f"encoder for {self.spec.camera} did not start: {value}")

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    def send(self, *msg: object) -> None:
        try:
            self._conn.send(msg)
        except (OSError, EOFError) as e:
            raise EncoderError(f"encoder for {self.spec.camera} (pid {self.pid}) is gone: {e}") from None

    def _reply(self, timeout: float | None, what: str) -> tuple:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                if self._conn.poll(0.1):
                    return self._conn.recv()
            except (EOFError, OSError):
                self._proc.wait(5)
            if self._proc.poll() is not None:
                raise EncoderError(
                    f"encoder for {self.spec.camera} (pid {self.pid}) died "
                    f"during {what} (exit code {self._proc.returncode})"
                )
            if deadline is not None and time.monotonic() > deadline:
                raise EncoderError(f"encoder for {self.spec.camera} did not answer {what} in {timeout} s")

    def request(self, *msg: object, timeout: float | None = None) -> tuple:
        self.send(*msg)
        return self._reply(timeout, str(msg[0]))

    def stop(self, timeout: float = 10.0) -> None:
        """Ask it to exit, then make sure it has, by pid."""
        if self.alive:
            with contextlib.suppress(EncoderError, OSError):
                self.request("stop", timeout=timeout)
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
