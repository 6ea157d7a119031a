"""The PNG fallback: LeRobot's image layout, written by a bounded thread pool.

A depth camera's frames are written as LeRobot 0.6 writes them: raw TIFFs (PIL mode
I;16 for uint16 millimetres, F for float32 metres), uncompressed, named frame-NNNNNN.tiff.

Used when asked (``png_fallback=True``) or when /dev/shm cannot hold the rings.
Unlike LeRobot's AsyncImageWriter, the queue is bounded (a full pool makes
add_frame wait instead of growing memory without limit) and a failed write is
raised at ``end_episode()``, never only printed.
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import av
import numpy as np

from .backend import CameraHealth, EpisodeVideo
from .camera import Camera
from .depth import DepthStats
from .errors import StreamencError, WriteError, disk_full_guard
from .frames import as_uint8
from .stats import EpisodeStats


def episode_dir(root: Path, camera: str, episode: int) -> Path:
    return Path(root) / "images" / camera / f"episode-{episode:06d}"


def frame_path(root: Path, camera: str, episode: int, index: int, suffix: str = ".png") -> Path:
    return episode_dir(root, camera, episode) / f"frame-{index:06d}{suffix}"


_local = threading.local()


def encode_png(frame: np.ndarray, level: int = 1) -> bytes:
    """PNG bytes of an HWC uint8 RGB frame. compression level 1, as LeRobot for video keys."""
    h, w = frame.shape[:2]
    ctx = getattr(_local, "ctx", None)
    if ctx is None or (ctx.width, ctx.height) != (w, h):
        ctx = av.CodecContext.create("png", "w")
        ctx.width, ctx.height, ctx.pix_fmt = w, h, "rgb24"
        ctx.options = {"compression_level": str(level)}
        _local.ctx = ctx
    packets = ctx.encode(av.VideoFrame.from_ndarray(frame, format="rgb24"))
    return b"".join(bytes(p) for p in packets)


def encode_tiff(frame: np.ndarray) -> bytes:
    """Raw TIFF bytes of an (H, W) uint16 or float32 depth frame, as LeRobot 0.6 saves one."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame)).save(buf, format="TIFF", compression="raw")
    return buf.getvalue()


def write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


class PngBackend:
    """The Recorder's PNG backend: each camera's frames as PNGs through a bounded pool, in
    LeRobot's layout; the first error is raised at the episode's end."""

    codec = "png"

    def __init__(self, root: Path, cameras: list[Camera], threads: int = 4, max_pending: int = 256) -> None:
        self.root = Path(root)
        self.cameras = {c.name: c for c in cameras}
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="streamenc-png")
        self._slots = threading.BoundedSemaphore(max_pending)
        self._lock = threading.Lock()
        self._pending: set[Future] = set()
        self._errors: list[BaseException] = []
        self._stats: dict[str, EpisodeStats | DepthStats] = {
            c.name: DepthStats(c.height, c.width, c.dtype) if c.is_depth else EpisodeStats(*c.shape) for c in cameras
        }
        self.written = dict.fromkeys(self.cameras, 0)
        self.write = write_file  # the one place a test injects a writer fault

    # -- the Backend interface ------------------------------------------------------------
    def existing(self, episode: int, videos: dict[str, Path]) -> list[Path]:
        dirs = [episode_dir(self.root, c, episode) for c in self.cameras]
        return [d for d in dirs if d.is_dir() and any(d.iterdir())]

    def start(self, episode: int, videos: dict[str, Path]) -> None:
        for camera in self.cameras:
            episode_dir(self.root, camera, episode).mkdir(parents=True, exist_ok=True)
            self._stats[camera].reset()
            self.written[camera] = 0

    def check(self, cameras) -> None:
        """Write errors are raised at the episode's end, with all of them counted."""

    def put(self, camera: str, frame: np.ndarray, ts: int, episode: int, index: int) -> None:
        """Queue one frame (any HWC view: it is copied now, the caller may reuse its buffer);
        waits when max_pending frames are already queued."""
        self._slots.acquire()
        cam = self.cameras[camera]
        if cam.is_depth:
            own = np.array(frame, dtype=cam.dtype)  # a copy; float64 -> float32
            path = frame_path(self.root, camera, episode, index, ".tiff")
        else:
            own = as_uint8(frame) if frame.dtype != np.uint8 or not frame.flags.c_contiguous else frame.copy()
            path = frame_path(self.root, camera, episode, index)
        fut = self._pool.submit(self._write_one, camera, path, own)
        with self._lock:
            self._pending.add(fut)
        fut.add_done_callback(self._done)

    def seal(self, episode: int) -> None:
        """Nothing to flush ahead: every frame is written as it comes."""

    def end(self, episode: int) -> dict[str, EpisodeVideo]:
        self.wait()
        return {
            cam: EpisodeVideo(
                episode_dir(self.root, cam, episode), self.written[cam], "png", self._stats[cam].lerobot()
            )
            for cam in self.cameras
        }

    def cancel(self, episode: int, sealed: bool) -> None:
        with contextlib.suppress(StreamencError):
            self.wait()
        for cam in self.cameras:
            remove_episode(self.root, cam, episode)

    def health(self) -> dict[str, CameraHealth]:
        with self._lock:
            queued = len(self._pending)
        return {c: CameraHealth(os.getpid(), queued, 0, self.written[c], 0, "png writer threads") for c in self.cameras}

    @property
    def dropped(self) -> dict[str, int]:
        return dict.fromkeys(self.cameras, 0)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    # -- the pool -------------------------------------------------------------------------
    def _write_one(self, camera: str, path: Path, frame: np.ndarray) -> None:
        data = encode_tiff(frame) if self.cameras[camera].is_depth else encode_png(frame)
        with disk_full_guard(path, len(data)):
            self.write(path, data)
        with self._lock:
            self._stats[camera].update(frame)
            self.written[camera] += 1

    def _done(self, fut: Future) -> None:
        with self._lock:
            self._pending.discard(fut)
            error = fut.exception()
            if error is not None:
                self._errors.append(error)
        self._slots.release()

    def wait(self) -> None:
        """Wait for every queued write; raise the first error (DiskFull for ENOSPC)."""
        with self._lock:
            pending = list(self._pending)
        for fut in pending:
            fut.exception()
        with self._lock:
            errors, self._errors = self._errors, []
        if errors:
            first = errors[0]
            if isinstance(first, StreamencError):
                raise first
            raise WriteError(
                getattr(first, "errno", None),
                f"{len(errors)} PNG write(s) failed; first: {type(first).__name__}: {first}",
            ) from first


def remove_episode(root: Path, camera: str, episode: int) -> None:
    d = episode_dir(root, camera, episode)
    if d.is_dir():
        for f in d.iterdir():
            f.unlink()
        d.rmdir()
    parent = d.parent
    if parent.is_dir() and not any(parent.iterdir()):
        os.rmdir(parent)
