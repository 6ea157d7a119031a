"""Read back what was recorded: decode a video, stopping quietly at a truncated tail,
and check frames stamped by streamenc.synthetic for count, order and pixel error (for
depth: that every frame's 12-bit codes are exactly those of the frame sent)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from .depth import Depth, quantize
from .synthetic import SyntheticCamera, SyntheticDepth, read_index


def decode(path: str | Path, fmt: str = "rgb24") -> Iterator[tuple[float, np.ndarray]]:
    """Yield (time in seconds, frame) for every decodable frame: HWC uint8 RGB, or with
    ``fmt="gray12le"`` a depth video's (H, W) uint16 codes.

    A file cut short by a crash ends in a partial fragment; decoding stops at the
    first corrupt packet and drains the frames the decoder already holds.
    """
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        tb = stream.time_base

        def out(frames):
            for frame in frames:
                yield float(frame.pts * tb), frame.to_ndarray(format=fmt)

        for packet in container.demux(stream):
            if packet.size and packet.is_corrupt:
                break
            try:
                yield from out(packet.decode())  # the demuxer's last, empty packet drains the decoder
            except av.error.InvalidDataError:
                break
        else:
            return
        try:  # stopped at a damaged tail: drain what the decoder already holds
            yield from out(stream.codec_context.decode(None))
        except av.error.FFmpegError:
            pass


@dataclass
class VideoCheck:
    """What a decoded synthetic recording looks like against the frames that were sent."""

    frames: int = 0
    indices: list[int] = field(default_factory=list)
    max_mean_abs_error: float = 0.0
    times: list[float] = field(default_factory=list)
    fps: float = 0.0

    def in_order(self, expected: int | None = None) -> bool:
        n = len(self.indices) if expected is None else expected
        return self.indices == list(range(n))

    def cfr(self, fps: int) -> bool:
        """Constant frame rate: frame k is at k / fps."""
        return all(abs(t - k / fps) < 1e-6 for k, t in enumerate(self.times))


def check(path: str | Path, camera: SyntheticCamera | None = None) -> VideoCheck:
    """Decode ``path``; read each frame's stamped index and, with ``camera``, its error."""
    out = VideoCheck()
    with av.open(str(path)) as c:
        rate = c.streams.video[0].average_rate
        out.fps = float(rate) if rate else 0.0
    for t, img in decode(path):
        index = read_index(img)
        out.frames += 1
        out.indices.append(index)
        out.times.append(t)
        if camera is not None:
            err = float(np.abs(img.astype(np.int16) - camera.expected(index).astype(np.int16)).mean())
            out.max_mean_abs_error = max(out.max_mean_abs_error, err)
    return out


def check_depth(path: str | Path, camera: SyntheticDepth, spec: Depth) -> VideoCheck:
    """Decode a depth video; frame k is in order only if its codes equal, exactly, those of
    the camera's frame k quantized (``indices`` holds -1 where not). ``max_mean_abs_error``
    is the largest code difference seen (0 for lossless)."""
    out = VideoCheck()
    for k, (t, codes) in enumerate(decode(path, "gray12le")):
        want = quantize(camera.expected(k), spec)
        diff = int(np.abs(codes.astype(np.int32) - want).max())
        out.frames += 1
        out.indices.append(k if diff == 0 else -1)
        out.times.append(t)
        out.max_mean_abs_error = max(out.max_mean_abs_error, float(diff))
    return out
