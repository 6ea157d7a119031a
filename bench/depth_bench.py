"""Depth benchmark: 1 RGB and 1 depth camera at 640x480, 30 fps, through lerobot 0.6.x's
LeRobotDataset, for LeRobot's two paths and streamenc, in one run, on the same frames.

- ``png``: LeRobot's default: PNGs and raw TIFFs by its AsyncImageWriter (4 threads per
  camera, as lerobot-record starts it), encoded at save_episode (depth: x265 lossless at
  its default preset);
- ``stream``: ``streaming_encoding=True``: LeRobot's encoder threads in the record
  process, quantizing depth there;
- ``streamenc``: the png dataset with ``streamenc.lerobot.install`` (depth frames copied
  into a ring; quantized and encoded in the encoder process, x265 lossless "ultrafast").

Each pipeline runs in a fresh process, paced at 30 fps. CPU is that process's and its
reaped children's, from create() to finalize(). Afterwards the depth video is decoded and
its 12-bit codes compared with LeRobot's ``quantize_depth`` of every frame sent.
Then, offline and one encoder at a time, the cost per frame of x265 lossless depth
(ultrafast and LeRobot's default preset) against SVT-AV1 for the RGB camera.

    python bench/depth_bench.py [--seconds 10] [--episodes 2] [--out bench/out/depth]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

H, W, FPS = 480, 640, 30
RGB, DEPTH = "observation.images.front", "observation.images.depth"
PIPELINES = ("png", "stream", "streamenc")


def features() -> dict:
    return {
        RGB: {"dtype": "video", "shape": (H, W, 3), "names": ["height", "width", "channels"]},
        DEPTH: {
            "dtype": "video",
            "shape": (H, W, 1),
            "names": ["height", "width", "channels"],
            "info": {"is_depth_map": True},
        },
        "observation.state": {"dtype": "float32", "shape": (2,), "names": None},
    }


def one(pipeline: str, seconds: float, episodes: int, root: Path) -> dict:
    """One pipeline's record loop, paced, in this process."""
    from lerobot.configs import RGBEncoderConfig
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    import streamenc.lerobot as sl
    from streamenc.synthetic import Pacer, SyntheticCamera, SyntheticDepth

    rgb, depth = SyntheticCamera(H, W, seed=1), SyntheticDepth(H, W, "uint16", seed=2)
    n = int(round(seconds * FPS))
    cpu0 = _cpu()
    ds = LeRobotDataset.create(
        "bench/depth",
        FPS,
        features(),
        root=root,
        rgb_encoder=RGBEncoderConfig(vcodec="libsvtav1"),
        streaming_encoding=pipeline == "stream",
        image_writer_threads=4 * 2,  # as lerobot-record: 4 per camera (streamenc stops it: no image keys)
    )
    if pipeline == "streamenc":
        sl.install(ds)
    add, saves, missed, lateness = [], [], 0, []
    for ep in range(episodes):
        pacer = Pacer(FPS)
        for i in range(n):
            frame = {
                RGB: rgb.frame(i),
                DEPTH: depth.frame(i)[..., None],
                "observation.state": np.array([ep, i], np.float32),
                "task": "bench",
            }
            t = time.perf_counter()
            ds.add_frame(frame)
            add.append(time.perf_counter() - t)
            pacer.wait()
        missed += pacer.missed
        lateness += pacer.lateness
        t = time.perf_counter()
        ds.save_episode()
        saves.append(time.perf_counter() - t)
    ds.finalize()
    cpu = _cpu() - cpu0
    add_ms = np.array(add) * 1e3
    return {
        "pipeline": pipeline,
        "add_p50_ms": float(np.percentile(add_ms, 50)),
        "add_p99_ms": float(np.percentile(add_ms, 99)),
        "add_max_ms": float(add_ms.max()),
        "missed": missed,
        "late_max_ms": float(max(lateness) * 1e3),
        "save_s": saves,
        "cpu_s": cpu,
        "sent": n * episodes,
        **read_back(root, depth, n, episodes),
    }


def _cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def read_back(root: Path, depth, n: int, episodes: int) -> dict:
    """Frames in the dataset's depth video(s), and how many hold exactly LeRobot's codes."""
    from lerobot.datasets.depth_utils import quantize_depth

    from streamenc.verify import decode

    files = sorted((root / "videos" / DEPTH).rglob("*.mp4"))
    codes = [c for f in files for _, c in decode(f, "gray12le")]
    exact = sum(
        bool(np.array_equal(codes[ep * n + i], quantize_depth(depth.expected(i), video_backend=None)))
        for ep in range(episodes)
        for i in range(n)
        if ep * n + i < len(codes)
    )
    rgb_frames = sum(1 for f in sorted((root / "videos" / RGB).rglob("*.mp4")) for _ in decode(f))
    mib = sum(f.stat().st_size for f in files) / 2**20
    return {"depth_back": len(codes), "depth_exact": exact, "rgb_back": rgb_frames, "depth_mib": mib}


def encoder_cost(frames: int = 90) -> list[dict]:
    """ms per frame, one encoder at a time, of each depth and RGB setting (threads: all)."""
    import av

    from streamenc.codecs import EncoderConfig, codec_options, depth_config
    from streamenc.depth import quantize
    from streamenc.synthetic import SyntheticCamera, SyntheticDepth

    depth, rgb = SyntheticDepth(H, W), SyntheticCamera(H, W)
    codes = [quantize(depth.expected(i)) for i in range(frames)]
    images = [rgb.expected(i) for i in range(frames)]
    settings = [
        ("depth: libx265 lossless ultrafast (streamenc)", "libx265", depth_config(), "gray12le"),
        ("depth: libx265 lossless medium (LeRobot's default)", "libx265", depth_config(preset="medium"), "gray12le"),
        ("rgb: libsvtav1 preset 12 crf 30 (both)", "libsvtav1", EncoderConfig(), "yuv420p"),
    ]
    out = []
    for name, codec, cfg, pix in settings:
        with tempfile.TemporaryDirectory() as d:
            c = av.open(f"{d}/x.mp4", "w")
            s = c.add_stream(codec, rate=FPS)
            s.width, s.height, s.pix_fmt = W, H, pix
            s.options = codec_options(cfg, codec)
            t = time.perf_counter()
            for i in range(frames):
                if pix == "gray12le":
                    f = av.VideoFrame(W, H, "gray12le")
                    p = f.planes[0]
                    np.frombuffer(p, np.uint16).reshape(H, p.line_size // 2)[:, :W] = codes[i]
                else:
                    f = av.VideoFrame.from_ndarray(images[i], format="rgb24").reformat(format=pix)
                f.pts = i
                for pkt in s.encode(f):
                    c.mux(pkt)
            for pkt in s.encode(None):
                c.mux(pkt)
            c.close()
            ms = (time.perf_counter() - t) / frames * 1e3
            out.append(
                {
                    "setting": name,
                    "ms_per_frame": ms,
                    "kib_per_frame": Path(f"{d}/x.mp4").stat().st_size / 1024 / frames,
                }
            )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--episodes", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("bench/out/depth"))
    ap.add_argument("--one", choices=PIPELINES, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        root = Path(tempfile.mkdtemp(prefix=f"depth-{args.one}-", dir=args.out))
        print(json.dumps(one(args.one, args.seconds, args.episodes, root / "ds")))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    lines = []
    for p in PIPELINES:
        cmd = [sys.executable, __file__, "--one", p, "--seconds", str(args.seconds), "--episodes", str(args.episodes)]
        done = subprocess.run([*cmd, "--out", str(args.out)], capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{p} failed:\n{done.stderr[-3000:]}")
        lines.append(json.loads(done.stdout.strip().splitlines()[-1]))
    cost = encoder_cost()
    (args.out / "results.json").write_text(json.dumps({"runs": lines, "encoders": cost}, indent=1))
    png = next(r for r in lines if r["pipeline"] == "png")
    print(
        "| path | add_frame p50 / p99 / max (ms) | missed | woken late max (ms) | save_episode (s) | "
        "CPU s (x png) | depth frames back / exact / sent | depth MiB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in lines:
        saves = " / ".join(f"{s:.2f}" for s in r["save_s"])
        print(
            f"| {r['pipeline']} | {r['add_p50_ms']:.2f} / {r['add_p99_ms']:.2f} / {r['add_max_ms']:.1f} | "
            f"{r['missed']} | {r['late_max_ms']:.0f} | {saves} | {r['cpu_s']:.0f} ({r['cpu_s'] / png['cpu_s']:.2f}) | "
            f"{r['depth_back']} / {r['depth_exact']} / {r['sent']} | {r['depth_mib']:.0f} |"
        )
    svt = cost[-1]["ms_per_frame"]
    print("\n| encoder, one at a time | ms per frame | x SVT-AV1 RGB | KiB per frame |\n|---|---|---|---|")
    for c in cost:
        print(
            f"| {c['setting']} | {c['ms_per_frame']:.1f} | {c['ms_per_frame'] / svt:.1f} | {c['kib_per_frame']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
