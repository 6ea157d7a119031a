"""Benchmark harness (``streamenc bench``): what each recording pipeline costs here.

Every pipeline of a configuration (pipelines.py) uses the same frames, codec settings and
pacing, and runs in its own process, so that CPU (that process and every child it reaped,
imports excluded) and memory (the process tree, sampled from the parent) are its own.
Memory pressure is a separate process that holds a share of the available RAM during the
run, and optionally an address-space limit (RLIMIT_AS) or a memory cgroup on the run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from ..errors import StreamencError
from . import load
from .memory import CGROUP_ENV, MemoryCgroup, memory_hog, process_tree, snapshot
from .pipelines import LeRobotPipeline, Source, make, uses_lerobot
from .runs import SIZES, Run

# the copy floor writes into this much memory in turn, so its destination is cold, as a ring
# slot is; it is in every pipeline's RSS alike
FLOOR_POOL_BYTES = 32 * 2**20


def _cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def record(run: Run, root: Path) -> dict:
    """The record loop of one run, in the child process."""
    sources = [Source(run, i) for i in range(run.cameras)]
    if uses_lerobot(run):
        import lerobot.datasets.lerobot_dataset  # noqa: F401  (imports cost every pipeline the same)
    h, w = SIZES[run.size]
    pool = [np.ones((h, w, 3), np.uint8) for _ in range(max(2 * run.cameras, FLOOR_POOL_BYTES // (h * w * 3)))]
    # the competing load in this session (the rest: measure() starts it), before the
    # address-space limit, which is this process's own
    competing = load.start(run.busy_own, run.policy, own_session=True)
    try:
        if run.limit_as_mib:
            limit = run.limit_as_mib * 2**20
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        return _loop(run, root, sources, pool)
    finally:
        load.stop(competing)


def _loop(run: Run, root: Path, sources: list[Source], pool: list[np.ndarray]) -> dict:
    """The paced record loop itself, and what it measured (CPU: this process and the
    children it reaped, the recording's, not the competing load's, which is reaped later)."""
    from ..synthetic import Pacer

    cpu0 = _cpu()
    pipe: Any = make(run, root)
    n = int(round(run.seconds * run.fps))
    lat, floor, ends, missed, backlog, t0 = [], [], [], 0, [], time.monotonic()
    first: list[float] = []  # each episode's first add
    late, waiting = [], []  # per tick: the loop's wake-up lateness, and the frames waiting
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.5):
            try:
                backlog.append((round(time.monotonic() - t0, 2), pipe.backlog()))
            except StreamencError:  # the pipeline is closing: the timeline ends here
                return

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
                if i == 0:  # where a pipeline starts its episode: it must cost what any other frame does
                    first.append(t1 - t)
                floor.append(time.perf_counter() - t1)
                waiting.append(pipe.backlog())
                pacer.wait()
            for _ in range(int(round(run.reset_s * run.fps))):  # the reset period: the loop runs on
                waiting.append(pipe.backlog())
                pacer.wait()
            missed += pacer.missed
            late += pacer.lateness
            t = time.perf_counter()
            pipe.end()
            ends.append(time.perf_counter() - t)
        stop.set()
        sampler.join()
        dropped = pipe.dropped()
        t = time.perf_counter()
        closing, pipe = pipe, None
        closing.close()  # LeRobot's finalize()
        close_s = time.perf_counter() - t
        cpu_s = _cpu() - cpu0
    finally:
        stop.set()
        sampler.join()
        if pipe is not None:
            pipe.close()
    return {
        "impl": "lerobot" if isinstance(closing, LeRobotPipeline) else "model",
        "latency_ms": [round(x * 1e3, 4) for x in lat],
        "first_ms": [round(x * 1e3, 4) for x in first],
        "floor_ms": [round(x * 1e3, 4) for x in floor],
        "late_ms": [round(x * 1e3, 4) for x in late],
        "waiting": waiting,
        "missed": missed,
        "end_s": ends,
        "close_s": close_s,
        "sent": n * run.episodes * run.cameras,
        "dropped": dropped,
        "cpu_s": cpu_s,
        "backlog": backlog,
        "files": [str(f) for f in closing.files],
    }


# -- the parent: one run in a child process, measured from outside ------------------------------


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
    """Kill a run's process and everything it started (encoders run in process groups of
    their own and outlive their recorder to finish its episode), by pid, and reap it."""
    import psutil

    with contextlib.suppress(psutil.Error):
        procs = process_tree(child.pid)
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(procs, timeout=10)
    child.wait()


def measure(run: Run, scratch: Path, timeout: float | None = None) -> dict:
    """Run ``run`` in a child process and return its JSON line (all fields). A run still
    going after ``timeout`` seconds (default ``run_timeout(run)``) is killed and fails."""
    from ..segments import clean_stale

    root = Path(tempfile.mkdtemp(prefix=f"{run.pipeline}-", dir=scratch))
    out = root / "result.json"
    timeout = run_timeout(run) if timeout is None else timeout
    hog = memory_hog(run.pressure)
    competing = load.start(run.busy - run.busy_own, own_session=False)  # other programs, other sessions
    cgroup = child = None
    timed_out = False
    timeline: list[dict] = []
    err = ""
    try:
        args = [
            sys.executable,
            "-m",
            "streamenc.bench.harness",
            json.dumps(dataclasses.asdict(run)),
            str(root),
            str(out),
        ]
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
            with contextlib.suppress(psutil.NoSuchProcess):  # the run ended between poll() and here
                samples.append({"t": round(time.monotonic() - t0, 2), **snapshot(child.pid, root)})
            time.sleep(1.0)
        drain.join(5)
        err = timeline[0] if timeline else ""
    finally:
        if child is not None and child.poll() is None:  # interrupted: the run ends with us
            _end_tree(child)
        if hog is not None:
            hog.kill()
            hog.wait()
        load.stop(competing)
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
        first_add_ms=result["first_ms"],
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
        close_s=result["close_s"],
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
    """``python -m streamenc.bench.harness RUN_JSON ROOT OUT``: one run's record loop."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if os.environ.get(CGROUP_ENV):  # before anything else, so all it starts is charged there too
        Path(os.environ[CGROUP_ENV]).write_text(str(os.getpid()))
    run = Run(**json.loads(argv[0]))
    result = record(run, Path(argv[1]))
    Path(argv[2]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
