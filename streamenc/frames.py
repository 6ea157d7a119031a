"""What a camera frame may look like, and how it is written into a ring slot.

``strict`` is the Recorder's own contract: HWC uint8 RGB, nothing else, so that a
mistake (CHW, floats) is a clear error rather than a silently wrong video.
``lenient`` is LeRobot's contract (``validate_frame`` plus its image writer): HWC or
CHW, uint8 or float in [0, 1], or a PIL image. It returns an HWC *view* of the
input, so the only pass over the pixels is ``write`` into the slot.
"""

from __future__ import annotations

import numpy as np

from .errors import FrameError

_FLOAT_CHUNK = 64 * 1024  # values per step of the float conversion: 256 KiB of float32


def strict(camera: str, frame: object, shape: tuple[int, int, int]) -> np.ndarray:
    """The frame itself if it is an HWC uint8 array of ``shape``; FrameError otherwise."""
    h, w, c = shape
    if not isinstance(frame, np.ndarray):
        raise FrameError(f"camera {camera}: frame must be a numpy array, got {type(frame).__name__}")
    if frame.shape == (c, h, w):
        raise FrameError(f"camera {camera}: frame is CHW {frame.shape}; pass HWC, e.g. frame.transpose(1, 2, 0)")
    if frame.shape != (h, w, c):
        raise FrameError(f"camera {camera}: frame shape {frame.shape}, expected HWC {(h, w, c)}")
    if frame.dtype != np.uint8:
        hint = " (float in [0, 1]? use (frame * 255).round().astype(np.uint8))" if frame.dtype.kind == "f" else ""
        raise FrameError(f"camera {camera}: frame dtype {frame.dtype}, expected uint8 RGB{hint}")
    return frame


def lenient(camera: str, frame: object, shape: tuple[int, int, int]) -> np.ndarray:
    """An HWC view of ``frame``: uint8, or floating point checked to lie in [0, 1].

    PIL images cost one copy more than arrays: PIL cannot write into foreign memory.
    """
    h, w, c = shape
    if is_pil(frame):
        if frame.size != (w, h):  # type: ignore[attr-defined]
            raise FrameError(f"camera {camera}: PIL image is {frame.size[0]}x{frame.size[1]}, expected {w}x{h}")  # type: ignore[attr-defined]
        img = frame if frame.mode == "RGB" else frame.convert("RGB")  # type: ignore[attr-defined]
        return np.asarray(img)
    if not isinstance(frame, np.ndarray):
        raise FrameError(f"camera {camera}: frame must be a numpy array or PIL image, got {type(frame).__name__}")
    if frame.shape == (c, h, w):
        frame = frame.transpose(1, 2, 0)
    elif frame.shape != (h, w, c):
        raise FrameError(f"camera {camera}: frame shape {frame.shape}, expected {(h, w, c)} or {(c, h, w)}")
    if frame.dtype == np.uint8:
        return frame
    if frame.dtype.kind != "f":
        raise FrameError(f"camera {camera}: frame dtype {frame.dtype}, expected uint8 or float in [0, 1]")
    lo, hi = float(frame.min()), float(frame.max())
    if not (lo >= 0.0 and hi <= 1.0):  # also catches NaN
        raise FrameError(f"camera {camera}: float frame has values in [{lo:g}, {hi:g}], expected [0, 1]")
    return frame


def write(dst: np.ndarray, src: np.ndarray) -> None:
    """Copy ``src`` (HWC, any strides) into the uint8 slot ``dst`` in one pass; a depth
    slot (uint16, float32) takes its frame as is, or float64 converted.

    Floats are scaled by 255 and rounded a few rows at a time through a small buffer
    that stays in cache. (LeRobot's image writer truncates, so 0.2 * 255 = 50.99.. gives 50.)
    """
    if src.dtype == np.uint8 or dst.dtype != np.uint8:
        np.copyto(dst, src, casting="same_kind")
        return
    rows = max(1, _FLOAT_CHUNK // (src.shape[1] * src.shape[2]))
    tmp = np.empty((min(rows, src.shape[0]), *src.shape[1:]), np.float32)
    for r in range(0, src.shape[0], rows):
        part = src[r : r + rows]
        t = tmp[: len(part)]
        np.multiply(part, 255.0, out=t)
        np.rint(t, out=t)
        np.copyto(dst[r : r + rows], t, casting="unsafe")


def as_uint8(src: np.ndarray) -> np.ndarray:
    """``src`` as a C-contiguous HWC uint8 array (copied only when it is not one)."""
    if src.dtype == np.uint8 and src.flags.c_contiguous:
        return src
    out = np.empty(src.shape, np.uint8)
    write(out, src)
    return out


def is_pil(obj: object) -> bool:
    mod = type(obj).__module__
    return mod.startswith("PIL.") and hasattr(obj, "convert") and hasattr(obj, "size")
