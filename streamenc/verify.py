"""Read back what was recorded: decode a video, stopping quietly at a truncated tail,
and check frames stamped by streamenc.synthetic for count, order and pixel error."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from .synthetic import SyntheticCamera, read_index


def decode(path: str | Path) -> Iterator[tuple[float, np.ndarray]]:
    """Yield (time in seconds, HWC uint8 RGB) for every decodable frame.

    A file cut short by a crash ends in a partial fragment; decoding stops at the
    first corrupt packet and drains the frames the decoder already holds.
    """
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        tb = stream.time_base

        def out(frames):
            for frame in frames:
                yield float(frame.pts * tb), frame.to_ndarray(format="rgb24")

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
