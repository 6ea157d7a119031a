"""Inside an encoder process: one episode's video, written frame by frame, crash-safe.

An ``EpisodeWriter`` takes the camera's frames in order and answers the recorder's End or
Cancel with the finished file, its removal, or what survived a failure. Its parts:

- ``VideoOut``: the open part's PyAV container and stream, and how a ring slot becomes a
  video frame (RGB wrapped without a copy; depth quantized to 12-bit codes);
- ``Held``: the frames not yet durable, whose ring slots or spill records stay taken so
  that a restarted encoder finds them again;
- ``parts``: where an episode resumes after a crash, and how its parts become one file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import traceback
from collections import deque
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from . import parts
from .codecs import DEPTH_PIX_FMT, codec_options, input_format, stream_pix_fmt
from .depth import DepthStats, Quantizer
from .protocol import Cancelled, EncoderSpec, Ended, Failed
from .stats import EpisodeStats

Release = Callable[[], None]


class Held:
    """Frames encoded but not yet durable, in encode order, each with its release.

    An encoder holds frames for look-ahead, and the MP4 muxer writes a frame's fragment
    when the next packet arrives: a frame is durable once a packet with a later pts has
    been muxed. At most ``limit`` are held, so that the producer always finds a free slot.
    """

    def __init__(self, camera: str, limit: int) -> None:
        self.camera, self.limit = camera, limit
        self._frames: deque[tuple[int, Release]] = deque()
        self._warned = False

    def add(self, index: int, release: Release) -> None:
        self._frames.append((index, release))
        if len(self._frames) <= self.limit:
            return
        # The encoder holds more frames (look-ahead) than the ring can spare: keep the
        # producer going, at the price of these frames not surviving an encoder crash.
        if not self._warned:
            self._warned = True
            print(
                f"streamenc: encoder for {self.camera} holds more than {self.limit} frames in flight; "
                f"releasing some before they are durable (give the ring more slots)",
                file=sys.stderr,
            )
        while len(self._frames) > self.limit:
            self._frames.popleft()[1]()

    def release_before(self, pts: int) -> None:
        """A packet of this pts is in the file: every frame before it is durable."""
        while self._frames and self._frames[0][0] < pts:
            self._frames.popleft()[1]()

    def release_all(self) -> None:
        while self._frames:
            self._frames.popleft()[1]()


class VideoOut:
    """One part's container and stream: frames in (by frame index), packets muxed."""

    def __init__(self, spec: EncoderSpec, path: Path, shape: tuple[int, ...], on_packet: Callable[[int], None]) -> None:
        self.spec, self.path, self.on_packet = spec, path, on_packet
        self.convert_to = input_format(spec.vcodec)
        self.quantize = Quantizer(spec.depth) if spec.depth is not None else None
        self.container = av.open(str(path), "w", format="mp4", options=dict(parts.CONTAINER_OPTIONS))
        self.stream = self.container.add_stream(spec.vcodec, rate=spec.fps)
        self.stream.width, self.stream.height = shape[1], shape[0]
        self.stream.pix_fmt = stream_pix_fmt(spec.config, spec.vcodec)
        self.stream.time_base = Fraction(1, spec.fps)
        self.stream.codec_context.time_base = Fraction(1, spec.fps)
        self.stream.options = codec_options(spec.config, spec.vcodec, threads=spec.threads)
        # An encoder that took our rgb24 as is could keep a reference to the slot after
        # encode() returns; every format we configure needs a conversion, which copies.
        self.must_copy = self.stream.pix_fmt == "rgb24"

    def _frame(self, array: np.ndarray) -> av.VideoFrame:
        if self.quantize is not None:  # depth: 12-bit codes straight into a new frame's plane
            h, w = array.shape
            frame = av.VideoFrame(w, h, DEPTH_PIX_FMT)
            plane = frame.planes[0]
            self.quantize(array, np.frombuffer(plane, np.uint16).reshape(h, plane.line_size // 2)[:, :w])
            return frame
        frame = av.VideoFrame.from_numpy_buffer(array.copy() if self.must_copy else array, format="rgb24")
        return frame.reformat(format=self.convert_to) if self.convert_to else frame

    def encode(self, index: int, array: np.ndarray | None) -> None:
        """Encode frame ``index`` (None: flush the encoder) and mux what comes out."""
        frame = None
        if array is not None:
            frame = self._frame(array)
            frame.pts = index
            frame.time_base = self.stream.codec_context.time_base
        for packet in self.stream.encode(frame):
            pts = packet.pts
            self.container.mux(packet)
            if pts is not None:  # muxing this packet wrote out the fragments of all before it
                self.on_packet(pts)

    def close(self) -> None:
        self.container.close()

    def abandon(self, drain: bool = True) -> None:
        """Close after a cancel (``drain``: so that the encoder shuts down cleanly) or a
        failure (as it is), whatever state it is in."""
        if drain:
            with contextlib.suppress(Exception):
                for _ in self.stream.encode(None):
                    pass
        with contextlib.suppress(Exception):
            self.container.close()


class EpisodeWriter:
    """The video being written for one episode, possibly resumed after a crash: frames are
    taken in order, and released once durable (``Held``)."""

    def __init__(
        self,
        spec: EncoderSpec,
        index: int,
        final: Path,
        shape: tuple[int, ...],
        hold_limit: int,
        on_open: Callable[[], None] | None = None,
        resume: bool = False,
    ) -> None:
        self.spec, self.index, self.final = spec, index, final
        self.on_open = on_open  # called once the codec is open (at the first frame): threads exist then
        final.parent.mkdir(parents=True, exist_ok=True)
        self.last: int | None = None  # index of the episode's last frame, once the recorder said it
        self.cancelled = False
        self.error: Failed | None = None
        self._reported = False
        if spec.depth is not None:
            self.stats: EpisodeStats | DepthStats = DepthStats(shape[0], shape[1], spec.depth.dtype)
        else:
            self.stats = EpisodeStats(shape[0], shape[1], shape[2])
        self.held = Held(spec.camera, hold_limit)
        # resume after a crash: what earlier parts hold durably is kept, we go on after it
        self.start = parts.resume_point(final, spec.fps, adopt_final=resume)
        self.last_seen = self.start - 1
        self.encoded = 0
        self.part = parts.part_path(final, self.start)
        self.out = VideoOut(spec, self.part, shape, self.held.release_before)

    # -- commands -----------------------------------------------------------------------
    def end(self, last: int | None) -> None:
        """The recorder's End: ``last`` is the episode's last frame (None: whatever comes)."""
        self.last = last

    def cancel(self, last: int | None) -> None:
        """The recorder's Cancel: drop the episode once frame ``last`` has gone by."""
        self.last, self.cancelled = last, True

    @property
    def complete(self) -> bool:
        return self.last is not None and self.last_seen >= self.last

    # -- frames -------------------------------------------------------------------------
    def take(self, frame_index: int, array: np.ndarray, release: Release) -> None:
        """One frame in order: encode it, or let it go if it is durable already or cancelled."""
        if frame_index <= self.last_seen:
            if frame_index < self.start:  # a restarted encoder meets frames the dead one made durable
                release()
                return
            self.error = self.error or Failed("order", f"frame {frame_index} after frame {self.last_seen}")
        self.last_seen = frame_index
        if self.cancelled or self.error is not None:
            release()
            return
        try:
            self.out.encode(frame_index, array)
            if self.on_open is not None:  # the codec opened in that encode() and started its threads
                self.on_open()
                self.on_open = None
            self.stats.update(array)
            self.encoded += 1
        except OSError as e:
            self.error = disk_failure(e, self.part)
        except Exception as e:
            self.error = Failed("encoder", describe(e))
        self.held.add(frame_index, release)
        if self.error is not None:
            self.held.release_all()

    def news(self) -> Failed | None:
        """A failure to tell the recorder now, mid-episode, once; the episode goes on to its end."""
        if self.error is None or self._reported:
            return None
        self._reported = True
        return dataclasses.replace(self.error, final=False)

    # -- the answer ---------------------------------------------------------------------
    def close(self) -> Ended | Cancelled | Failed:
        """The answer to End or Cancel: the file finished, or removed, or kept as far as it
        is durable after a failure. Every held frame is released."""
        try:
            if self.cancelled:
                self.out.abandon()
                parts.remove_parts(self.final)
                return Cancelled(self.index)
            if self.error is None:
                try:
                    frames = self._finish()
                    return Ended(self.index, str(self.final), frames, self.spec.vcodec, self.stats.lerobot())
                except OSError as e:
                    self.error = disk_failure(e, self.final)
                except Exception as e:
                    self.error = Failed("encoder", describe(e))
            self.out.abandon(drain=False)
            parts.keep_durable(self.final)  # after a failure (a full disk): the durable part is the file
            return dataclasses.replace(self.error, final=True)
        finally:
            self.held.release_all()

    def _finish(self) -> int:
        if self.encoded or not self.start:
            self.out.encode(0, None)
            self.out.close()
            parts.fsync(self.part)
        else:  # resumed where every frame was durable already: this part stays empty
            self.out.abandon()
            self.part.unlink(missing_ok=True)
        return parts.assemble(self.final, self.spec.fps, self.part, self.encoded)


def disk_failure(e: OSError, path: Path) -> Failed:
    return Failed("disk", describe(e), str(path), getattr(e, "errno", None))


def describe(e: BaseException) -> str:
    """An exception as the recorder shows it: its type and whole text (a traceback if it has none)."""
    text = f"{type(e).__name__}: {e}"
    if not str(e):
        text += " " + traceback.format_exc(limit=3)
    return text
