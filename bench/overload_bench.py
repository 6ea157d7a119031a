"""Overload timeline: more cameras than the machine can encode in real time.

Three pipelines (the benchmark harness's own, streamenc.bench.pipelines, as models so
that the comparison needs no lerobot) take the same synthetic 480p frames, paced at
30 fps, for --seconds:

- ``streamenc``: Recorder, default overflow="spill";
- ``stream``: LeRobot-style in-process encoding, a thread and a 30-frame queue per
  camera; a frame that does not fit within 0.1 s is dropped (LeRobot 0.4.4's behaviour);
- ``png``: LeRobot-style AsyncImageWriter, PNG-writing threads fed by an unbounded queue,
  then the PNGs encoded at the end.

Every 0.5 s it samples frames accepted, encoded and waiting, and (from a separate process,
so the record loop is not disturbed) RSS and private memory of the whole process tree,
/dev/shm bytes and temporary disk bytes, and keeps sampling after the stop until the
backlog is drained. It also measures offline conversion (overflow="block") throughput
against a single-process PyAV encode of the same frames.

    python bench/overload_bench.py [--cameras 4] [--seconds 60] [--out bench/out]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from streamenc import Recorder
from streamenc.bench.memory import snapshot
from streamenc.bench.pipelines import Source, encode, make
from streamenc.bench.runs import SIZES, Run
from streamenc.synthetic import Pacer
from streamenc.verify import check

SIZE = SIZES["480p"]
FPS = 30
SAMPLE_S = 0.5


def sample_memory(root_pid: int, tmp: str, t0: float, conn) -> None:
    """In its own process: the memory of root_pid's tree (this sampler left out), /dev/shm
    and temp disk, at once and then every SAMPLE_S until told to stop."""
    while True:
        conn.send({"t": round(time.monotonic() - t0, 2), **snapshot(root_pid, Path(tmp), skip=os.getpid())})
        if conn.poll(SAMPLE_S):
            return


class Sampler(threading.Thread):
    """Samples a pipeline's counters every SAMPLE_S (cheap, in this process) and, through a
    separate process, the memory and disk of the whole process tree."""

    def __init__(self, counters, tmp: Path) -> None:
        super().__init__(daemon=True)
        self.counters, self.rows, self.memory, self.stop_at = counters, [], [], None
        self._halt = threading.Event()
        self.t0 = time.monotonic()
        self._conn, child = mp.Pipe()
        self._mem = mp.get_context("spawn").Process(target=sample_memory, args=(os.getpid(), str(tmp), self.t0, child))
        self._mem.start()
        if self._conn.poll(60):  # its first sample, before the pipeline under test loads the CPU
            self.memory.append(self._conn.recv())

    def _drain(self) -> None:
        try:
            while self._conn.poll():
                self.memory.append(self._conn.recv())
        except (EOFError, OSError):
            pass

    def run(self) -> None:
        while not self._halt.is_set():
            row = {"t": round(time.monotonic() - self.t0, 2)}
            row.update(self.counters())
            self.rows.append(row)
            self._drain()
            self._halt.wait(SAMPLE_S)

    def halt(self) -> list[dict]:
        self._halt.set()
        self.join()
        self._conn.send("stop")
        self._mem.join(10)
        self._drain()
        memory = self.memory
        for row in self.rows:  # pair each counters row with the memory sample nearest in time
            near = min(memory, key=lambda m: abs(m["t"] - row["t"])) if memory else {}
            row.update({k: near.get(k, 0) for k in ("rss", "private", "shm", "disk")})
        return self.rows


def run_pipeline(name: str, cameras: int, seconds: float, tmp: Path) -> dict:
    """One pipeline under the overload, timed and sampled; its frames read back after."""
    run = Run(name, cameras, "480p", seconds=seconds, fps=FPS)
    sources = [Source(run, i) for i in range(cameras)]
    pipe = make(run, tmp, model=True)
    n, accepted = int(seconds * FPS), [0]
    sampler = Sampler(
        lambda: {
            "accepted": accepted[0],
            "encoded": pipe.encoded(),
            "waiting": pipe.backlog(),
            "dropped": pipe.dropped(),
        },
        tmp,
    )
    sampler.start()
    try:
        pipe.start(0)
        lat = np.empty(n)
        pacer = Pacer(FPS)
        for i in range(n):
            frames = [s.frame(i) for s in sources]
            t0 = time.perf_counter()
            pipe.add(frames)
            lat[i] = (time.perf_counter() - t0) * 1e3
            accepted[0] += cameras
            pacer.wait()
        sampler.stop_at = time.monotonic() - sampler.t0
        pipe.end()
        rows = sampler.halt()
        dropped = pipe.dropped()
    finally:
        pipe.close()
    back = sum(check(f).frames for f in pipe.files)
    return summary(name, rows, sampler.stop_at, lat, n * cameras, back, dropped)


def summary(name, rows, stop_at, lat, sent, back, dropped) -> dict:
    during = [r for r in rows if r["t"] <= stop_at] or rows
    return {
        "pipeline": name,
        "sent": sent,
        "read_back": back,
        "dropped": dropped,
        "lost": sent - back,
        "add_p99_ms": float(np.percentile(lat, 99)),
        "add_max_ms": float(lat.max()),
        "rss_first_10s_mib": max(r["rss"] for r in during if r["t"] <= 10) / 2**20,
        "rss_peak_mib": max(r["rss"] for r in rows) / 2**20,
        "private_peak_mib": max(r["private"] for r in rows) / 2**20,
        "disk_peak_mib": max(r["disk"] for r in rows) / 2**20,
        "shm_peak_mib": max(r["shm"] for r in rows) / 2**20,
        "stop_s": round(stop_at, 1),
        "drained_s": round(rows[-1]["t"] - stop_at, 1),
        "timeline": rows,
    }


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    for r in results:
        t = [x["t"] for x in r["timeline"]]
        (line,) = axes[0].plot(t, [x["encoded"] for x in r["timeline"]], label=f"{r['pipeline']} encoded")
        axes[0].plot(
            t,
            [x["accepted"] - x["dropped"] for x in r["timeline"]],
            ls=":",
            color=line.get_color(),
            label=f"{r['pipeline']} accepted (minus dropped)",
        )
        axes[1].plot(t, [x["rss"] / 2**20 for x in r["timeline"]], color=line.get_color(), label=r["pipeline"])
        axes[2].plot(
            t, [(x["disk"] + x["shm"]) / 2**20 for x in r["timeline"]], color=line.get_color(), label=r["pipeline"]
        )
        for ax in axes:
            ax.axvline(r["stop_s"], color=line.get_color(), ls="--", lw=0.8)
    axes[0].set_ylabel("frames (all cameras)")
    axes[1].set_ylabel("RSS, process tree (MiB)")
    axes[2].set_ylabel("temp disk + /dev/shm (MiB)")
    axes[2].set_xlabel("seconds (dashed: recording stops)")
    for ax in axes:
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)
    fig.suptitle("overload: more 480p @ 30 fps cameras than this machine encodes in real time; same frames for all")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def offline(cameras: int, frames: int) -> dict:
    """overflow="block" conversion throughput against one process encoding the same frames."""
    run = Run("streamenc", cameras, "480p", fps=FPS)
    sources = [Source(run, i) for i in range(cameras)]
    names = [f"c{k}" for k in range(cameras)]
    tmp = Path(tempfile.mkdtemp(prefix="streamenc-offline-"))
    try:
        t0 = time.perf_counter()
        with Recorder(tmp, fps=FPS, cameras=dict.fromkeys(names, SIZE), overflow="block") as rec:
            t1 = time.perf_counter()
            rec.start_episode()
            for i in range(frames):
                rec.add_frame({k: s.frame(i) for k, s in zip(names, sources, strict=True)})
            videos = rec.end_episode()
        ours = time.perf_counter() - t1
        assert all(check(v.path).in_order(frames) for v in videos.values())
        t2 = time.perf_counter()
        for k, s in zip(names, sources, strict=True):
            encode(tmp / f"{k}-single.mp4", (s.frame(i) for i in range(frames)), "libsvtav1", FPS, SIZE)
        single = time.perf_counter() - t2
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total = frames * cameras
    return {
        "cameras": cameras,
        "frames": total,
        "streamenc_fps": total / ours,
        "single_process_fps": total / single,
        "ratio": single / ours,
        "startup_s": t1 - t0,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--pipelines", default="streamenc,stream,png")
    ap.add_argument("--offline-frames", type=int, default=300)
    ap.add_argument("--out", type=Path, default=Path("bench/out"))
    ap.add_argument("--plot", type=Path, default=Path("docs/img/overload.png"))
    ap.add_argument("--from-json", type=Path, default=None, help="re-plot and re-tabulate a saved run")
    args = ap.parse_args(argv)
    results = json.loads(args.from_json.read_text()) if args.from_json else []
    for name in [] if args.from_json else args.pipelines.split(","):
        tmp = Path(tempfile.mkdtemp(prefix=f"streamenc-overload-{name}-"))
        try:
            results.append(run_pipeline(name, args.cameras, args.seconds, tmp))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        r = {k: v for k, v in results[-1].items() if k != "timeline"}
        print(json.dumps(r), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.from_json:
        (args.out / "overload.json").write_text(json.dumps(results))
    plot(results, args.plot)
    print(f"\n{args.cameras} cameras 640x480 @ {FPS} fps for {args.seconds:g} s, paced\n")
    print(
        "| pipeline | frames sent | read back | dropped | lost | add_frame p99 / max (ms) | RSS first 10 s / peak "
        "(MiB) | private peak (MiB) | temp disk peak (MiB) | /dev/shm peak (MiB) | drain after stop (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['pipeline']} | {r['sent']} | {r['read_back']} | {r['dropped']} | {r['lost']} | "
            f"{r['add_p99_ms']:.2f} / {r['add_max_ms']:.1f} | {r['rss_first_10s_mib']:.0f} / {r['rss_peak_mib']:.0f} | "
            f"{r['private_peak_mib']:.0f} | {r['disk_peak_mib']:.0f} | {r['shm_peak_mib']:.0f} | {r['drained_s']} |"
        )
    if args.offline_frames:
        print("\n| cameras | frames | streamenc block (fps) | one process, PyAV (fps) | speed-up |")
        print("|---|---|---|---|---|")
        for k in (1, 2, 4):
            o = offline(k, args.offline_frames)
            print(
                f"| {k} | {o['frames']} | {o['streamenc_fps']:.1f} | {o['single_process_fps']:.1f} | "
                f"{o['ratio']:.2f}x |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
