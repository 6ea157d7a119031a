"""The crash matrix: kill point x LeRobot line x stock LeRobot / streamenc.

Each cell is a real recording (tests/crash_recording.py: 2 cameras, 4 episodes of 20
frames) that dies by SIGKILL at the point named, then: the episodes whose save_episode
had returned ("saved"), and the episodes stock ``LeRobotDataset`` then opens and reads
every frame of ("recovered"): for streamenc after ``streamenc repair``, for stock LeRobot
as it is (it has no repair). Then the cost the journal adds to ``save_episode`` at 2x480p
(3 s episodes): the journal commit timed inside save_episode, and save_episode with the
journal against without it, alternating runs in the same invocation (a ratio, because
the machine is shared and noisy).

Run once per LeRobot line (the interpreter's lerobot); ``--merge`` joins the JSON of both
into docs-ready markdown:

    python bench/crash_bench.py --out bench/out/crash/lerobot-0.4.4.json
    python bench/crash_bench.py --merge bench/out/crash/*.json > bench/out/crash/report.md
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHILD = HERE.parent / "tests" / "crash_recording.py"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(CHILD.parent)])}
# kill point -> (label, the N to pass: the 3rd episode's step, or the append's 2nd sync)
POINTS = {
    "frame:50": "mid-episode 3 (frame 10)",
    "save_data:3": "save_episode 3: rows written, parquet open",
    "finish:3": "save_episode 3: videos finished",
    "append:14": "save_episode 3: inside a chunk append",
    "write_info:5": "save_episode 3: info.json half written",
    "journal:3": "save_episode 3: journal entry not yet renamed",
    "saved:3": "just after save_episode 3 returned",
    "finalize:1": "inside finalize()",
}
STOCK_SKIPS = {"append:14", "journal:3"}  # streamenc's own steps: stock LeRobot has none


def _child(root: Path, *flags: str) -> tuple[int, list[int], list[tuple[float, float]]]:
    p = subprocess.run([sys.executable, str(CHILD), str(root), *flags], env=ENV, capture_output=True, text=True)
    saved = [int(line.split()[1]) for line in p.stdout.splitlines() if line.startswith("saved ")]
    times = [(float(x[2]), float(x[3])) for x in (line.split() for line in p.stdout.splitlines()) if x[0] == "save_ms"]
    return p.returncode, saved, times


def _recovered(root: Path, stock: bool) -> tuple[int, str]:
    """Episodes stock LeRobotDataset reads in full, after a repair for streamenc."""
    note = ""
    if not stock:
        p = subprocess.run(
            [sys.executable, "-m", "streamenc", "repair", str(root), "--json"], env=ENV, capture_output=True, text=True
        )
        note = json.loads(p.stdout)["state"] if p.stdout.strip() else p.stderr.strip()[-200:]
    probe = (
        "import sys\nfrom lerobot.datasets.lerobot_dataset import LeRobotDataset\n"
        "ds = LeRobotDataset('streamenc/crash', root=sys.argv[1])\n"
        "[ds[i] for i in range(len(ds))]\nprint(ds.meta.total_episodes)\n"
    )
    p = subprocess.run([sys.executable, "-c", probe, str(root)], env=ENV, capture_output=True, text=True)
    if p.returncode:
        last = (p.stderr.strip().splitlines() or ["?"])[-1]
        return 0, f"{note}; LeRobotDataset fails: {last[:120]}".lstrip("; ")
    return int(p.stdout.split()[-1]), note


def matrix(work: Path) -> list[dict]:
    rows = []
    for point, label in POINTS.items():
        for stock in (True, False):
            if stock and point in STOCK_SKIPS:
                continue
            root = work / f"{point.replace(':', '-')}-{'stock' if stock else 'streamenc'}"
            rc, saved, _ = _child(root, "--kill-at", point, *(["--stock"] if stock else []))
            recovered, note = _recovered(root, stock)
            rows.append(
                {
                    "point": point,
                    "label": label,
                    "path": "stock" if stock else "streamenc",
                    "rc": rc,
                    "saved": len(saved),
                    "recovered": recovered,
                    "note": note,
                }  # fmt: skip
            )
            print(f"{point:14s} {rows[-1]['path']:9s} saved {len(saved)} recovered {recovered}  {note}", flush=True)
    return rows


def save_cost(work: Path, rounds: int, episodes: int) -> dict:
    """save_episode with and without the journal, alternating runs; the commit timed inside."""
    with_j, without, commits = [], [], []
    for k in range(rounds):
        for journal in (True, False):
            root = work / f"cost-{k}-{int(journal)}"
            flags = ["--size", "640x480", "--frames", "90", "--episodes", str(episodes), "--time-saves"]
            rc, _, times = _child(root, *flags, *([] if journal else ["--no-journal"]))
            if rc:
                raise SystemExit(f"the cost run failed ({rc})")
            saves = [t for t, _ in times[1:]]  # the first save moves a file instead of appending
            (with_j if journal else without).extend(saves)
            if journal:
                commits.extend(c for _, c in times[1:])
    med = statistics.median
    return {
        "episodes": len(with_j),
        "save_ms_with": med(with_j),
        "save_ms_without": med(without),
        "ratio": med(with_j) / med(without),
        "commit_ms_median": med(commits),
        "commit_ms_max": max(commits),
    }


def merge(paths: list[Path]) -> str:
    runs = [json.loads(Path(p).read_text()) for p in paths]
    out = ["| kill point | " + " | ".join(f"{r['lerobot']} {p}" for r in runs for p in ("stock", "streamenc")) + " |"]
    out.append("|---|" + "---|" * (2 * len(runs)))
    for point, label in POINTS.items():
        cells = []
        for r in runs:
            for path in ("stock", "streamenc"):
                row = next((x for x in r["matrix"] if x["point"] == point and x["path"] == path), None)
                cells.append("n/a" if row is None else f"{row['recovered']} of {row['saved']}")
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out.append("")
    out.append(
        "Cells: episodes stock `LeRobotDataset` reads in full afterwards, of the episodes saved before the kill."
    )
    out.append("")
    out.append("| LeRobot | saves | save_episode with journal | without | ratio | journal commit median / max |")
    out.append("|---|---|---|---|---|---|")
    for r in runs:
        c = r["cost"]
        out.append(
            f"| {r['lerobot']} | {c['episodes']} | {c['save_ms_with']:.1f} ms | {c['save_ms_without']:.1f} ms | "
            f"{c['ratio']:.2f} | {c['commit_ms_median']:.1f} / {c['commit_ms_max']:.1f} ms |"
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="where the JSON of this line goes")
    ap.add_argument("--rounds", type=int, default=3, help="cost: runs with and without the journal, each")
    ap.add_argument("--episodes", type=int, default=4, help="cost: episodes per run")
    ap.add_argument("--merge", nargs="+", type=Path, help="JSON files of earlier runs: print the markdown")
    args = ap.parse_args()
    if args.merge:
        print(merge(args.merge))
        return
    with tempfile.TemporaryDirectory(prefix="streamenc-crash-") as d:
        result = {
            "lerobot": importlib.metadata.version("lerobot"),
            "matrix": matrix(Path(d)),
            "cost": save_cost(Path(d), args.rounds, args.episodes),
        }
    print(json.dumps(result["cost"]))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
