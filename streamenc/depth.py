"""Depth cameras: what one is, LeRobot 0.6's 12-bit quantizer, and depth statistics.

A depth camera's frames travel through its ring as they come, ``uint16`` millimetres or
``float32`` metres, so the record loop only copies them. Its encoder process quantizes
each frame to 12-bit codes 0..4095 exactly as LeRobot 0.6's ``quantize_depth`` does (the
same float32 operations in the same order, so the same codes bit for bit) and encodes
them as lossless gray12le HEVC, which LeRobot's reader decodes and dequantizes.

Non-finite input gets a defined code: NaN and -inf give 0 (the invalid-pixel value of
depth cameras, and what LeRobot's cast gives on x86); +inf gives 4095. Depth statistics
leave non-finite values out, so one NaN pixel does not make an episode's mean NaN.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError, FrameError
from .stats import QUANTILES, downsample_factor, sample_count

QMAX = 4095  # 12-bit codes
MM_PER_M = 1000.0
DTYPES = ("uint16", "float32")  # uint16: millimetres; float32: metres (LeRobot infers the unit so)


@dataclass(frozen=True)
class Depth:
    """A depth camera: frame size, the dtype its frames come in, and the quantizer's
    parameters (metres; LeRobot 0.6's defaults). ``dtype`` "uint16" means millimetres,
    "float32" metres, as LeRobot infers the unit from the dtype."""

    height: int
    width: int
    dtype: str = "uint16"
    depth_min: float = 0.01
    depth_max: float = 10.0
    shift: float = 3.5
    use_log: bool = True

    def __post_init__(self) -> None:
        try:
            dtype = str(np.dtype(self.dtype))
        except TypeError:
            dtype = ""
        if dtype not in DTYPES:
            raise ConfigError(f"depth dtype must be uint16 (millimetres) or float32 (metres), got {self.dtype!r}")
        object.__setattr__(self, "dtype", dtype)
        if not self.depth_max > self.depth_min:
            raise ConfigError(f"depth_max ({self.depth_max}) must be above depth_min ({self.depth_min})")
        if self.use_log and not self.depth_min + self.shift > 0:
            raise ConfigError(
                f"depth_min + shift must be positive for log quantization, got {self.depth_min + self.shift}"
            )

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def unit(self) -> str:
        """LeRobot's ``depth_unit``: "mm" for uint16 frames, "m" for float32."""
        return "mm" if self.dtype == "uint16" else "m"


class Quantizer:
    """LeRobot 0.6's ``quantize_depth`` for one camera, into preallocated buffers.

    Its operations, in its order and precision: the frame as float32; the parameters
    as float32 in the frame's unit; in log mode ``(log(d + shift) - log_min) /
    (log_max - log_min)`` with ``log_min``/``log_max`` in double precision; then
    ``rint(norm * 4095)`` clipped to 0..4095.
    """

    def __init__(self, spec: Depth) -> None:
        scale = 1.0 if spec.unit == "m" else MM_PER_M
        self.use_log = spec.use_log
        self.dmin = np.float32(spec.depth_min * scale)
        dmax = np.float32(spec.depth_max * scale)
        self.shift = np.float32(spec.shift * scale)
        self.lo: float | np.float32
        self.span: float | np.float32
        if spec.use_log:
            self.lo = math.log(float(self.dmin + self.shift))
            self.span = math.log(float(dmax + self.shift)) - self.lo
        else:
            self.lo, self.span = self.dmin, dmax - self.dmin
        self.buf = np.empty((spec.height, spec.width), np.float32)

    def __call__(self, depth: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """12-bit codes (uint16) of an (H, W) uint16 or float32 frame, into ``out`` if given."""
        b = self.buf
        np.copyto(b, depth, casting="unsafe")
        with np.errstate(invalid="ignore", divide="ignore"):
            if self.use_log:
                np.add(b, self.shift, out=b)
                np.log(b, out=b)
            np.subtract(b, self.lo, out=b)
            np.divide(b, self.span, out=b)
            np.multiply(b, np.float32(QMAX), out=b)
            np.rint(b, out=b)
            np.clip(b, 0, QMAX, out=b)
        np.nan_to_num(b, copy=False, nan=0.0)  # NaN, -inf (and depth <= -shift) -> 0
        if out is None:
            out = np.empty(b.shape, np.uint16)
        np.copyto(out, b, casting="unsafe")
        return out


def quantize(depth: np.ndarray, spec: Depth | None = None) -> np.ndarray:
    """12-bit codes of one (H, W) or (H, W, 1) depth frame, as LeRobot 0.6 computes them:
    the unit from the dtype (floats are metres), the parameters from ``spec``."""
    frame = depth.reshape(depth.shape[:2])
    spec = spec or Depth(*frame.shape)
    unit_dtype = "float32" if frame.dtype.kind == "f" else "uint16"
    return Quantizer(dataclasses.replace(spec, height=frame.shape[0], width=frame.shape[1], dtype=unit_dtype))(frame)


def view(camera: str, frame: object, spec: Depth) -> np.ndarray:
    """An (H, W) view of a depth frame for ``spec``'s ring; FrameError for what cannot be one.

    (H, W), (H, W, 1) and (1, H, W) are taken (LeRobot's layouts); float64 and float16
    frames go to a float32 camera converted (LeRobot quantizes float32 too). A uint16
    camera refuses floats and a float32 camera integers: the unit would silently change.
    """
    if not isinstance(frame, np.ndarray):
        raise FrameError(f"depth camera {camera}: frame must be a numpy array, got {type(frame).__name__}")
    h, w = spec.shape
    if frame.ndim == 3 and frame.shape in ((h, w, 1), (1, h, w)):
        frame = frame.reshape(h, w)
    elif frame.ndim == 3 and 3 in (frame.shape[0], frame.shape[2]):
        raise FrameError(
            f"depth camera {camera}: got a {frame.shape} frame with 3 channels; a depth frame is (H, W) or "
            f"(H, W, 1) = {(h, w, 1)} (an RGB frame sent to the depth camera?)"
        )
    if frame.shape != (h, w):
        raise FrameError(f"depth camera {camera}: frame shape {frame.shape}, expected {(h, w)} or {(h, w, 1)}")
    kind = frame.dtype.kind
    if spec.dtype == "uint16":
        if frame.dtype != np.uint16:
            hint = "; floats are metres: declare the camera with dtype='float32'" if kind == "f" else ""
            raise FrameError(f"depth camera {camera}: frame dtype {frame.dtype}, expected uint16 millimetres{hint}")
    elif kind != "f":
        hint = "; uint16 is millimetres: declare the camera with dtype='uint16'" if frame.dtype == np.uint16 else ""
        raise FrameError(f"depth camera {camera}: frame dtype {frame.dtype}, expected float32 metres{hint}")
    return frame


class DepthStats:
    """Per-episode statistics of depth frames in LeRobot 0.6's form for depth keys: one
    channel, in the frames' own unit (not divided by 255), over frames downsampled like
    LeRobot's. uint16 frames are counted in an exact 65536-bin histogram; float32 frames
    in a histogram of the top 20 bits of their float pattern (2^-13 relative width), with
    min, max, mean and std from exact sums. Non-finite values are left out."""

    BITS = 12  # float32 bits dropped: 20 kept (sign, exponent, 11 of the mantissa)

    def __init__(self, height: int, width: int, dtype: str) -> None:
        self.step = downsample_factor(height, width)
        self.exact = dtype == "uint16"
        self.bins = 65536 if self.exact else 1 << (31 - self.BITS)  # the sign bit is kept apart
        self.reset()

    def reset(self) -> None:
        self.pos = np.zeros(self.bins, np.int64)  # values >= 0 (all of them for uint16)
        self.neg = np.zeros(self.bins, np.int64)  # float values < 0, by magnitude
        self.total = self.sq = 0.0
        self.lo, self.hi = math.inf, -math.inf
        self.frames = 0

    def update(self, frame: np.ndarray) -> None:
        small = frame[:: self.step, :: self.step]
        self.frames += 1
        if self.exact:
            self.pos += np.bincount(small.ravel(), minlength=self.bins)
            return
        vals = small[np.isfinite(small)].astype(np.float32, copy=False).ravel()
        if not vals.size:
            return
        v64 = vals.astype(np.float64)
        self.total += float(v64.sum())
        self.sq += float(np.dot(v64, v64))
        self.lo, self.hi = min(self.lo, float(vals.min())), max(self.hi, float(vals.max()))
        neg = vals < 0
        if neg.any():
            self.neg += np.bincount((-vals[neg]).view(np.uint32) >> self.BITS, minlength=self.bins)
            vals = vals[~neg]
        self.pos += np.bincount(vals.view(np.uint32) >> self.BITS, minlength=self.bins)

    def raw(self) -> dict[str, np.ndarray] | None:
        """min, max, mean, std, count and quantiles, each of shape (1,); None before two
        frames (as LeRobot) or when no value was finite."""
        if self.frames < 2:
            return None
        if self.exact:
            levels = np.arange(self.bins, dtype=np.float64)
            n = int(self.pos.sum())
            mean = float((self.pos * levels).sum()) / n
            var = float((self.pos * levels**2).sum()) / n - mean**2
            nz = np.flatnonzero(self.pos)
            lo, hi = float(nz[0]), float(nz[-1])
        else:
            n = int(self.pos.sum() + self.neg.sum())
            if n == 0:
                return None
            mean = self.total / n
            var = self.sq / n - mean**2
            lo, hi = self.lo, self.hi
        out = {
            "min": np.array([lo]),
            "max": np.array([hi]),
            "mean": np.array([mean]),
            "std": np.array([math.sqrt(max(var, 0.0))]),
            "count": np.array([sample_count(self.frames)], np.int64),
        }
        for q in QUANTILES:
            out[f"q{int(q * 100):02d}"] = np.array([min(hi, max(lo, self._quantile(q, n)))])
        return out

    def _quantile(self, q: float, n: int) -> float:
        """np.quantile's default (linear) read off the histogram: exact for uint16, the
        bins' middles for float32."""
        counts = np.concatenate([self.neg[::-1], self.pos]) if not self.exact else self.pos
        cum = np.cumsum(counts)
        pos = q * (n - 1)
        lo = int(math.floor(pos))
        i_lo = int(np.searchsorted(cum, lo + 1))
        i_hi = int(np.searchsorted(cum, min(lo + 2, n)))
        v_lo, v_hi = self._value(i_lo), self._value(i_hi)
        return v_lo + (pos - lo) * (v_hi - v_lo)

    def _value(self, i: int) -> float:
        if self.exact:
            return float(i)
        sign = -1.0 if i < self.bins else 1.0
        b = self.bins - 1 - i if i < self.bins else i - self.bins
        if b == 0:  # zero (and denormals): depth cameras' "no return" value
            return 0.0
        edges = (np.array([b, b + 1], np.uint32) << self.BITS).view(np.float32)
        return sign * float(edges.astype(np.float64).mean())

    def lerobot(self) -> dict[str, np.ndarray] | None:
        """As LeRobot keeps a depth key's stats: its unit, shape (1, 1, 1)."""
        raw = self.raw()
        if raw is None:
            return None
        return {k: v if k == "count" else v.reshape(1, 1, 1) for k, v in raw.items()}
