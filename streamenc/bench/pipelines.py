"""The recording pipelines a benchmark compares, as they run in the recording process.

- ``png``: LeRobot's default, PNGs written by an image-writer thread pool (4 threads
  per camera, unbounded queue), then read back and encoded at the end of the episode;
- ``stream``: LeRobot's ``streaming_encoding``, an encoder thread per camera in the
  record process behind a 30-frame queue, dropping a frame it cannot queue in 0.1 s;
- ``streamenc``: this package.

With lerobot 0.4.x installed and ``libsvtav1``, they *are* LeRobot (a real
``LeRobotDataset``, and streamenc goes through ``streamenc.lerobot.install``); otherwise
they are models of it with the same behaviour, which encode with streamenc's settings.
``add`` is what the record loop pays, ``end`` the end-of-episode wait.
"""

from __future__ import annotations

import queue
import shutil
import threading
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .runs import SIZES, Run, scheduling

STREAM_QUEUE = 30  # LeRobot 0.4.4's encoder_queue_maxsize default
PNG_THREADS_PER_CAMERA = 4  # lerobot-record's num_image_writer_threads_per_camera default


class Source:
    """Camera frames: synthetic (stamped; smooth gradients, or with ``content="scene"`` a
    rendered tabletop with a moving arm) or decoded from a video file, resized to the
    run's size; a small pool per camera, reused in a loop."""

    def __init__(self, run: Run, camera: int) -> None:
        h, w = SIZES[run.size]
        if run.video:
            import av

            pool = []
            with av.open(run.video) as c:
                for frame in c.decode(video=0):
                    pool.append(frame.to_ndarray(width=w, height=h, format="rgb24"))
                    if len(pool) == 30:
                        break
            if not pool:
                raise ValueError(f"{run.video}: no video frames")
            self.pool = [np.roll(f, 17 * camera, axis=1) for f in pool]  # cameras differ
            self.frame = lambda i: self.pool[i % len(self.pool)]
        else:
            from ..synthetic import SceneCamera, SyntheticCamera

            kind = SceneCamera if run.content == "scene" else SyntheticCamera
            self.frame = kind(h, w, seed=camera).frame


# -- pipelines, in the recording (child) process ---------------------------------------------
class Pipeline:
    """add() is what the record loop pays; end() is the end-of-episode wait."""

    files: list[Path]

    def start(self, episode: int) -> None: ...
    def add(self, frames: list[np.ndarray]) -> None: ...
    def end(self) -> None: ...
    def backlog(self) -> int:
        """Frames waiting to be encoded or written."""
        return 0

    def encoded(self) -> int:
        """Frames encoded (or, for png, written as PNGs) so far, all cameras."""
        return 0

    def dropped(self) -> int:
        return 0

    def close(self) -> None: ...


def _until_none(q: queue.Queue):
    """Items from ``q`` up to a None (by identity: ``iter(q.get, None)`` would compare
    arrays with ==)."""
    while (item := q.get()) is not None:
        yield item


def _worker(target, errors: list[BaseException], *args) -> threading.Thread:
    """A started daemon thread whose exception is kept in ``errors`` for the loop to raise."""

    def run() -> None:
        try:
            target(*args)
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def encode(path: Path, frames, codec: str, fps: int, size: tuple[int, int], count=None) -> int:
    """Encode an iterable of HWC uint8 frames with streamenc's settings for ``codec``, in
    this thread; ``count(1)`` after each frame."""
    import av

    from ..codecs import EncoderConfig, codec_options

    n = 0
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=fps)
        s.height, s.width, s.pix_fmt = size[0], size[1], "yuv420p"
        s.time_base = Fraction(1, fps)
        s.options = codec_options(EncoderConfig(vcodec=codec))
        for frame in frames:
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = n
            for p in s.encode(vf):
                c.mux(p)
            n += 1
            if count is not None:
                count(1)
        for p in s.encode(None):
            c.mux(p)
    return n


class _StreamencModel(Pipeline):
    def __init__(self, run: Run, root: Path) -> None:
        from .. import EncoderConfig, Recorder

        self.names = [f"cam{i}" for i in range(run.cameras)]
        shape = SIZES[run.size]
        config = EncoderConfig(vcodec=run.codec, **scheduling(run))
        self.rec = Recorder(root, run.fps, dict.fromkeys(self.names, shape), config)
        self.files = []

    def start(self, episode: int) -> None:
        self.rec.start_episode(episode)

    def add(self, frames: list[np.ndarray]) -> None:
        self.rec.add_frame(dict(zip(self.names, frames, strict=True)))

    def end(self) -> None:
        self.files += [v.path for v in self.rec.end_episode().values()]

    def backlog(self) -> int:
        return sum(h.queued + h.spilled for h in self.rec.health().values())

    def encoded(self) -> int:
        return sum(h.encoded for h in self.rec.health().values())

    def close(self) -> None:
        self.rec.close()


class _StreamModel(Pipeline):
    """LeRobot 0.4.4's StreamingVideoEncoder, reduced to its behaviour."""

    def __init__(self, run: Run, root: Path) -> None:
        self.run, self.root, self.files, self._dropped, self._encoded = run, root, [], 0, 0
        self._lock = threading.Lock()
        self.queues: list[queue.Queue] = []

    def start(self, episode: int) -> None:
        self.queues = [queue.Queue(maxsize=STREAM_QUEUE) for _ in range(self.run.cameras)]
        paths = [self.root / f"ep{episode}-cam{i}.mp4" for i in range(self.run.cameras)]
        self.files += paths
        self.errors: list[BaseException] = []
        self.threads = [_worker(self._encoder, self.errors, q, p) for q, p in zip(self.queues, paths, strict=True)]

    def _encoder(self, q: queue.Queue, path: Path) -> None:
        frames = _until_none(q)
        try:
            encode(path, frames, self.run.codec, self.run.fps, SIZES[self.run.size], self._count)
        finally:
            for _ in frames:  # failed: keep taking frames, so the loop never blocks on a dead thread
                pass

    def add(self, frames: list[np.ndarray]) -> None:
        for q, frame in zip(self.queues, frames, strict=True):
            try:
                q.put(frame.copy(), timeout=0.1)
            except queue.Full:
                self._dropped += 1

    def end(self) -> None:
        for q in self.queues:
            q.put(None)
        for t in self.threads:
            t.join()
        if self.errors:
            raise self.errors[0]

    def _count(self, n: int) -> None:
        with self._lock:  # one encoder thread per camera
            self._encoded += n

    def backlog(self) -> int:
        return sum(q.qsize() for q in self.queues)

    def encoded(self) -> int:
        return self._encoded

    def dropped(self) -> int:
        return self._dropped


class _PngModel(Pipeline):
    """LeRobot 0.4.4's AsyncImageWriter and its encode at save_episode, reduced."""

    def __init__(self, run: Run, root: Path) -> None:
        self.run, self.root, self.files, self.written = run, root, [], 0
        self._lock = threading.Lock()
        self.q: queue.Queue = queue.Queue()  # unbounded, as AsyncImageWriter's
        self.errors: list[BaseException] = []
        self.threads = [_worker(self._write, self.errors) for _ in range(PNG_THREADS_PER_CAMERA * run.cameras)]

    def _write(self) -> None:
        from ..png import encode_png

        while (item := self.q.get()) is not None:
            try:
                if not self.errors:  # after a failure, only drain
                    item[0].write_bytes(encode_png(item[1]))
                    with self._lock:  # many writer threads
                        self.written += 1
            except BaseException as e:
                self.errors.append(e)
            finally:
                self.q.task_done()
        self.q.task_done()

    def start(self, episode: int) -> None:
        self.dirs = [self.root / "images" / f"cam{i}" / f"episode-{episode:06d}" for i in range(self.run.cameras)]
        for d in self.dirs:
            d.mkdir(parents=True)
        self.index, self.episode = 0, episode

    def add(self, frames: list[np.ndarray]) -> None:
        for d, frame in zip(self.dirs, frames, strict=True):
            self.q.put((d / f"frame-{self.index:06d}.png", frame.copy()))
        self.index += 1

    def end(self) -> None:
        import av

        self.q.join()
        if self.errors:
            raise self.errors[0]
        for i, d in enumerate(self.dirs):
            out = self.root / f"ep{self.episode}-cam{i}.mp4"

            def read(files):
                for f in files:
                    with av.open(str(f)) as img:
                        yield next(img.decode(video=0)).to_ndarray(format="rgb24")

            encode(out, read(sorted(d.glob("frame-*.png"))), self.run.codec, self.run.fps, SIZES[self.run.size])
            shutil.rmtree(d)
            self.files.append(out)

    def backlog(self) -> int:
        return self.q.qsize()

    def encoded(self) -> int:
        return self.written

    def close(self) -> None:
        for _ in self.threads:
            self.q.put(None)


class LeRobotPipeline(Pipeline):
    """The real LeRobotDataset: its PNG path, its streaming encoder, or streamenc installed."""

    def __init__(self, run: Run, root: Path) -> None:
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        from .. import lerobot

        h, w = SIZES[run.size]
        feats = {
            f"observation.images.cam{i}": {
                "dtype": "video",
                "shape": (h, w, 3),
                "names": ["height", "width", "channels"],
            }
            for i in range(run.cameras)
        }
        feats["observation.state"] = {"dtype": "float32", "shape": (6,), "names": [f"j{i}" for i in range(6)]}
        self.keys = [k for k in feats if k.startswith("observation.images")]
        self.root, self.pipeline = root / "dataset", run.pipeline
        self.ds = LeRobotDataset.create(
            "bench/harness",
            run.fps,
            feats,
            root=self.root,
            image_writer_threads=PNG_THREADS_PER_CAMERA * run.cameras,
            streaming_encoding=run.pipeline == "stream",
            **lerobot.codec_kwargs(run.codec),
        )
        if run.pipeline == "streamenc":
            lerobot.install(self.ds, **scheduling(run))
        self.files, self.state = [], np.zeros(6, np.float32)

    def add(self, frames: list[np.ndarray]) -> None:
        frame: dict[str, Any] = dict(zip(self.keys, frames, strict=True))
        frame["observation.state"], frame["task"] = self.state, "bench"
        self.ds.add_frame(frame)

    def end(self) -> None:
        self.ds.save_episode()

    def backlog(self) -> int:
        from ..lerobot import encoder_of, image_writer_of

        enc = encoder_of(self.ds)
        if self.pipeline == "streamenc" and enc.recorder is not None:
            return sum(h.queued + h.spilled for h in enc.recorder.health().values())
        if self.pipeline == "stream" and enc is not None:
            return sum(q.qsize() for q in getattr(enc, "_frame_queues", {}).values())
        writer = image_writer_of(self.ds)
        return writer.queue.qsize() if writer is not None else 0

    def dropped(self) -> int:
        from ..lerobot import encoder_of

        enc = encoder_of(self.ds)
        return sum(getattr(enc, "_dropped_frames", {}).values()) if self.pipeline == "stream" else 0

    def close(self) -> None:
        self.ds.finalize()


def uses_lerobot(run: Run) -> bool:
    """LeRobot itself when installed and the codec is one it encodes with our settings."""
    if run.codec != "libsvtav1":
        return False
    try:
        import importlib.metadata

        from ..lerobot import SUPPORTED

        return importlib.metadata.version("lerobot").startswith(SUPPORTED)
    except importlib.metadata.PackageNotFoundError:
        return False


def make(run: Run, root: Path, model: bool = False) -> Pipeline:
    """The pipeline of ``run``: LeRobot itself where it can be (unless ``model``), else its model."""
    if uses_lerobot(run) and not model:
        return LeRobotPipeline(run, root)
    return {"png": _PngModel, "stream": _StreamModel, "streamenc": _StreamencModel}[run.pipeline](run, root)
