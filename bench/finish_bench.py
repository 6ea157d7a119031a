"""What finalize() costs now that it leaves ordinary MP4s, and what a fragmented file costs
a reader.

1. A chunk of ``--episodes`` episodes (one 480p episode of 3 s, SVT-AV1 at LeRobot's
   settings, appended that many times in place, as streamenc's save path does), then
   ``chunks.finish`` on it: the seconds, against copying the same file in the same run.
2. Random access, as training reads: ``--reads`` single frames at random timestamps
   (PyAV seek + decode, and torchcodec where it loads), in the one-episode file as the
   encoder writes it (fragmented, a fragment per frame) and in the same file finished.

    python bench/finish_bench.py [--episodes 100] [--reads 200]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av

from streamenc import chunks, parts
from streamenc.synthetic import SyntheticCamera

H, W, FPS, FRAMES = 480, 640, 30, 90


def episode(path: Path) -> Path:
    cam = SyntheticCamera(H, W)
    with av.open(str(path), "w", format="mp4", options=dict(parts.CONTAINER_OPTIONS)) as c:
        s = c.add_stream("libsvtav1", rate=FPS)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.time_base = Fraction(1, FPS)
        s.options = {"g": "2", "crf": "30", "preset": "12"}
        for i in range(FRAMES):
            f = av.VideoFrame.from_ndarray(cam.frame(i), format="rgb24").reformat(format="yuv420p")
            f.pts = i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


def reads_pyav(path: Path, times: list[float]) -> float:
    t0 = time.perf_counter()
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        for t in times:
            c.seek(int(t / s.time_base), stream=s, backward=True)
            for frame in c.decode(s):
                if frame.time is not None and frame.time >= t - 1e-4:
                    break
    return time.perf_counter() - t0


def reads_torchcodec(path: Path, times: list[float]) -> float | None:
    try:
        from torchcodec.decoders import VideoDecoder
    except Exception:  # not installed, or FFmpeg's shared libraries missing
        return None
    t0 = time.perf_counter()
    decoder = VideoDecoder(str(path), seek_mode="approximate")
    for t in times:
        decoder.get_frames_played_at(seconds=[t])
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--reads", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="streamenc-finish-") as d:
        d = Path(d)
        one = episode(d / "episode.mp4")
        chunk = d / "file-000.mp4"
        shutil.copy(one, chunk)
        for _ in range(args.episodes - 1):
            chunks.append(chunk, one)
        mb = chunk.stat().st_size / 1e6
        finish, copy = [], []
        for k in range(args.rounds):
            work = d / f"work-{k}.mp4"
            shutil.copy(chunk, work)
            t0 = time.perf_counter()
            shutil.copyfile(work, d / "copy.mp4")
            copy.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            chunks.finish(work)
            finish.append(time.perf_counter() - t0)
            assert chunks.ordinary(work)
        f, c = statistics.median(finish), statistics.median(copy)
        print(
            f"finish: {args.episodes} episodes ({mb:.1f} MB appendable -> {work.stat().st_size / 1e6:.1f} MB): "
            f"{f:.2f} s median of {args.rounds}; copying the file {c:.3f} s; ratio {f / c:.1f}x"
        )
        ordinary = d / "ordinary.mp4"
        shutil.copy(one, ordinary)
        chunks.finish(ordinary)
        rng = random.Random(0)
        times = [rng.randrange(FRAMES) / FPS for _ in range(args.reads)]
        for name, read in (("PyAV", reads_pyav), ("torchcodec", reads_torchcodec)):
            got = []
            for _ in range(args.rounds):
                frag, ordi = read(one, times), read(ordinary, times)
                if frag is None or ordi is None:
                    break
                got.append((frag, ordi))
            if not got:
                print(f"{name}: not available here")
                continue
            frag, ordi = statistics.median(g[0] for g in got), statistics.median(g[1] for g in got)
            print(
                f"{name}: {args.reads} random reads of a one-episode file: fragmented {frag * 1e3 / args.reads:.2f} "
                f"ms/read, ordinary {ordi * 1e3 / args.reads:.2f} ms/read; fragmented/ordinary {frag / ordi:.2f}"
            )


if __name__ == "__main__":
    main()
