"""Loop-lateness benchmark: does the record loop keep its 30 fps ticks while video is encoded?

The harness (``streamenc bench``) on a fixed plan: LeRobot's png path, LeRobot's stream
encoder and streamenc (through the real LeRobotDataset when lerobot 0.4.x is installed)
on identical frames at 2x480p, 4x480p and 2x720p, one 60 s episode each. Per tick it
records the loop's wake-up lateness, overruns, add_frame time and the frames waiting
to be encoded; it checks streamenc against the targets of the scheduling work:

- 4x480p: 0 overruns, wake-ups at most 10 ms late, add_frame p99 <= 2 ms, 0 frames lost;
- 2x480p: add_frame p99 <= 1 ms and 0 overruns.

    python bench/loop_bench.py [--seconds 60] [--configs 2x480p,4x480p,2x720p] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from streamenc.bench import harness, runs

TARGETS = {  # config -> (max overruns, max lateness ms, add p99 ms)
    "4x480p": (0, 10.0, 2.0),
    "2x480p": (0, None, 1.0),
}


def table(lines: list[dict]) -> str:
    rows = [
        "| config | path | loop late p50 / p99 / max (ms) | overruns | add_frame p50 / p99 / max (ms) | "
        "backlog max / at stop (frames) | end of episode (s) | CPU s | lost |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in lines:
        if not r.get("ok"):
            rows.append(f"| {r['config']} | {r['pipeline']} | failed: {r.get('error')} |||||||")
            continue
        rows.append(
            f"| {r['config']} | {r['pipeline']} | {r['late_p50_ms']:.2f} / {r['late_p99_ms']:.2f} / "
            f"{r['late_max_ms']:.1f} | {r['missed']} | {r['add_p50_ms']:.2f} / {r['add_p99_ms']:.2f} / "
            f"{r['add_max_ms']:.1f} | {r['backlog_max']} / {r['backlog_at_stop']} | "
            f"{float(np.mean(r['end_s'])):.2f} | {r['cpu_s']:.0f} | {r['lost']} |"
        )
    return "\n".join(rows)


def verdicts(lines: list[dict]) -> list[str]:
    out = []
    for r in lines:
        key = f"{r['cameras']}x{r['size']}"
        if r["pipeline"] != "streamenc" or key not in TARGETS or not r.get("ok"):
            continue
        overruns, late, p99 = TARGETS[key]
        checks = [(f"overruns {r['missed']}", r["missed"] <= overruns), (f"lost {r['lost']}", r["lost"] == 0)]
        if late is not None:
            checks.append((f"woken at most {r['late_max_ms']:.1f} ms late", r["late_max_ms"] <= late))
        checks.append((f"add_frame p99 {r['add_p99_ms']:.2f} ms", r["add_p99_ms"] <= p99))
        out.append(f"{key}: " + "; ".join(f"{text} ({'met' if ok else 'MISSED'})" for text, ok in checks))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--configs", default="2x480p,4x480p,2x720p")
    ap.add_argument("--pipelines", default=",".join(runs.PIPELINES))
    ap.add_argument("--out", type=Path, default=Path("bench/out/loop"))
    args = ap.parse_args(argv)
    todo = []
    for config in args.configs.split(","):
        cameras, size = config.split("x")
        for pipeline in args.pipelines.split(","):
            todo.append(runs.Run(pipeline, int(cameras), size, seconds=args.seconds, episodes=1))
    lines = harness.sweep(todo, args.out)
    print(table(lines))
    for line in verdicts(lines):
        print(line)
    print(f"report, lateness CDF and JSON lines: {args.out}")
    return 0 if all(r.get("ok") for r in lines) else 1


if __name__ == "__main__":
    sys.exit(main())
