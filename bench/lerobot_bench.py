"""LeRobot record-loop benchmark: LeRobot's two paths and streamenc, through the real
LeRobotDataset, in one run, on the same frames, checked against the integration's targets.

It is the harness (``streamenc bench``) on a fixed plan: 2 and then 4 cameras at 480p@30,
2 episodes of 10 s, libsvtav1 at LeRobot's settings (g=2, crf=30, preset 12), for

- ``png``: LeRobot's default, AsyncImageWriter PNGs (4 threads per camera, as
  lerobot-record starts it), then save_episode reads them back and encodes them;
- ``stream``: ``streaming_encoding=True``, LeRobot's in-process encoder threads;
- ``streamenc``: the same dataset as ``png`` with ``streamenc.lerobot.install``.

Each pipeline runs in its own process, paced at the camera fps; CPU is that process's
and every child's it reaped, from dataset creation to finalize(); memory is its process
tree, sampled from outside; frames are decoded back the way LeRobot locates them.

``--content synthetic scene`` runs every configuration on both kinds of frames: the
smooth synthetic gradients and a rendered tabletop with a moving arm
(``streamenc.synthetic.SceneCamera``), each against the png run on the same frames.

    python bench/lerobot_bench.py [--cameras 2 4] [--seconds 10] [--episodes 2]
                                  [--content synthetic scene] [--pipelines png streamenc] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from streamenc.bench import harness, pipelines, runs

# the integration's targets, each against the png run of the same configuration
SAVE_X_PNG = 40.0  # save_episode at least this many times faster than png
P99_MS = 0.5
CPU_X_PNG = 0.6


def table(lines: list[dict]) -> str:
    rows = [
        "| frames | cameras | path | add_frame p50 / p99 / max (ms) | copy floor p50 / p99 (ms) | missed deadlines | "
        "save_episode (s) | CPU s (× png) | peak RSS (MiB) | frames read back |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in lines:
        base = _by(lines, r["content"], r["cameras"])["png"]
        saves = " / ".join(f"{s:.2f}" for s in r["end_s"])
        rows.append(
            f"| {r['content']} | {r['cameras']} | {r['pipeline']} | {r['add_p50_ms']:.3f} / {r['add_p99_ms']:.3f} / "
            f"{r['add_max_ms']:.1f} | {r['copy_p50_ms']:.3f} / {r['copy_p99_ms']:.3f} | {r['missed']} | "
            f"{saves} | {r['cpu_s']:.0f} ({r['cpu_s'] / base['cpu_s']:.2f}) "
            f"| {r['peak_rss_mib']:.0f} | {r['back']}/{r['sent']} |"
        )
    return "\n".join(rows)


def _by(lines: list[dict], content: str, cameras: int) -> dict[str, dict]:
    return {r["pipeline"]: r for r in lines if r["cameras"] == cameras and r["content"] == content}


def verdicts(lines: list[dict]) -> list[str]:
    """streamenc against the targets, as ratios to the same run's LeRobot paths."""
    out = []
    for content, cams in sorted({(r["content"], r["cameras"]) for r in lines}):
        by = _by(lines, content, cams)
        se, png = by["streamenc"], by["png"]
        save = float(np.mean(se["end_s"]))
        faster = float(np.mean(png["end_s"])) / save
        cpu = se["cpu_s"] / png["cpu_s"]
        checks = [
            (f"save_episode {faster:.0f}x faster than png", faster >= SAVE_X_PNG),
            (
                f"add_frame p99 {se['add_p99_ms']:.2f} ms ({se['add_p99_ms'] / se['copy_p99_ms']:.1f}x the copy "
                f"floor, {se['add_p50_ms'] - png['add_p50_ms']:.2f} ms over LeRobot's own add_frame at p50)",
                se["add_p99_ms"] <= P99_MS,
            ),
            (f"missed deadlines {se['missed']}", se["missed"] == 0),
            (f"CPU {cpu:.2f}x png", cpu <= CPU_X_PNG),
            (f"frames lost {se['lost']}", se["lost"] == 0),
        ]
        if "stream" in by:
            vs_stream = float(np.mean(by["stream"]["end_s"])) / save
            checks.append((f"{vs_stream:.1f}x faster than stream", vs_stream > 1))
        said = "; ".join(f"{text} ({'met' if ok else 'MISSED'})" for text, ok in checks)
        out.append(f"{content}, {cams} cameras: {said}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cameras", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--episodes", type=int, default=2)
    ap.add_argument("--content", nargs="+", choices=runs.CONTENTS, default=["synthetic"])
    ap.add_argument("--pipelines", nargs="+", choices=runs.PIPELINES, default=list(runs.PIPELINES))
    ap.add_argument("--out", type=Path, default=Path("bench/out/lerobot"))
    args = ap.parse_args(argv)
    if "png" not in args.pipelines:
        raise SystemExit("--pipelines must include png: every figure is a ratio to it")
    todo = runs.plan(
        pipelines=args.pipelines,
        cameras=args.cameras,
        contents=args.content,
        seconds=args.seconds,
        episodes=args.episodes,
    )
    if not pipelines.uses_lerobot(todo[0]):
        raise SystemExit("no supported lerobot here (make lerobot installs 0.4.4, make lerobot06 installs 0.6.1)")
    lines = harness.sweep(todo, args.out)
    failed = [f"{r['config']} {r['pipeline']}: {r['error']}" for r in lines if not r["ok"]]
    if failed:
        raise SystemExit("runs failed:\n" + "\n".join(failed))
    print(table(lines))
    for line in verdicts(lines):
        print(line)
    print(f"report, plots and JSON lines: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
