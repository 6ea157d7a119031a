"""Record-loop benchmark: streamenc against PNGs-then-encode, in one run, on the same frames.

Both pipelines record the same synthetic cameras, paced in real time like a record
loop. The baseline is this repo's PNG fallback (LeRobot's layout and compression)
followed by what LeRobot's save_episode does: read every PNG back and encode it with
SVT-AV1 (g=2, crf=30, preset 12). Inside the same loop we also time a bare copy of
the frames, the floor any hand-off pays on this machine at this moment.

``--content scene`` records a rendered tabletop with a moving arm instead
(``streamenc.synthetic.SceneCamera``): edges and texture, no sensor noise.

    python bench/record_bench.py [--cameras 2] [--seconds 10] [--episodes 2] [--content scene] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from streamenc import EncoderConfig, Recorder
from streamenc.codecs import codec_options
from streamenc.synthetic import Pacer, SceneCamera, SyntheticCamera
from streamenc.verify import check


def cpu_seconds() -> float:
    """CPU of this process and of its reaped children: the whole process tree once closed."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def encode_pngs_like_lerobot(png_dir: Path, out: Path, fps: int) -> int:
    """LeRobot's encode_video_frames: every PNG read back, then SVT-AV1 g=2 crf=30 preset 12."""
    files = sorted(png_dir.glob("frame-*.png"))
    with av.open(str(out), "w") as container:
        stream = container.add_stream("libsvtav1", rate=fps)
        stream.pix_fmt = "yuv420p"
        stream.options = codec_options(EncoderConfig())
        for i, f in enumerate(files):
            with av.open(str(f)) as png:
                img = next(png.decode(video=0)).to_ndarray(format="rgb24")
            if i == 0:
                stream.height, stream.width = img.shape[:2]
                stream.time_base = Fraction(1, fps)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return len(files)


def run(pipeline: str, root: Path, cams: dict, fps: int, seconds: float, episodes: int) -> dict:
    names = list(cams)
    n = int(round(seconds * fps))
    scratch = {k: np.empty_like(c.frame(0)) for k, c in cams.items()}
    add, floor, ends, outputs, missed, frames_back = [], [], [], [], 0, 0
    cpu0 = cpu_seconds()
    png = pipeline == "png"
    with Recorder(root, fps=fps, cameras={k: c.shape[:2] for k, c in cams.items()}, png_fallback=png) as rec:
        for ep in range(episodes):
            rec.start_episode(ep)
            pacer = Pacer(fps)
            for i in range(n):
                frames = {k: cams[k].frame(i) for k in names}
                t0 = time.perf_counter()
                for k in names:
                    np.copyto(scratch[k], frames[k])
                t1 = time.perf_counter()
                rec.add_frame(frames)
                t2 = time.perf_counter()
                floor.append(t1 - t0)
                add.append(t2 - t1)
                pacer.wait()
            missed += pacer.missed
            t0 = time.perf_counter()
            videos = rec.end_episode()
            if png:  # then what LeRobot's save_episode does with them
                for k, v in videos.items():
                    encode_pngs_like_lerobot(v.path, root / f"{k}-{ep}.mp4", fps)
            ends.append(time.perf_counter() - t0)
            outputs += [root / f"{k}-{ep}.mp4" if png else v.path for k, v in videos.items()]
    cpu = cpu_seconds() - cpu0
    for path in outputs:  # read back outside the CPU window
        c = check(path)
        frames_back += c.frames if c.in_order(n) else 0
    add_ms, floor_ms = np.array(add) * 1e3, np.array(floor) * 1e3
    return {
        "pipeline": pipeline,
        "cameras": len(cams),
        "size": f"{cams[names[0]].shape[1]}x{cams[names[0]].shape[0]}",
        "fps": fps,
        "seconds": seconds,
        "episodes": episodes,
        "add_p50_ms": float(np.percentile(add_ms, 50)),
        "add_p99_ms": float(np.percentile(add_ms, 99)),
        "add_max_ms": float(add_ms.max()),
        "copy_floor_p99_ms": float(np.percentile(floor_ms, 99)),
        "missed_deadlines": int(missed),
        "end_episode_s": [round(e, 3) for e in ends],
        "cpu_s": round(cpu, 2),
        "frames_sent": n * episodes * len(cams),
        "frames_read_back": frames_back,
    }


def table(rows: list[dict]) -> str:
    base = next((r for r in rows if r["pipeline"] == "png"), rows[0])
    lines = [
        "| pipeline | add_frame p50 / p99 / max (ms) | copy floor p99 (ms) | missed deadlines | "
        "end_episode (s) | CPU (s) | CPU × png | end × png | frames read back |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        end = float(np.mean(r["end_episode_s"]))
        lines.append(
            f"| {r['pipeline']} | {r['add_p50_ms']:.3f} / {r['add_p99_ms']:.3f} / {r['add_max_ms']:.2f} | "
            f"{r['copy_floor_p99_ms']:.3f} | {r['missed_deadlines']} | "
            f"{', '.join(f'{e:.2f}' for e in r['end_episode_s'])} | {r['cpu_s']:.1f} | "
            f"{r['cpu_s'] / base['cpu_s']:.2f} | {end / float(np.mean(base['end_episode_s'])):.3f} | "
            f"{r['frames_read_back']} / {r['frames_sent']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cameras", type=int, default=2)
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--episodes", type=int, default=2)
    ap.add_argument("--pipelines", default="png,streamenc")
    ap.add_argument("--content", choices=["synthetic", "scene"], default="synthetic")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.size.split("x"))
    kind = SceneCamera if args.content == "scene" else SyntheticCamera
    cams = {f"cam{k}": kind(h, w, seed=k) for k in range(args.cameras)}
    rows = []
    for pipeline in args.pipelines.split(","):
        root = Path(tempfile.mkdtemp(prefix=f"streamenc-bench-{pipeline}-"))
        try:
            rows.append({**run(pipeline, root, cams, args.fps, args.seconds, args.episodes), "content": args.content})
        finally:
            shutil.rmtree(root, ignore_errors=True)
        print(json.dumps(rows[-1]), file=sys.stderr)
    print(
        f"{args.cameras} {args.content} cameras {args.size} @ {args.fps} fps, {args.episodes} x {args.seconds:g} s, "
        "paced\n"
    )
    print(table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
