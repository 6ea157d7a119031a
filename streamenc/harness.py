"""Benchmark harness (``streamenc bench``): what each recording pipeline costs here.

Three pipelines take the same camera-like frames, paced in real time at the camera fps:

- ``png``: LeRobot's default, PNGs written by an image-writer thread pool (4 threads
  per camera, unbounded queue), then read back and encoded at the end of the episode;
- ``stream``: LeRobot's ``streaming_encoding``, an encoder thread per camera in the
  record process behind a 30-frame queue, dropping a frame it cannot queue in 0.1 s;
- ``streamenc``: this package.

With lerobot installed and ``libsvtav1``, png and stream *are* LeRobot (a real
``LeRobotDataset``, and streamenc goes through ``streamenc.lerobot.install``);
otherwise they are models of it with the same behaviour. Every pipeline of a
configuration uses the same frames, codec settings and pacing, and runs in its own
process, so that CPU (that process and every child it reaped, imports excluded) and
memory (the process tree, sampled from the parent) are its own. Memory pressure is a
separate process that holds a share of the available RAM during the run, and
optionally an address-space limit (RLIMIT_AS) on the recording process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import queue
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

PIPELINES = ("png", "stream", "streamenc")
SIZES = {"240p": (240, 320), "480p": (480, 640), "720p": (720, 1280), "1080p": (1080, 1920)}
STREAM_QUEUE = 30  # LeRobot 0.4.4's encoder_queue_maxsize default
# the copy floor writes into this much memory in turn, so its destination is cold, as a ring
# slot is; it is in every pipeline's RSS alike
FLOOR_POOL_BYTES = 32 * 2**20
PNG_THREADS_PER_CAMERA = 4  # lerobot-record's num_image_writer_threads_per_camera default
CGROUP_ENV = "STREAMENC_BENCH_CGROUP_PROCS"  # a run's memory cgroup, joined by the run's process


@dataclass(frozen=True)
class Run:
    """One measured run: a pipeline on one configuration."""

    pipeline: str
    cameras: int = 2
    size: str = "480p"
    codec: str = "libsvtav1"
    pressure: float = 0.0  # share of available RAM held by another process during the run
    limit_as_mib: int | None = None  # RLIMIT_AS of the recording process
    memory_limit_mib: int | None = None  # a memory cgroup around the recording process tree
    seconds: float = 5.0
    episodes: int = 1
    fps: int = 30
    video: str | None = None  # frames from this file instead of synthetic ones
    # streamenc's encoder scheduling (EncoderConfig sched / nice / cpus); None: the default
    sched: str | None = None
    nice: int | None = None
    cpus: tuple[int, ...] | None = None

    @property
    def config(self) -> str:
        out = f"{self.cameras}x{self.size} {self.codec}"
        if self.sched:
            out += f" sched {self.sched}"
        if self.nice is not None:
            out += f" nice {self.nice}"
        if self.cpus:
            out += f" cpus {','.join(map(str, self.cpus))}"
        if self.pressure:
            out += f" pressure {self.pressure:.0%}"
        if self.limit_as_mib:
            out += f" AS<={self.limit_as_mib}MiB"
        if self.memory_limit_mib:
            out += f" cgroup<={self.memory_limit_mib}MiB"
        return out


# -- frames --------------------------------------------------------------------------------
class Source:
    """Camera frames: synthetic (stamped, camera-like) or decoded from a video file,
    resized to the run's size; a small pool per camera, reused in a loop."""

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
            from .synthetic import SyntheticCamera

            self.frame = SyntheticCamera(h, w, seed=camera).frame


# -- pipelines, in the recording (child) process ---------------------------------------------
class _Pipeline:
    """add() is what the record loop pays; end() is the end-of-episode wait."""

    files: list[Path]

    def start(self, episode: int) -> None: ...
    def add(self, frames: list[np.ndarray]) -> None: ...
    def end(self) -> None: ...
    def backlog(self) -> int:
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


def _encode(path: Path, frames, codec: str, fps: int, size: tuple[int, int]) -> int:
    """Encode an iterable of HWC uint8 frames with streamenc's settings for ``codec``."""
    import av

    from .codecs import EncoderConfig, codec_options

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
        for p in s.encode(None):
            c.mux(p)
    return n


def scheduling(run: Run) -> dict[str, Any]:
    """The run's EncoderConfig scheduling fields that differ from the default."""
    options = {"sched": run.sched, "nice": run.nice, "cpus": tuple(run.cpus) if run.cpus else None}
    return {k: v for k, v in options.items() if v is not None}


class _StreamencModel(_Pipeline):
    def __init__(self, run: Run, root: Path) -> None:
        from . import EncoderConfig, Recorder

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

    def close(self) -> None:
        self.rec.close()


class _StreamModel(_Pipeline):
    """LeRobot 0.4.4's StreamingVideoEncoder, reduced to its behaviour."""

    def __init__(self, run: Run, root: Path) -> None:
        self.run, self.root, self.files, self._dropped = run, root, [], 0

    def start(self, episode: int) -> None:
        self.queues = [queue.Queue(maxsize=STREAM_QUEUE) for _ in range(self.run.cameras)]
        paths = [self.root / f"ep{episode}-cam{i}.mp4" for i in range(self.run.cameras)]
        self.files += paths
        self.errors: list[BaseException] = []
        self.threads = [_worker(self._encode, self.errors, q, p) for q, p in zip(self.queues, paths, strict=True)]

    def _encode(self, q: queue.Queue, path: Path) -> None:
        frames = _until_none(q)
        try:
            _encode(path, frames, self.run.codec, self.run.fps, SIZES[self.run.size])
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

    def backlog(self) -> int:
        return sum(q.qsize() for q in self.queues)

    def dropped(self) -> int:
        return self._dropped


class _PngModel(_Pipeline):
    """LeRobot 0.4.4's AsyncImageWriter and its encode at save_episode, reduced."""

    def __init__(self, run: Run, root: Path) -> None:
        self.run, self.root, self.files = run, root, []
        self.q: queue.Queue = queue.Queue()  # unbounded, as AsyncImageWriter's
        self.errors: list[BaseException] = []
        self.threads = [_worker(self._write, self.errors) for _ in range(PNG_THREADS_PER_CAMERA * run.cameras)]

    def _write(self) -> None:
        from .png import encode_png

        while (item := self.q.get()) is not None:
            try:
                if not self.errors:  # after a failure, only drain
                    item[0].write_bytes(encode_png(item[1]))
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

            _encode(out, read(sorted(d.glob("frame-*.png"))), self.run.codec, self.run.fps, SIZES[self.run.size])
            shutil.rmtree(d)
            self.files.append(out)

    def backlog(self) -> int:
        return self.q.qsize()

    def close(self) -> None:
        for _ in self.threads:
            self.q.put(None)


class _LeRobot(_Pipeline):
    """The real LeRobotDataset: its PNG path, its streaming encoder, or streamenc installed."""

    def __init__(self, run: Run, root: Path) -> None:
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

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
            vcodec=run.codec,
            streaming_encoding=run.pipeline == "stream",
        )
        if run.pipeline == "streamenc":
            from . import lerobot

            lerobot.install(self.ds, **scheduling(run))
        self.files, self.state = [], np.zeros(6, np.float32)

    def add(self, frames: list[np.ndarray]) -> None:
        frame: dict[str, Any] = dict(zip(self.keys, frames, strict=True))
        frame["observation.state"], frame["task"] = self.state, "bench"
        self.ds.add_frame(frame)

    def end(self) -> None:
        self.ds.save_episode()

    def backlog(self) -> int:
        enc = self.ds._streaming_encoder
        if self.pipeline == "streamenc" and enc.recorder is not None:
            return sum(h.queued + h.spilled for h in enc.recorder.health().values())
        if self.pipeline == "stream" and enc is not None:
            return sum(q.qsize() for q in getattr(enc, "_frame_queues", {}).values())
        writer = self.ds.image_writer
        return writer.queue.qsize() if writer is not None else 0

    def dropped(self) -> int:
        enc = self.ds._streaming_encoder
        return sum(getattr(enc, "_dropped_frames", {}).values()) if self.pipeline == "stream" else 0

    def close(self) -> None:
        self.ds.finalize()


def uses_lerobot(run: Run) -> bool:
    """LeRobot itself when installed and the codec is one it encodes with our settings."""
    if run.codec != "libsvtav1":
        return False
    try:
        import importlib.metadata

        return importlib.metadata.version("lerobot").startswith("0.4.")
    except importlib.metadata.PackageNotFoundError:
        return False


def _make(run: Run, root: Path) -> _Pipeline:
    if uses_lerobot(run):
        return _LeRobot(run, root)
    return {"png": _PngModel, "stream": _StreamModel, "streamenc": _StreamencModel}[run.pipeline](run, root)


def _cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def record(run: Run, root: Path) -> dict:
    """The record loop of one run, in the child process."""
    from .synthetic import Pacer

    sources = [Source(run, i) for i in range(run.cameras)]
    if uses_lerobot(run):
        import lerobot.datasets.lerobot_dataset  # noqa: F401  (imports cost every pipeline the same)
    h, w = SIZES[run.size]
    pool = [np.ones((h, w, 3), np.uint8) for _ in range(max(2 * run.cameras, FLOOR_POOL_BYTES // (h * w * 3)))]
    if run.limit_as_mib:
        limit = run.limit_as_mib * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    cpu0 = _cpu()
    pipe = _make(run, root)
    n = int(round(run.seconds * run.fps))
    lat, floor, ends, missed, backlog, t0 = [], [], [], 0, [], time.monotonic()
    late, waiting = [], []  # per tick: the loop's wake-up lateness, and the frames waiting
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.5):
            with contextlib.suppress(Exception):
                backlog.append((round(time.monotonic() - t0, 2), pipe.backlog()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        for ep in range(run.episodes):
            pipe.start(ep)
            pacer = Pacer(run.fps)
            for i in range(n):
                frames = [s.frame(i) for s in sources]
                t = time.perf_counter()
                pipe.add(frames)
                t1 = time.perf_counter()
                # the floor: a bare copy of the same frames into cold memory, in the same loop
                for k, frame in enumerate(frames):
                    np.copyto(pool[(i * len(frames) + k) % len(pool)], frame)
                lat.append(t1 - t)
                floor.append(time.perf_counter() - t1)
                waiting.append(pipe.backlog())
                pacer.wait()
            missed += pacer.missed
            late += pacer.lateness
            t = time.perf_counter()
            pipe.end()
            ends.append(time.perf_counter() - t)
    finally:
        stop.set()
        sampler.join()
        pipe.close()
    return {
        "impl": "lerobot" if isinstance(pipe, _LeRobot) else "model",
        "latency_ms": [round(x * 1e3, 4) for x in lat],
        "floor_ms": [round(x * 1e3, 4) for x in floor],
        "late_ms": [round(x * 1e3, 4) for x in late],
        "waiting": waiting,
        "missed": missed,
        "end_s": ends,
        "sent": n * run.episodes * run.cameras,
        "dropped": pipe.dropped(),
        "cpu_s": _cpu() - cpu0,
        "backlog": backlog,
        "files": [str(f) for f in pipe.files],
    }


# -- the parent: one run in a child process, measured from outside ------------------------------
def _tree(pid: int):
    import psutil

    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def tree_memory(pid: int) -> tuple[int, int]:
    """(RSS, private) bytes of ``pid``'s process tree; private is RSS less the resident shared
    pages (files, shared memory). Read from /proc/<pid>/statm, which takes no lock of the
    process: reading smaps (USS, PSS) takes its memory-map lock and stalled a measured record
    loop for up to 1.3 s."""
    import psutil

    rss = private = 0
    for p in _tree(pid):
        with contextlib.suppress(psutil.Error):
            info = p.memory_info()
            rss, private = rss + info.rss, private + info.rss - info.shared
    return rss, private


def _memory(pid: int, scratch: Path) -> dict:
    rss, private = tree_memory(pid)
    shm = sum(f.stat().st_size for f in Path("/dev/shm").glob("*streamenc*") if f.is_file())
    disk = 0
    for f in scratch.rglob("*"):
        with contextlib.suppress(OSError):
            if f.suffix in (".png", ".spill"):
                disk += f.stat().st_size
    return {"rss": rss, "private": private, "shm": shm, "disk": disk}


class MemoryCgroup:
    """A memory cgroup (v2, or v1's memory controller) holding a run's process tree, as a
    container limit would: its rings, page cache and encoders are charged to it. It is
    made inside this process's own cgroup, so it stays under any limit already set on us.
    Needs a writable cgroup file system (root, or a delegated subtree)."""

    def __init__(self, limit_mib: int) -> None:
        own = {}  # controller (v1) or "" (v2) -> this process's cgroup path
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                own[c] = path.lstrip("/")
        v1 = Path("/sys/fs/cgroup/memory")
        if (v1 / "memory.limit_in_bytes").exists() and "memory" in own:
            base, limit_file = v1 / own["memory"], "memory.limit_in_bytes"
        elif Path("/sys/fs/cgroup/cgroup.controllers").exists() and "" in own:
            base, limit_file = Path("/sys/fs/cgroup") / own[""], "memory.max"
        else:
            raise OSError("no cgroup memory controller at /sys/fs/cgroup")
        self.path = base / f"streamenc-bench-{os.getpid()}-{time.monotonic_ns()}"
        try:
            self.path.mkdir()
            (self.path / limit_file).write_text(str(limit_mib * 2**20))
        except OSError as e:
            self.remove()
            raise OSError(f"cannot make a memory cgroup in {base} ({e.strerror}); run as root or drop the limit") from e
        self.procs = self.path / "cgroup.procs"

    def remove(self) -> None:
        """End whatever is left in the group (an OOM-killed recorder's orphaned encoders),
        by pid, then remove it: a cgroup with live members cannot be removed."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                pids = [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
            except OSError:
                return  # never made, or already gone
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                self.path.rmdir()
                return
            time.sleep(0.05)


def _hog(share: float) -> subprocess.Popen | None:
    """A process holding ``share`` of the available RAM (touched, so it is resident)."""
    if share <= 0:
        return None
    import psutil

    nbytes = int(psutil.virtual_memory().available * share)
    code = (
        "import sys, time, numpy as np\n"
        f"a = np.ones({nbytes}, np.uint8)\n"
        "sys.stdout.write('ready\\n'); sys.stdout.flush()\n"
        "time.sleep(3600)\n"
    )
    hog = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    hog.stdout.readline()
    return hog


def _frames_in(path: str) -> int:
    import av

    try:
        with av.open(path) as c:
            return sum(1 for _ in c.decode(video=0))
    except (av.error.FFmpegError, OSError):
        return 0


def _frames_back(result: dict, root: Path) -> int:
    """Frames decodable per episode, read back the way the pipeline's user reads them."""
    if result["impl"] != "lerobot":
        return sum(_frames_in(f) for f in result["files"])
    import av
    import pyarrow.parquet as pq

    ds = root / "dataset"
    rows = [r for f in sorted((ds / "meta" / "episodes").rglob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    total = 0
    for r in rows:
        for key in sorted({k.split("/")[1] for k in r if k.startswith("videos/")}):
            name = f"chunk-{r[f'videos/{key}/chunk_index']:03d}/file-{r[f'videos/{key}/file_index']:03d}.mp4"
            t0, t1 = r[f"videos/{key}/from_timestamp"], r[f"videos/{key}/to_timestamp"]
            with av.open(str(ds / "videos" / key / name)) as c:
                total += sum(1 for f in c.decode(video=0) if t0 - 1e-4 <= float(f.pts * f.time_base) < t1 - 1e-4)
    return total


def run_timeout(run: Run) -> float:
    """How long a run may take before it counts as hung: generous, since a PNG path encodes
    everything after the recording (about 80 s for 2 x 1080p x 5 s here)."""
    h, w = SIZES[run.size]
    return 300 + 30 * run.cameras * run.seconds * run.episodes * max(1.0, h * w / (480 * 640))


def _end_tree(child: subprocess.Popen) -> None:
    """Kill a run's process and everything it started (encoders run in sessions of their
    own, so they do not die with it), by pid, and reap it."""
    import psutil

    with contextlib.suppress(psutil.Error):
        procs = _tree(child.pid)
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(procs, timeout=10)
    child.wait()


def measure(run: Run, scratch: Path, timeout: float | None = None) -> dict:
    """Run ``run`` in a child process and return its JSON line (all fields). A run still
    going after ``timeout`` seconds (default ``run_timeout(run)``) is killed and fails."""
    from .ring import clean_stale

    root = Path(tempfile.mkdtemp(prefix=f"{run.pipeline}-", dir=scratch))
    out = root / "result.json"
    timeout = run_timeout(run) if timeout is None else timeout
    hog = _hog(run.pressure)
    cgroup = child = None
    timed_out = False
    timeline: list[dict] = []
    err = ""
    try:
        args = [sys.executable, "-m", "streamenc.harness", json.dumps(dataclasses.asdict(run)), str(root), str(out)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
        if run.memory_limit_mib:
            cgroup = MemoryCgroup(run.memory_limit_mib)
            env[CGROUP_ENV] = str(cgroup.procs)  # the child joins it first thing (no preexec_fn: we have threads)
        child = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        drain = threading.Thread(target=lambda: timeline.append(child.stderr.read()), daemon=True)
        drain.start()
        t0 = time.monotonic()
        samples = []
        while child.poll() is None:
            if time.monotonic() - t0 > timeout:
                timed_out = True
                _end_tree(child)
                break
            with contextlib.suppress(Exception):
                samples.append({"t": round(time.monotonic() - t0, 2), **_memory(child.pid, root)})
            time.sleep(1.0)
        drain.join(5)
        err = timeline[0] if timeline else ""
    finally:
        if child is not None and child.poll() is None:  # interrupted: the run ends with us
            _end_tree(child)
        if hog is not None:
            hog.kill()
            hog.wait()
        if cgroup is not None:
            cgroup.remove()
        clean_stale()  # the rings of a run that was killed (only segments whose owners are dead)
    line: dict[str, Any] = {**dataclasses.asdict(run), "config": run.config}
    if child.returncode != 0 or not out.exists():
        tail = [s for s in err.strip().splitlines() if s.strip()][-1:] or [f"exit code {child.returncode}"]
        if timed_out:
            tail = [f"timed out after {timeout:.0f} s: killed"]
        elif child.returncode == -signal.SIGKILL:
            tail = [f"killed (SIGKILL{', the cgroup OOM killer' if run.memory_limit_mib else ''})"]
        line.update(ok=False, error=tail[0][:300])
        shutil.rmtree(root, ignore_errors=True)
        return line
    result = json.loads(out.read_text())
    lat = np.array(result.pop("latency_ms")) if result["latency_ms"] else np.zeros(1)
    floor = np.array(result.pop("floor_ms")) if result["floor_ms"] else np.zeros(1)
    late = np.array(result.pop("late_ms")) if result["late_ms"] else np.zeros(1)
    waiting = result.pop("waiting") or [0]
    back = _frames_back(result, root)
    shutil.rmtree(root, ignore_errors=True)
    cores = len(os.sched_getaffinity(0))
    line.update(
        ok=True,
        impl=result["impl"],
        add_p50_ms=float(np.percentile(lat, 50)),
        add_p99_ms=float(np.percentile(lat, 99)),
        add_max_ms=float(lat.max()),
        copy_p50_ms=float(np.percentile(floor, 50)),
        copy_p99_ms=float(np.percentile(floor, 99)),
        missed=result["missed"],
        late_p50_ms=float(np.percentile(late, 50)),
        late_p99_ms=float(np.percentile(late, 99)),
        late_max_ms=float(late.max()),
        late_cdf=np.percentile(late, np.linspace(0, 100, 101)).round(4).tolist(),
        backlog_max=int(max(waiting)),
        backlog_at_stop=int(waiting[-1]),
        end_s=result["end_s"],
        cpu_s=result["cpu_s"],
        cpu_ms_per_frame=result["cpu_s"] * 1e3 / max(1, result["sent"]),
        # CPU per second recorded, as a share of the machine: what sustained recording costs
        cpu_share=result["cpu_s"] / (run.seconds * run.episodes * cores),
        peak_rss_mib=max((s["rss"] for s in samples), default=0) / 2**20,
        peak_private_mib=max((s["private"] for s in samples), default=0) / 2**20,
        peak_shm_mib=max((s["shm"] for s in samples), default=0) / 2**20,
        peak_disk_mib=max((s["disk"] for s in samples), default=0) / 2**20,
        sent=result["sent"],
        dropped=result["dropped"],
        back=back,
        lost=result["sent"] - back,
        latency_cdf=np.percentile(lat, np.linspace(0, 100, 101)).round(4).tolist(),
        memory=samples,
        backlog=result["backlog"],
    )
    return line


# -- sweeps -----------------------------------------------------------------------------------
def plan(
    quick: bool = False,
    pipelines: list[str] | None = None,
    cameras: list[int] | None = None,
    sizes: list[str] | None = None,
    codecs: list[str] | None = None,
    pressures: list[float] | None = None,
    **common: Any,
) -> list[Run]:
    """The runs of a sweep. Any axis given, or ``quick``: the product of the given axes,
    the others at 2 cameras, 480p, libsvtav1, no pressure (``quick``: 1 camera at 240p
    for 2 s). Otherwise the default sweep: cameras 1/2/4 at 480p, then 2 cameras at 720p
    and 1080p, with x264 (and NVENC where the probe opens it), and at 50% memory pressure."""
    pipelines = pipelines or list(PIPELINES)
    if quick:
        common = {"seconds": 2.0, "episodes": 1, **common}
    if quick or any(x is not None for x in (cameras, sizes, codecs, pressures)):
        configs = [
            {"cameras": c, "size": s, "codec": k, "pressure": p}
            for c in cameras or [1 if quick else 2]
            for s in sizes or ["240p" if quick else "480p"]
            for k in codecs or ["libsvtav1"]
            for p in pressures or [0.0]
        ]
    else:
        from .codecs import NVENC, probe

        nvenc = [r.name for r in probe() if r.usable and r.name in NVENC][:1]
        configs = [{"cameras": c} for c in (1, 2, 4)]
        configs += [{"size": s} for s in ("720p", "1080p")]
        configs += [{"codec": k} for k in ("libx264", *nvenc)]
        configs += [{"pressure": 0.5}]
    for cfg in configs:
        if cfg.get("size", "480p") not in SIZES:
            raise ValueError(f"unknown size {cfg['size']!r}; known: {', '.join(SIZES)}")
    return [Run(pipeline=p, **cfg, **common) for cfg in configs for p in pipelines]


def sweep(runs: list[Run], out: Path, progress: bool = True) -> list[dict]:
    """Measure every run; write results.jsonl, report.md and the plots into ``out``."""
    from tqdm import tqdm

    from . import report

    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / "results.jsonl"
    lines = []
    with tempfile.TemporaryDirectory(prefix="streamenc-bench-") as scratch, jsonl.open("w") as f:
        bar = tqdm(runs, unit="run", disable=not progress, dynamic_ncols=True)
        for run in bar:
            bar.set_description(f"{run.config} {run.pipeline}")
            line = measure(run, Path(scratch))
            f.write(json.dumps(line) + "\n")
            f.flush()
            lines.append(line)
    plots = report.plot(lines, out)
    (out / "report.md").write_text(report.markdown(lines, plots))
    return lines


def _child(argv: list[str]) -> int:
    """``python -m streamenc.harness RUN_JSON ROOT OUT``: one run's record loop."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if os.environ.get(CGROUP_ENV):  # before anything else, so all it starts is charged there too
        Path(os.environ[CGROUP_ENV]).write_text(str(os.getpid()))
    run = Run(**json.loads(argv[0]))
    result = record(run, Path(argv[1]))
    Path(argv[2]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
