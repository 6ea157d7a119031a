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


def _fractal(rng: np.random.Generator, height: int, width: int, scale: float) -> np.ndarray:
    """Smooth multi-scale noise in [-1, 1]: octaves of bilinearly upsampled random grids."""
    out = np.zeros((height, width))
    amp = 1.0
    for size in (64, 32, 16, 8, 4):
        cell = max(2.0, size * scale)
        g = rng.standard_normal((int(height / cell) + 2, int(width / cell) + 2))
        y, x = np.arange(height) / cell, np.arange(width) / cell
        y0, x0 = y.astype(int), x.astype(int)
        fy, fx = (y - y0)[:, None], (x - x0)[None, :]
        top = g[y0][:, x0] * (1 - fx) + g[y0][:, x0 + 1] * fx
        bottom = g[y0 + 1][:, x0] * (1 - fx) + g[y0 + 1][:, x0 + 1] * fx
        out += amp * (top * (1 - fy) + bottom * fy)
        amp *= 0.6
    return out / np.abs(out).max()


class _Canvas:
    """An image in height units (y down, x right; 1.0 is the image height) that round
    shapes are painted on with one-pixel soft edges, each within its bounding box."""

    def __init__(self, img: np.ndarray) -> None:
        self.img = img
        self.px = 1.0 / img.shape[0]

    def _box(self, y0: float, y1: float, x0: float, x1: float) -> tuple[slice, slice, np.ndarray, np.ndarray]:
        h, w = self.img.shape[:2]
        r0, c0 = min(h, max(0, int(y0 / self.px) - 1)), min(w, max(0, int(x0 / self.px) - 1))
        r1, c1 = max(r0, min(h, int(y1 / self.px) + 2)), max(c0, min(w, int(x1 / self.px) + 2))
        yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float64) * self.px
        return slice(r0, r1), slice(c0, c1), yy, xx

    def capsule(self, a: tuple, b: tuple, r: float, colour, soft: float = 1.0, shadow: float = 0.0) -> None:
        """A round bar of radius ``r`` from ``a`` to ``b``, shaded across its width; with
        ``shadow``, only darken by that much (a soft shadow ``soft`` pixels wide)."""
        pad = r + soft * self.px
        (y0, y1), (x0, x1) = sorted((a[0], b[0])), sorted((a[1], b[1]))
        rows, cols, yy, xx = self._box(y0 - pad, y1 + pad, x0 - pad, x1 + pad)
        dy, dx = b[0] - a[0], b[1] - a[1]
        t = np.clip(((yy - a[0]) * dy + (xx - a[1]) * dx) / max(dy * dy + dx * dx, 1e-12), 0, 1)
        d = np.hypot(yy - a[0] - t * dy, xx - a[1] - t * dx)
        cover = np.clip((r - d) / (soft * self.px), 0, 1)[..., None]
        part = self.img[rows, cols]
        if shadow:
            part *= 1 - shadow * cover
            return
        n = np.sqrt(np.clip(1 - (d / r) ** 2, 0, 1))[..., None]
        part[:] = part * (1 - cover) + np.asarray(colour) * (0.3 + 0.7 * n) * cover

    def sphere(self, cy: float, cx: float, r: float, colour, light: np.ndarray) -> None:
        """A lit ball: Lambert shading and a highlight."""
        rows, cols, yy, xx = self._box(cy - r, cy + r, cx - r, cx + r)
        ny, nx = (yy - cy) / r, (xx - cx) / r
        nz = np.sqrt(np.clip(1 - ny**2 - nx**2, 0, 1))
        lit = np.clip(ny * light[0] + nx * light[1] + nz * light[2], 0, 1)[..., None]
        shade = np.asarray(colour) * (0.25 + 0.75 * lit) + 255 * lit**40
        cover = np.clip((1 - np.hypot(ny, nx)) * r / self.px, 0, 1)[..., None]
        part = self.img[rows, cols]
        part[:] = part * (1 - cover) + shade * cover


class SceneCamera:
    """A rendered tabletop, as a simulator's camera gives it: a plastered wall, a wooden
    table with grain, lit balls with contact shadows, and a robot arm (two links, a
    gripper, its shadow) moving through a pool of frames. A second kind of content beside
    SyntheticCamera's smooth gradients, with texture, edges and motion; no sensor noise.
    The index is stamped as SyntheticCamera's is."""

    HORIZON = 0.42  # where the table meets the wall, in image heights

    def __init__(self, height: int = 480, width: int = 640, pool: int = 30, seed: int = 0) -> None:
        self.shape = (height, width, 3)
        rng = np.random.default_rng(seed)
        aspect = width / height
        y = np.linspace(0, 1, height)[:, None] * np.ones((1, width))
        x = np.linspace(0, aspect, width)[None, :] * np.ones((height, 1))
        wall = np.array([205.0, 195, 175]) * (1 + 0.06 * _fractal(rng, height, width, height / 480))[..., None]
        rings = 14 * np.log1p(8 * np.maximum(y - self.HORIZON, 0)) + 2.5 * _fractal(rng, height, width, height / 240)
        grain = 0.12 * np.sin(2 * np.pi * rings) + 0.05 * _fractal(rng, height, width, height / 480)
        wood = np.array([150.0, 98, 58]) * (1 + grain)[..., None]
        img = np.where((y < self.HORIZON)[..., None], wall, wood)
        img *= (1.05 - 0.25 * x / aspect - 0.1 * y)[..., None]  # light from the top left
        img[np.abs(y[:, 0] - self.HORIZON) < 3 / height] *= 0.35  # the table's back edge
        canvas = _Canvas(img)
        light = np.array([-0.5, -0.55, 0.67])
        balls = [(0.62, 0.78 * aspect, 0.07, (60, 150, 70)), (0.70, 0.22 * aspect, 0.09, (200, 40, 35))]
        balls.append((0.55, 0.60 * aspect, 0.05, (40, 80, 190)))
        for cy, cx, r, _ in balls:
            canvas.capsule((cy + 0.6 * r, cx - 0.2 * r), (cy + 0.6 * r, cx + 0.8 * r), r, 0, soft=30, shadow=0.45)
        for cy, cx, r, colour in balls:
            canvas.sphere(cy, cx, r, colour, light)
        phase = rng.uniform(0, 2 * np.pi)
        self._pool = [self._arm(img, aspect, 2 * np.pi * k / pool + phase) for k in range(pool)]

    @staticmethod
    def _arm(background: np.ndarray, aspect: float, t: float) -> np.ndarray:
        canvas = _Canvas(background.copy())
        base = (1.05, 0.45 * aspect)
        a1 = -np.pi / 2 + 0.45 * np.sin(t)
        elbow = (base[0] + 0.45 * np.sin(a1), base[1] + 0.45 * np.cos(a1))
        a2 = a1 + 1.0 + 0.6 * np.sin(2 * t + 1)
        wrist = (elbow[0] + 0.33 * np.sin(a2), elbow[1] + 0.33 * np.cos(a2))
        links = [(base, elbow, 0.055, (235, 125, 35)), (elbow, wrist, 0.042, (205, 205, 210))]
        for s in (-0.5, 0.5):  # the gripper's fingers
            tip = (wrist[0] + 0.08 * np.sin(a2 + s), wrist[1] + 0.08 * np.cos(a2 + s))
            links.append((wrist, tip, 0.014, (70, 70, 75)))
        for a, b, r, _ in links:  # its shadow, cast down and to the left
            canvas.capsule((a[0] + 0.06, a[1] - 0.05), (b[0] + 0.06, b[1] - 0.05), 1.2 * r, 0, soft=6, shadow=0.35)
        for a, b, r, colour in links:
            canvas.capsule(a, b, r, colour)
        for joint in (base, elbow, wrist):
            canvas.capsule(joint, joint, 0.03, (45, 45, 50))
        return np.clip(canvas.img, 0, 255).astype(np.uint8)

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` (a view into the pool, stamped): copy it if you keep it."""
        return stamp(self._pool[index % len(self._pool)], index)

    def expected(self, index: int) -> np.ndarray:
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
