"""LeRobot record-loop benchmark: LeRobot's two paths and streamenc, through the real
LeRobotDataset, in one run, on the same frames.

- ``png``: LeRobot's default. AsyncImageWriter PNGs (4 threads per camera, as
  lerobot-record starts it), then save_episode reads them back and encodes them;
- ``stream``: ``streaming_encoding=True``, LeRobot's in-process encoder threads;
- ``streamenc``: the same dataset as ``png`` with ``streamenc.lerobot.install``.

All three use libsvtav1 with LeRobot's settings (g=2, crf=30, preset 12). Each runs in
its own process, paced at the camera fps. CPU is that process's and every child's it
reaped, from dataset creation to finalize() (the imports, the same for all, excluded);
memory is the RSS of its process tree, sampled from here every 0.5 s.
The videos are then decoded here and their frames counted per episode.

    python bench/lerobot_bench.py [--cameras 2 4] [--seconds 10] [--episodes 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

PIPELINES = ("png", "stream", "streamenc")
FPS, H, W = 30, 480, 640
REPO = "bench/lerobot"


def _features(cameras: int) -> dict:
    feats = {
        f"observation.images.cam{i}": {"dtype": "video", "shape": (H, W, 3), "names": ["height", "width", "channels"]}
        for i in range(cameras)
    }
    feats["observation.state"] = {"dtype": "float32", "shape": (6,), "names": [f"j{i}" for i in range(6)]}
    return feats


def record(pipeline: str, cameras: int, seconds: float, episodes: int, root: Path) -> dict:
    """One pipeline's record loop, in this (child) process."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from streamenc.synthetic import Pacer, SyntheticCamera

    cpu0 = _cpu()  # after the imports, which cost every pipeline the same
    feats = _features(cameras)
    keys = [k for k in feats if feats[k]["dtype"] == "video"]
    ds = LeRobotDataset.create(
        REPO,
        FPS,
        feats,
        root=root,
        image_writer_threads=4 * cameras,
        vcodec="libsvtav1",
        streaming_encoding=pipeline == "stream",
    )
    if pipeline == "streamenc":
        import streamenc.lerobot

        streamenc.lerobot.install(ds)
    cams = {k: SyntheticCamera(H, W, seed=i) for i, k in enumerate(keys)}
    n = int(round(seconds * FPS))
    add, saves, missed = [], [], 0
    for _ in range(episodes):
        pacer = Pacer(FPS)
        for i in range(n):
            frame = {k: c.frame(i) for k, c in cams.items()}
            frame["observation.state"] = np.full(6, i, np.float32)
            frame["task"] = "bench"
            t0 = time.perf_counter()
            ds.add_frame(frame)
            add.append(time.perf_counter() - t0)
            pacer.wait()
        missed += pacer.missed
        t0 = time.perf_counter()
        ds.save_episode()
        saves.append(time.perf_counter() - t0)
    ds.finalize()  # streamenc's encoder processes end and are reaped here
    cpu = _cpu() - cpu0
    lat = np.array(add) * 1e3
    return {
        "add_p50_ms": float(np.percentile(lat, 50)),
        "add_p99_ms": float(np.percentile(lat, 99)),
        "add_max_ms": float(lat.max()),
        "missed": missed,
        "save_s": saves,
        "sent": n * episodes * cameras,
        "cpu_s": cpu,
    }


def _cpu() -> float:
    """CPU seconds of this process and every child it has reaped."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def frames_back(root: Path) -> int:
    """Frames decodable inside each episode's [from, to) window, as LeRobot locates them."""
    import av
    import pyarrow.parquet as pq

    rows = []
    for f in sorted((root / "meta" / "episodes").rglob("*.parquet")):
        rows += pq.read_table(f).to_pylist()
    keys = sorted({k.split("/")[1] for r in rows for k in r if k.startswith("videos/")})
    total = 0
    for key in keys:
        for r in rows:
            path = root / "videos" / key / f"chunk-{r[f'videos/{key}/chunk_index']:03d}"
            path = path / f"file-{r[f'videos/{key}/file_index']:03d}.mp4"
            t0, t1 = r[f"videos/{key}/from_timestamp"], r[f"videos/{key}/to_timestamp"]
            with av.open(str(path)) as c:
                for fr in c.decode(video=0):
                    if t0 - 1e-4 <= float(fr.pts * fr.time_base) < t1 - 1e-4:
                        total += 1
    return total


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run(pipeline: str, cameras: int, seconds: float, episodes: int, scratch: Path) -> dict:
    """Run one pipeline in a child process; measure its tree's CPU and peak RSS from here."""
    root, out = scratch / f"{pipeline}-{cameras}", scratch / f"{pipeline}-{cameras}.json"
    args = [sys.executable, __file__, "--one", pipeline, "--cameras", str(cameras), "--seconds", str(seconds)]
    args += ["--episodes", str(episodes), "--root", str(root), "--json", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    child = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    proc, peak = psutil.Process(child.pid), 0
    while child.poll() is None:
        peak = max(peak, tree_rss(proc))
        time.sleep(0.5)
    err = child.stderr.read()
    if child.returncode != 0:
        raise SystemExit(f"{pipeline} with {cameras} cameras failed:\n{err[-3000:]}")
    result = json.loads(out.read_text())
    result.update(
        pipeline=pipeline,
        cameras=cameras,
        peak_rss_mib=peak / 2**20,
        back=frames_back(root),
    )
    return result


def table(rows: list[dict]) -> str:
    lines = [
        "| cameras | path | add_frame p50 / p99 / max ms | missed | save_episode s | CPU s (× png) | "
        "peak RSS MiB | frames back |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = next(b for b in rows if b["cameras"] == r["cameras"] and b["pipeline"] == "png")
        saves = " / ".join(f"{s:.2f}" for s in r["save_s"])
        lines.append(
            f"| {r['cameras']} | {r['pipeline']} | {r['add_p50_ms']:.3f} / {r['add_p99_ms']:.3f} / "
            f"{r['add_max_ms']:.1f} | {r['missed']} | {saves} | {r['cpu_s']:.0f} ({r['cpu_s'] / base['cpu_s']:.2f}) | "
            f"{r['peak_rss_mib']:.0f} | {r['back']}/{r['sent']} |"
        )
    return "\n".join(lines)


def verdicts(rows: list[dict]) -> list[str]:
    out = []
    for cams in sorted({r["cameras"] for r in rows}):
        by = {r["pipeline"]: r for r in rows if r["cameras"] == cams}
        if not {"png", "streamenc"} <= set(by):
            continue
        se, png = by["streamenc"], by["png"]
        line = f"{cams} cameras: save_episode {np.mean(png['save_s']) / np.mean(se['save_s']):.0f}x faster than png"
        if "stream" in by:
            line += f", {np.mean(by['stream']['save_s']) / np.mean(se['save_s']):.1f}x faster than stream"
        line += f"; CPU {se['cpu_s'] / png['cpu_s']:.2f}x png; frames lost {se['sent'] - se['back']}"
        out.append(line)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cameras", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--episodes", type=int, default=2)
    ap.add_argument("--pipelines", default=",".join(PIPELINES))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--one", choices=PIPELINES, help=argparse.SUPPRESS)
    ap.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        result = record(args.one, args.cameras[0], args.seconds, args.episodes, args.root)
        args.json.write_text(json.dumps(result))
        return 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="lerobot-bench-") as tmp:
        for cams in args.cameras:
            for pipeline in args.pipelines.split(","):
                print(f"{pipeline}, {cams} cameras ...", flush=True)
                rows.append(run(pipeline, cams, args.seconds, args.episodes, Path(tmp)))
    print(table(rows))
    for line in verdicts(rows):
        print(line)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
