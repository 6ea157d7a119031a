"""A LeRobot dataset without streamenc's journal, looked at and never touched: clean, or
what is damaged (parquet files without a footer, episode counts that disagree) and what
still reads (video files whose frames decode). What ``streamenc repair`` reports for a
dataset LeRobot recorded alone."""

from __future__ import annotations

import json
from pathlib import Path

from .journal import INFO
from .report import Report


def inspect(root: Path, report: Report) -> None:
    """Clean, or what is damaged and what still reads; nothing is written."""
    import pyarrow.parquet as pq

    try:
        info = json.loads((root / INFO).read_text())
    except FileNotFoundError:
        report.state, report.problems = "damaged", [f"no {INFO}: not a LeRobot dataset"]
        return
    except ValueError:
        report.state, report.problems = "damaged", [f"{INFO} is not valid JSON"]
        return
    report.episodes = int(info.get("total_episodes", 0))
    rows = {"data": 0, "meta/episodes": 0}
    for top in rows:
        for path in sorted((root / top).rglob("*.parquet")):
            rel = path.relative_to(root).as_posix()
            try:
                rows[top] += pq.read_metadata(path).num_rows
            except Exception:  # pyarrow raises ArrowInvalid, OSError, ...: a file nothing reads
                report.problems.append(f"{rel} has no parquet footer: its rows cannot be read or restored")
    if rows["meta/episodes"] != report.episodes:
        report.problems.append(
            f"info.json says {report.episodes} episodes, the episode metadata that reads holds {rows['meta/episodes']}"
            " (LeRobot buffers it until finalize): those episodes cannot be restored"
        )
    if rows["data"] != int(info.get("total_frames", 0)):
        report.problems.append(
            f"info.json says {info.get('total_frames')} frames, the data files that read hold {rows['data']}"
        )
    temporary = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("tmp") and any(p.glob("*.mp4*"))]
    if temporary:
        report.problems.append(f"temporary video directories left: {sorted(p.name for p in temporary)}")
    if report.problems:
        report.state = "damaged"
        for path in sorted((root / "videos").rglob("*.mp4")):
            n = _decoded_frames(path)
            rel = path.relative_to(root).as_posix()
            report.readable.append(f"{rel}: {n} frames decode" if n else f"{rel}: does not decode")


def _decoded_frames(path: Path) -> int:
    import av

    try:
        with av.open(str(path)) as c:
            return sum(1 for _ in c.decode(video=0))
    except (av.error.FFmpegError, OSError, IndexError):
        return 0
