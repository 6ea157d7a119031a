"""A busy machine: the record loop and the save, with other programs keeping the CPU busy.

The harness (``streamenc bench``) on W1 through the real LeRobotDataset when lerobot 0.4.x
is installed: 2 cameras at 480p@30, 2 x 10 s episodes, LeRobot's png and stream paths and
streamenc on identical frames, beside competing load (streamenc.bench.load): 0, 1 or 2
busy programs at nice 0 in other sessions, 2 with one in the recorder's own session, and
a bursty policy (20 ms of numpy work every 33 ms) in its session. Each episode is saved
at once, and, for 1 and 2 busy programs, also after a 10 s reset period during which the
loop runs on. Then streamenc's encoder scheduling settings side by side under the same
load (``--policies``), with a plot of the backlog over time per setting.

Checked against the targets of the scheduling work (streamenc, default settings):

- quiet: 0 overruns, add_frame p99 <= 0.7 ms, save_episode <= 0.5 s;
- 1 busy: 0 overruns, add_frame max <= 10 ms; save <= 6 s at once, <= 1 s after a reset;
- 2 busy (also with one in the recorder's session): <= 3 overruns; save <= 15 s at once,
  <= 5 s after a reset;
- every frame read back.

    python bench/load_bench.py [--seconds 10] [--episodes 2] [--policies idle,batch] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from streamenc.bench import harness, runs

LOADS = ["0", "1", "2", "2own", "policy"]
RESET_LOADS = ["1", "2"]
# load, reset -> (max overruns, add_frame p99 ms, add_frame max ms, save s, each)
TARGETS = {
    ("0", 0.0): (0, 0.7, None, 0.5),
    ("1", 0.0): (0, None, 10.0, 6.0),
    ("1", 10.0): (0, None, 10.0, 1.0),
    ("2", 0.0): (3, None, None, 15.0),
    ("2", 10.0): (3, None, None, 5.0),
    ("2own", 0.0): (3, None, None, 15.0),
}


def _load_of(r: dict) -> str:
    """The --load name of a result line."""
    for name, fields in runs.LOADS.items():
        want = {"busy": 0, "busy_own": 0, "policy": False, **fields}
        if all(r[k] == v for k, v in want.items()):
            return name
    return "?"


def _setting(r: dict) -> str:
    if r["pipeline"] != "streamenc":
        return ""
    return r.get("sched") or "default"


def table(lines: list[dict]) -> str:
    rows = [
        "| load | save after | path | loop late p99 / max (ms) | overruns | add_frame p99 / max (ms) | "
        "first add_frame (ms) | backlog max (frames) | save_episode (s) | finalize (s) | lost |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in lines:
        where = f"{r['reset_s']:g} s reset" if r["reset_s"] else "at once"
        path = r["pipeline"] + (f" ({_setting(r)})" if _setting(r) not in ("", "default") else "")
        if not r.get("ok"):
            rows.append(f"| {_load_of(r)} | {where} | {path} | failed: {r.get('error')} ||||||||")
            continue
        saves = ", ".join(f"{s:.2f}" for s in r["end_s"])
        firsts = ", ".join(f"{s:.1f}" for s in r.get("first_add_ms", [])) or "-"
        rows.append(
            f"| {_load_of(r)} | {where} | {path} | {r['late_p99_ms']:.2f} / {r['late_max_ms']:.1f} | "
            f"{r['missed']} | {r['add_p99_ms']:.2f} / {r['add_max_ms']:.1f} | {firsts} | {r['backlog_max']} | "
            f"{saves} | "
            f"{r['close_s']:.2f} | {r['lost']} |"
        )
    return "\n".join(rows)


def verdicts(lines: list[dict]) -> list[str]:
    out = []
    for r in lines:
        key = (_load_of(r), float(r["reset_s"]))
        if r["pipeline"] != "streamenc" or _setting(r) != "default" or key not in TARGETS or not r.get("ok"):
            continue
        overruns, p99, worst, save = TARGETS[key]
        checks = [(f"overruns {r['missed']}", r["missed"] <= overruns), (f"lost {r['lost']}", r["lost"] == 0)]
        if p99 is not None:
            checks.append((f"add_frame p99 {r['add_p99_ms']:.2f} ms", r["add_p99_ms"] <= p99))
        if worst is not None:
            checks.append((f"add_frame max {r['add_max_ms']:.1f} ms", r["add_max_ms"] <= worst))
        checks.append((f"save {max(r['end_s']):.2f} s", max(r["end_s"]) <= save))
        when = f"after a {key[1]:g} s reset" if key[1] else "at once"
        name = f"load {key[0]}, save {when}"
        out.append(f"{name}: " + "; ".join(f"{text} ({'met' if ok else 'MISSED'})" for text, ok in checks))
    return out


def plot(lines: list[dict], out: Path) -> str | None:
    """The backlog over time, per streamenc scheduling setting, one panel per load."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ours = [r for r in lines if r.get("ok") and r["pipeline"] == "streamenc" and not r["reset_s"]]
    loads = [ld for ld in LOADS if any(_load_of(r) == ld for r in ours)]
    if not loads:
        return None
    fig, axes = plt.subplots(1, len(loads), figsize=(4 * len(loads), 3.4), squeeze=False)
    for ax, ld in zip(axes.flat, loads, strict=True):
        for r in (r for r in ours if _load_of(r) == ld):
            if r["backlog"]:
                t, b = zip(*r["backlog"], strict=True)
                ax.plot(t, b, label=_setting(r))
        ax.set(xlabel="s", ylabel="frames waiting", title=f"load {ld}")
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "load_backlog.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--episodes", type=int, default=2)
    ap.add_argument("--loads", default=",".join(LOADS))
    ap.add_argument("--pipelines", default=",".join(runs.PIPELINES))
    ap.add_argument("--policies", default="idle,batch", help="streamenc settings beside the default, at load 1 and 2")
    ap.add_argument("--out", type=Path, default=Path("bench/out/load"))
    args = ap.parse_args(argv)
    common = {"cameras": 2, "size": "480p", "seconds": args.seconds, "episodes": args.episodes}
    todo = []
    for ld in args.loads.split(","):
        for reset in [0.0, 10.0] if ld in RESET_LOADS else [0.0]:
            for p in args.pipelines.split(","):
                todo.append(runs.Run(p, **common, **runs.load(ld), reset_s=reset))
    for policy in filter(None, args.policies.split(",")):
        for ld in RESET_LOADS:
            todo.append(runs.Run("streamenc", **common, **runs.load(ld), sched=policy))
    lines = harness.sweep(todo, args.out)
    print(table(lines))
    for line in verdicts(lines):
        print(line)
    figure = plot(lines, args.out)
    (args.out / "load.json").write_text(json.dumps({"table": table(lines), "verdicts": verdicts(lines)}))
    print(f"report, backlog plot ({figure}) and JSON lines: {args.out}")
    return 0 if all(r.get("ok") for r in lines) else 1


if __name__ == "__main__":
    sys.exit(main())
