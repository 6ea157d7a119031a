"""Camera-like synthetic frames with the frame index stamped into them.

The index is written as 16 black or white blocks, big enough to survive lossy
coding, so a test or benchmark can decode a video and check order and count.
The rest of each frame is a smooth moving scene with mild noise, which encodes
like a camera image rather than like white noise.
"""

from __future__ import annotations

import time

import numpy as np

BITS = 16


def _block(height: int, width: int) -> int:
    return max(8, min(width // (BITS + 2), height // 8) // 8 * 8)


def stamp(frame: np.ndarray, index: int) -> np.ndarray:
    """Write ``index`` into the top row of ``frame`` (HWC), in place."""
    b = _block(*frame.shape[:2])
    for bit in range(BITS):
        frame[b // 2 : b // 2 + b, (bit + 1) * b : (bit + 2) * b] = 255 if (index >> bit) & 1 else 0
    return frame


def read_index(frame: np.ndarray) -> int:
    """Read back what ``stamp`` wrote, from a possibly lossy copy."""
    b = _block(*frame.shape[:2])
    q = b // 4  # sample the middle of each block, away from edge ringing
    value = 0
    for bit in range(BITS):
        y0, x0 = b // 2 + q, (bit + 1) * b + q
        if frame[y0 : y0 + 2 * q, x0 : x0 + 2 * q].mean() > 127:
            value |= 1 << bit
    return value


class SyntheticCamera:
    """Renders a pool of frames once, then stamps the index on the fly: cheap per frame."""

    def __init__(self, height: int = 480, width: int = 640, pool: int = 30, seed: int = 0) -> None:
        self.shape = (height, width, 3)
        rng = np.random.default_rng(seed)
        y = np.linspace(0, 1, height)[:, None]
        x = np.linspace(0, 1, width)[None, :]
        frames = []
        for k in range(pool):
            t = k / pool * 2 * np.pi
            r = 0.5 + 0.4 * np.sin(2 * np.pi * x + t) * np.cos(np.pi * y)
            g = 0.5 + 0.4 * np.cos(3 * np.pi * y - t) * np.ones_like(x)
            bl = 0.5 + 0.4 * np.sin(2 * np.pi * (x + y) + 2 * t)
            img = np.stack(np.broadcast_arrays(r, g, bl), axis=-1) * 255
            cy, cx = int(height * (0.5 + 0.3 * np.sin(t))), int(width * (0.5 + 0.3 * np.cos(t)))
            img[max(0, cy - height // 8) : cy + height // 8, max(0, cx - width // 10) : cx + width // 10] = (
                220,
                60,
                40,
            )
            img += rng.normal(0, 3, img.shape)
            frames.append(np.clip(img, 0, 255).astype(np.uint8))
        self._pool = frames

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` (a view into the pool, stamped): copy it if you keep it."""
        return stamp(self._pool[index % len(self._pool)], index)

    def expected(self, index: int) -> np.ndarray:
        """A private copy of frame ``index``, for comparing against what was decoded."""
        return self.frame(index).copy()


class SyntheticDepth:
    """A depth camera's frames: a smooth tilted floor-and-wall depth field with a ripple,
    a disc moving in front of it, sensor noise, and a few invalid (0) pixels, as a
    RealSense gives them. ``dtype`` "uint16" gives millimetres, "float32" metres.
    Frames come from a rendered pool, like SyntheticCamera's; ``frame(i)`` is a view."""

    def __init__(
        self, height: int = 480, width: int = 640, dtype: str = "uint16", pool: int = 30, seed: int = 0
    ) -> None:
        self.shape = (height, width)
        self.dtype = np.dtype(dtype)
        rng = np.random.default_rng(seed)
        y = np.linspace(0, 1, height)[:, None]
        x = np.linspace(0, 1, width)[None, :]
        base = 0.6 + 2.4 * y + 0.3 * x + 0.05 * np.sin(6 * np.pi * x) * np.cos(4 * np.pi * y)  # metres
        frames = []
        for k in range(pool):
            t = k / pool * 2 * np.pi
            d = base.copy()
            cy, cx = height * (0.5 + 0.25 * np.sin(t)), width * (0.5 + 0.3 * np.cos(t))
            r2 = ((np.arange(height)[:, None] - cy) / (height / 6)) ** 2 + (
                (np.arange(width)[None, :] - cx) / (height / 6)
            ) ** 2
            d = np.where(r2 < 1, 0.45 + 0.05 * r2, d)  # a rounded object 0.45-0.5 m away
            d = d + rng.normal(0, 0.002, d.shape) * d  # noise grows with distance
            d[rng.random(d.shape) < 0.002] = 0  # dropouts: no return
            frames.append((d * 1000).round().astype(np.uint16) if self.dtype == np.uint16 else d.astype(np.float32))
        self._pool = frames

    def frame(self, index: int) -> np.ndarray:
        """Depth frame ``index``, (H, W) in the camera's dtype, with the index stamped as
        blocks of 0 and 255 (mm or m) so that every frame differs (a view: copy it to keep it)."""
        frame = self._pool[index % len(self._pool)]
        stamp(frame[..., None], index)
        return frame

    def expected(self, index: int) -> np.ndarray:
        return self.frame(index).copy()


class Pacer:
    """Paces a loop at ``fps`` as a camera-driven record loop is.

    Per tick it keeps the lateness: how long after its scheduled time the next tick began
    (the sleep's wake-up lateness, or the overrun when the work ran past the deadline),
    and it counts ``missed`` (overruns): ticks whose work ended after the deadline.
    """

    def __init__(self, fps: int) -> None:
        self.period = 1.0 / fps
        self.deadline = time.perf_counter()
        self.missed = 0
        self.lateness: list[float] = []  # seconds, one per tick

    def wait(self) -> None:
        self.deadline += self.period
        slack = self.deadline - time.perf_counter()
        if slack < 0:
            self.missed += 1
        else:
            time.sleep(slack)
        self.lateness.append(max(0.0, time.perf_counter() - self.deadline))
