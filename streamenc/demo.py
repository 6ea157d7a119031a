"""The demo `make demo` runs: a synthetic two-camera recording, then a short report.

Two 480p cameras at 30 fps, and a 480p depth camera (uint16 millimetres), two 5-second
episodes, paced in real time like a record loop. It reports add_frame latency,
end_episode time and the encoders chosen, then decodes every file to prove each frame is
there, in order, and that the depth video holds exactly the 12-bit codes of the frames.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from .codecs import EncoderConfig
from .depth import Depth
from .recorder import Recorder
from .synthetic import Pacer, SyntheticCamera, SyntheticDepth
from .verify import check, check_depth


def record(
    out: Path,
    cameras: int = 2,
    size: tuple[int, int] = (480, 640),
    fps: int = 30,
    seconds: float = 5.0,
    episodes: int = 2,
    vcodec: str = "libsvtav1",
    status=None,
    depth: str | None = None,
) -> dict:
    """Record synthetic episodes paced at ``fps``; return latencies, end times and files.
    ``depth`` ("uint16" or "float32") adds a depth camera named "depth"."""
    names = [f"cam{k}" for k in range(cameras)]
    cams: dict = {n: SyntheticCamera(*size, seed=k) for k, n in enumerate(names)}
    declared: dict = {n: size for n in names}
    if depth:
        cams["depth"], declared["depth"] = SyntheticDepth(*size, dtype=depth), Depth(*size, dtype=depth)
        names.append("depth")
    n_frames = int(round(seconds * fps))
    result = {"add_ms": [], "end_s": [], "videos": [], "missed": 0, "declared": declared}
    with Recorder(out, fps=fps, cameras=declared, encoder=EncoderConfig(vcodec=vcodec)) as rec:
        result["codec"] = rec.codec
        for ep in range(episodes):
            rec.start_episode(ep)
            pacer = Pacer(fps)
            for i in range(n_frames):
                frames = {n: cams[n].frame(i) for n in names}
                t0 = time.perf_counter()
                rec.add_frame(frames)
                result["add_ms"].append((time.perf_counter() - t0) * 1e3)
                pacer.wait()
                if status and i % fps == 0:
                    status(ep, i, rec.health())
            result["missed"] += pacer.missed
            t0 = time.perf_counter()
            videos = rec.end_episode()
            result["end_s"].append(time.perf_counter() - t0)
            result["videos"].extend((n, ep, v) for n, v in videos.items())
    result["cameras"] = cams
    result["frames_per_episode"] = n_frames
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="where to write (default: a temp dir)")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--vcodec", default="libsvtav1")
    ap.add_argument(
        "--depth", choices=["uint16", "float32", "none"], default="uint16", help="the depth camera's frames"
    )
    args = ap.parse_args(argv)
    depth = None if args.depth == "none" else args.depth
    out = args.out or Path(tempfile.mkdtemp(prefix="streamenc-demo-"))
    with_depth = f" and a {depth} depth camera" if depth else ""
    print(f"recording 2 synthetic 640x480 cameras{with_depth} at 30 fps, 2 episodes of {args.seconds:g} s, into {out}")
    r = record(out, seconds=args.seconds, vcodec=args.vcodec, depth=depth)
    add = np.array(r["add_ms"])
    codecs = sorted({v.codec for _, _, v in r["videos"]})
    print(f"encoders: {', '.join(codecs)}")
    print(
        f"add_frame ({len(r['declared'])} cameras): p50 {np.percentile(add, 50):.3f} ms, "
        f"p99 {np.percentile(add, 99):.3f} ms, "
        f"max {add.max():.3f} ms; missed 30 fps deadlines: {r['missed']}"
    )
    print("end_episode: " + ", ".join(f"{s:.3f} s" for s in r["end_s"]))
    bad = 0
    for name, _ep, video in r["videos"]:
        size = video.path.stat().st_size / 1024
        if isinstance(r["declared"][name], Depth):
            c = check_depth(video.path, r["cameras"][name], r["declared"][name])
            ok = c.in_order(r["frames_per_episode"]) and c.cfr(30)
            bad += not ok
            print(
                f"  {video.path}  {video.frames} depth frames, decoded {c.frames}, "
                f"12-bit codes round-trip exactly: {ok} (largest code error {c.max_mean_abs_error:.0f}), {size:.0f} KiB"
            )
            continue
        c = check(video.path, r["cameras"][name])
        ok = c.in_order(r["frames_per_episode"]) and c.cfr(30)
        bad += not ok
        print(
            f"  {video.path}  {video.frames} frames, decoded {c.frames}, in order: {ok}, "
            f"mean abs error <= {c.max_mean_abs_error:.2f}, {size:.0f} KiB"
        )
    print("every frame is there" if not bad else f"{bad} file(s) failed the check")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
