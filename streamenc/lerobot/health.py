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


def frames_in(path: Path) -> int:
    """The video packets in an MP4 (0: none, or it does not read)."""
    import av

    n = 0
    try:
        with av.open(str(path)) as c:
            n = sum(1 for p in c.demux(video=0) if p.size)
    except (av.error.FFmpegError, OSError, IndexError):
        pass
    return n


def video_problems(path: Path, rel: str, episodes: list[tuple[int, float, float, int]]) -> list[str]:
    """Whether each episode (index, from, to, length) has all its frames in the video file,
    by the file's own timestamps."""
    if not path.exists():
        return [f"{rel} is missing"]
    times = _frame_times(path)
    if times is None:
        return [f"{rel} cannot be read"]
    out = []
    for index, t0, t1, length in episodes:
        n = sum(1 for t in times if t0 - 1e-4 <= t < t1 - 1e-4)
        if n != length:
            out.append(f"episode {index}: {rel} holds {n} of its {length} frames")
    return out


def _frame_times(path: Path) -> list[float] | None:
    import av

    times = None
    try:
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            tb = s.time_base or 0
            times = [float(p.pts * tb) for p in c.demux(s) if p.size and p.pts is not None]
    except (av.error.FFmpegError, OSError, IndexError):
        pass
    return times
