"""save_episode across a long session, and random access to the chunk files it leaves.

Part 1 (``--episodes``, default 100 of 10 s, 2 cameras at 480p@30, paced): LeRobot's
stream encoder and streamenc, each in a fresh process, through the installed lerobot's
LeRobotDataset. Per episode: save_episode's time; for streamenc also what of it is ours
(waiting for the encoders in finish_episode, and the chunk append) and what is LeRobot's
own (parquet, metadata, stats). Plotted against the episode index.

Part 2: the streamenc dataset against a copy whose chunk files LeRobot's own
``concatenate_video_files`` rewrote (faststart, what LeRobot's save path leaves): time to
open a chunk file (torchcodec, PyAV) and 500 random ``dataset[i]`` reads with each video
backend, as ratios in the same run.

    python bench/chunk_bench.py [--episodes 100] [--seconds 10] [--out bench/out/chunks]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

H, W, FPS = 480, 640, 30
KEYS = ("observation.images.front", "observation.images.wrist")


def features() -> dict:
    feats = {k: {"dtype": "video", "shape": (H, W, 3), "names": ["height", "width", "channels"]} for k in KEYS}
    feats["observation.state"] = {"dtype": "float32", "shape": (2,), "names": None}
    return feats


def record(pipeline: str, episodes: int, seconds: float, root: Path) -> list[dict]:
    """One pipeline's session in this process: per episode, save_episode and its parts."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    import streamenc.lerobot as sl
    from streamenc import chunks
    from streamenc.synthetic import Pacer, SyntheticCamera

    spent = {"append": 0.0, "finish": 0.0}

    def timed(name, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[name] += time.perf_counter() - t

        return wrapper

    chunks.append = timed("append", chunks.append)
    sl.StreamencVideoEncoder.finish_episode = timed("finish", sl.StreamencVideoEncoder.finish_episode)
    cams = [SyntheticCamera(H, W, seed=k) for k in range(len(KEYS))]
    ds = LeRobotDataset.create(
        "bench/chunks", FPS, features(), root=root, streaming_encoding=True, **sl.codec_kwargs("libsvtav1")
    )
    if pipeline == "streamenc":
        sl.install(ds)
    n = int(round(seconds * FPS))
    out = []
    for ep in range(episodes):
        pacer = Pacer(FPS)
        for i in range(n):
            frame = {k: c.frame(ep * n + i) for k, c in zip(KEYS, cams, strict=True)}
            frame["observation.state"] = np.array([ep, i], np.float32)
            frame["task"] = "bench"
            ds.add_frame(frame)
            pacer.wait()
        spent.update(append=0.0, finish=0.0)
        t = time.perf_counter()
        ds.save_episode()
        save = time.perf_counter() - t
        out.append({"pipeline": pipeline, "episode": ep, "save_s": save, "missed": pacer.missed, **spent})
        print(json.dumps(out[-1]), flush=True)
    ds.finalize()
    return out


def faststart_copy(root: Path, dst: Path) -> None:
    """The dataset with each chunk file rewritten by LeRobot's own concatenate_video_files."""
    from lerobot.datasets.video_utils import concatenate_video_files

    shutil.copytree(root, dst)
    for f in sorted((dst / "videos").rglob("*.mp4")):
        concatenate_video_files([f], f)


def access(root: Path, reads: int = 500) -> dict:
    """Seconds to open a chunk file and for ``reads`` random dataset[i], per backend."""
    import av
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from torchcodec.decoders import VideoDecoder

    f = sorted((root / "videos").rglob("*.mp4"))[0]
    out = {}
    t = time.perf_counter()
    for _ in range(20):
        VideoDecoder(str(f), seek_mode="approximate")
    out["open_torchcodec_ms"] = (time.perf_counter() - t) / 20 * 1e3
    t = time.perf_counter()
    for _ in range(20):
        with av.open(str(f)) as c:
            c.streams.video[0].duration  # noqa: B018
    out["open_pyav_ms"] = (time.perf_counter() - t) / 20 * 1e3
    for backend in ("torchcodec", "pyav"):
        ds = LeRobotDataset("bench/chunks", root=root, video_backend=backend)
        idx = random.Random(0).sample(range(len(ds)), min(reads, len(ds)))
        ds[idx[0]]
        t = time.perf_counter()
        for i in idx:
            ds[i]
        out[f"reads_{backend}_s"] = time.perf_counter() - t
    return out


def plot(lines: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for p in ("stream", "streamenc"):
        rows = [r for r in lines if r["pipeline"] == p]
        ax.plot([r["episode"] for r in rows], [r["save_s"] for r in rows], ".-", label=f"{p}: save_episode")
        if p == "streamenc":
            ax.plot([r["episode"] for r in rows], [r["append"] for r in rows], ".", label="streamenc: its appends")
    ax.set_xlabel("episode")
    ax.set_ylabel("seconds")
    ax.set_title("save_episode over a session (2 cameras 480p@30, 10 s episodes)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--out", type=Path, default=Path("bench/out/chunks"))
    ap.add_argument("--one", choices=("stream", "streamenc"), help=argparse.SUPPRESS)
    ap.add_argument("--access", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--faststart", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.faststart:
        faststart_copy(*args.faststart)
        return 0
    if args.one:
        record(args.one, args.episodes, args.seconds, args.out / args.one)
        return 0
    if args.access:
        print(json.dumps(access(args.access)))
        return 0
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    lines = []
    for p in ("stream", "streamenc"):
        cmd = [sys.executable, __file__, "--one", p, "--episodes", str(args.episodes), "--seconds", str(args.seconds)]
        done = subprocess.run([*cmd, "--out", str(args.out)], capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{p} failed:\n{done.stderr[-3000:]}")
        lines += [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    (args.out / "saves.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    plot(lines, args.out / "saves.png")
    for p in ("stream", "streamenc"):
        saves = [r["save_s"] for r in lines if r["pipeline"] == p]
        k = min(10, len(saves) // 2)
        first, last = float(np.mean(saves[:k])), float(np.mean(saves[-k:]))
        line = f"{p}: save_episode first {k} {first:.3f} s, last {k} {last:.3f} s ({last / first:.2f}x)"
        if p == "streamenc":
            rows = [r for r in lines if r["pipeline"] == p]
            ours = np.mean([r["finish"] + r["append"] for r in rows])
            line += (
                f"; of a save, ours {ours:.3f} s on average (encoders {np.mean([r['finish'] for r in rows]):.3f}, "
                f"append {np.mean([r['append'] for r in rows]):.3f}), LeRobot's own {np.mean(saves) - ours:.3f} s"
            )
        print(line + f"; missed ticks {sum(r['missed'] for r in lines if r['pipeline'] == p)}")
    fast = args.out / "faststart"
    subprocess.run([sys.executable, __file__, "--faststart", str(args.out / "streamenc"), str(fast)], check=True)
    res = {}
    for name, root in (("streamenc", args.out / "streamenc"), ("faststart", fast)):
        done = subprocess.run([sys.executable, __file__, "--access", str(root)], capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"access {name} failed:\n{done.stderr[-3000:]}")
        res[name] = json.loads(done.stdout.strip().splitlines()[-1])
    (args.out / "access.json").write_text(json.dumps(res, indent=1))
    print("| chunk files | open torchcodec (ms) | open PyAV (ms) | 500 reads torchcodec (s) | 500 reads PyAV (s) |")
    print("|---|---|---|---|---|")
    for name, r in res.items():
        b = res["faststart"]
        print(
            f"| {name} | {r['open_torchcodec_ms']:.1f} ({r['open_torchcodec_ms'] / b['open_torchcodec_ms']:.2f}x) | "
            f"{r['open_pyav_ms']:.1f} ({r['open_pyav_ms'] / b['open_pyav_ms']:.2f}x) | "
            f"{r['reads_torchcodec_s']:.2f} ({r['reads_torchcodec_s'] / b['reads_torchcodec_s']:.2f}x) | "
            f"{r['reads_pyav_s']:.2f} ({r['reads_pyav_s'] / b['reads_pyav_s']:.2f}x) |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
