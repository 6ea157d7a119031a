"""Encoder scheduling A/B: the record loop's lateness and the backlog, per encoder setting.

A ``Recorder`` with N synthetic 480p cameras, paced at 30 fps, once per scheduling
setting (EncoderConfig ``sched`` / ``nice`` / ``cpus``), one after the other on the same
machine, each in a fresh process. Per setting: the loop's wake-up lateness, overruns,
add_frame times, frames spilled (the backlog the encoders could not absorb) and
end_episode. The table in docs/tuning.md comes from it.

    python bench/sched_bench.py [--cameras 4] [--seconds 30]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

import numpy as np

SETTINGS = [
    {"sched": "other"},
    {"sched": "other", "nice": 10},
    {"sched": "other", "nice": 19},
    {"sched": "batch"},
    {"sched": "idle"},
    {"sched": "other", "cpus": [1]},
]


def run(cameras: int, seconds: float, setting: dict) -> dict:
    """One recording with ``setting``, in this process."""
    from streamenc import EncoderConfig, Recorder
    from streamenc.synthetic import Pacer, SyntheticCamera

    cams = {f"c{k}": SyntheticCamera(480, 640, seed=k) for k in range(cameras)}
    add, spilled = [], 0
    with tempfile.TemporaryDirectory(prefix="streamenc-sched-") as root:
        config = EncoderConfig(**{k: tuple(v) if k == "cpus" else v for k, v in setting.items()})
        with Recorder(root, fps=30, cameras=dict.fromkeys(cams, (480, 640)), encoder=config) as rec:
            rec.start_episode()
            pacer = Pacer(30)
            for i in range(int(seconds * 30)):
                frames = {k: c.frame(i) for k, c in cams.items()}
                t = time.perf_counter()
                rec.add_frame(frames)
                add.append(time.perf_counter() - t)
                spilled = max(spilled, max(h.spilled for h in rec.health().values()))
                pacer.wait()
            t = time.perf_counter()
            rec.end_episode()
            end = time.perf_counter() - t
    late, add_ms = np.array(pacer.lateness) * 1e3, np.array(add) * 1e3
    return {
        "setting": setting,
        "late": [float(np.percentile(late, q)) for q in (50, 99, 100)],
        "overruns": pacer.missed,
        "add": [float(np.percentile(add_ms, q)) for q in (50, 99, 100)],
        "spilled_max": int(spilled),
        "end_s": end,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one setting (JSON) and print its line
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(run(args.cameras, args.seconds, json.loads(args.one))))
        return 0
    print(f"{args.cameras} cameras 640x480 @ 30 fps for {args.seconds:g} s, per encoder setting\n")
    print("| encoders | loop late p50 / p99 / max (ms) | overruns | add_frame p50 / p99 / max (ms) | spilled | end s |")
    print("|---|---|---|---|---|---|")
    for setting in SETTINGS:
        cmd = [sys.executable, __file__, "--cameras", str(args.cameras), "--seconds", str(args.seconds)]
        out = subprocess.run([*cmd, "--one", json.dumps(setting)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        name = ", ".join(f"{k}={v}" for k, v in setting.items())
        late, add = r["late"], r["add"]
        print(
            f"| {name} | {late[0]:.2f} / {late[1]:.2f} / {late[2]:.1f} | {r['overruns']} | "
            f"{add[0]:.2f} / {add[1]:.2f} / {add[2]:.1f} | {r['spilled_max']} | {r['end_s']:.2f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
