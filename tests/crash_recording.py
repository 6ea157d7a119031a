"""A real LeRobot recording that kills itself at a chosen point: the child of the crash
tests (tests/test_crash.py) and of the crash matrix (bench/crash_bench.py).

    python crash_recording.py ROOT --episodes 4 --frames 20 --kill-at save_data:3 \\
        [--stock] [--depth] [--group] [--signal KILL|SEGV]

It records ``--episodes`` episodes of ``--frames`` frames (two stamped synthetic cameras,
a deterministic state and action, with ``--depth`` a depth camera too) through LeRobot's
own ``add_frame`` / ``save_episode`` / ``finalize``, streamenc installed unless ``--stock``
(then LeRobot's streaming encoder). It prints ``saved N`` (flushed) each time
``save_episode`` has returned. ``--kill-at POINT:N`` sends the signal at the N-th time the
run passes POINT (see POINTS); ``--group`` first kills every process the recorder started
(its encoders, in process groups of their own), as a power cut would.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

H, W, FPS = 120, 160, 30
KEYS = ("observation.images.front", "observation.images.wrist")
DEPTH_KEY = "observation.images.depth"
REPO = "streamenc/crash"

# Where a run can be killed, in the order one episode passes them. "frame" counts frames
# across the run (add_frame returned); the others count calls.
POINTS = (
    "frame",  # mid-episode, after add_frame returned
    "save_start",  # save_episode entered, nothing written yet
    "save_data",  # LeRobot wrote the rows into its open parquet writer
    "finish",  # the encoders finished the episode's MP4s
    "append",  # inside a chunk append, at one of its syncs
    "write_info",  # info.json half written
    "journal",  # streamenc's journal entry written, not yet renamed into place
    "saved",  # save_episode returned
    "meta_flush",  # LeRobot's episode-metadata flush (finalize, or every 10 episodes)
    "finalize",  # finalize: the data file closed, the metadata not yet
    "retire",  # finalize: the journal being removed, its first episode's entry gone already
)


def state(ep: int, i: int) -> np.ndarray:
    return np.array([ep, i, np.sin(ep + i / 7.0)], np.float32)


def action(ep: int, i: int) -> np.ndarray:
    return np.array([np.cos(ep * 3 + i / 5.0), ep * 100 + i], np.float32)


def depth_frame(ep: int, i: int) -> np.ndarray:
    y = np.linspace(300, 2000, H, dtype=np.float32)[:, None]
    return (y + 10 * (ep * 31 + i) + np.zeros((1, W), np.float32)).astype(np.uint16)[..., None]


def features(depth: bool, h: int = H, w: int = W) -> dict:
    feats = {k: {"dtype": "video", "shape": (h, w, 3), "names": ["height", "width", "channels"]} for k in KEYS}
    if depth:
        feats[DEPTH_KEY] = {"dtype": "video", "shape": (H, W, 1), "names": ["height", "width", "channels"],
                            "info": {"is_depth_map": True}}  # fmt: skip
    feats["observation.state"] = {"dtype": "float32", "shape": (3,), "names": ["ep", "i", "s"]}
    feats["action"] = {"dtype": "float32", "shape": (2,), "names": ["a", "b"]}
    return feats


class Killer:
    def __init__(self, spec: str | None, group: bool, sig: str) -> None:
        self.point, self.at = (spec.split(":") + ["1"])[:2] if spec else (None, "0")
        self.at, self.seen = int(self.at), 0
        self.group, self.sig = group, getattr(signal, f"SIG{sig}")
        self.armed = False  # points count once the dataset is open (create() writes info.json too)

    def passing(self, point: str) -> None:
        if point != self.point or not self.armed:
            return
        self.seen += 1
        if self.seen == self.at:
            self.fire()

    def fire(self) -> None:
        sys.stdout.flush()
        if self.group:  # a power cut: everything the recorder started dies with it
            import psutil

            for child in psutil.Process().children(recursive=True):
                try:
                    child.kill()
                except psutil.Error:
                    pass
        os.kill(os.getpid(), self.sig)


def instrument(killer: Killer) -> None:
    """Wrap the save path's steps, so that a kill lands exactly inside each."""
    import lerobot.datasets.lerobot_dataset as ld

    from streamenc import chunks
    from streamenc.lerobot import journal as journal_mod

    try:
        import lerobot.datasets.dataset_writer as dw  # 0.5.1 and later

        writer_cls, meta_module = dw.DatasetWriter, __import__("lerobot.datasets.dataset_metadata", fromlist=["x"])
        meta_cls = meta_module.LeRobotDatasetMetadata
        info_modules = [dw, meta_module]
    except ImportError:
        writer_cls, meta_cls, info_modules = ld.LeRobotDataset, ld.LeRobotDatasetMetadata, [ld]

    def after(cls, name, point):
        original = getattr(cls, name)

        def wrapped(*a, **k):
            out = original(*a, **k)
            killer.passing(point)
            return out

        setattr(cls, name, wrapped)

    after(writer_cls, "_save_episode_data", "save_data")
    after(meta_cls, "_flush_metadata_buffer", "meta_flush")
    if hasattr(writer_cls, "close_writer"):
        after(writer_cls, "close_writer", "finalize")
    else:
        after(writer_cls, "_close_writer", "finalize")

    sync = chunks.sync

    def synced(f):
        sync(f)
        killer.passing("append")

    chunks.sync = synced

    for module in info_modules:
        if hasattr(module, "write_info"):
            original_info = module.write_info

            def write_info(info, root, _original=original_info):
                _original(info, root)
                if killer.point == "write_info" and killer.armed and killer.seen + 1 == killer.at:
                    path = Path(root) / "meta" / "info.json"  # the kill comes with the file half written
                    data = path.read_bytes()
                    path.write_bytes(data[: len(data) // 2])
                killer.passing("write_info")

            module.write_info = write_info

    durably = journal_mod._write_durably

    def write_durably(path, write):
        if path.name.startswith("episode-"):
            tmp = path.with_name(path.name + ".tmp")
            write(tmp)
            killer.passing("journal")
        durably(path, write)

    journal_mod._write_durably = write_durably

    import shutil

    rmtree = shutil.rmtree

    def rmtree_then_die(path, *a, **k):
        """A removal cut short: the directory's files go in no set order, so the first
        episode's entry may be gone while base.json is still there."""
        path = Path(path)
        if killer.point == "retire" and path.parent.name == ".streamenc" and path.is_dir():
            entries = sorted(path.glob("episode-*.parquet"))
            if entries:
                entries[0].unlink()
                killer.passing("retire")
        rmtree(path, *a, **k)

    shutil.rmtree = rmtree_then_die


def fill(path: Path) -> None:
    """Take every free byte of the filesystem ``path`` is on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for block in (1 << 16, 512):
            try:
                while True:
                    os.write(fd, b"\0" * block)
            except OSError:
                pass
    finally:
        os.close(fd)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--episodes", type=int, default=4)
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--first", type=int, default=0, help="index of the first episode (a resumed run)")
    ap.add_argument("--kill-at")
    ap.add_argument("--group", action="store_true")
    ap.add_argument("--signal", default="KILL")
    ap.add_argument("--stock", action="store_true", help="LeRobot's own streaming encoder, no streamenc")
    ap.add_argument("--depth", action="store_true")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--size", default=f"{W}x{H}", help="WIDTHxHEIGHT of the RGB cameras (the bench: 640x480)")
    ap.add_argument("--no-journal", action="store_true", help="install(crash_safe=False): the bench's baseline")
    ap.add_argument("--time-saves", action="store_true", help="print each save_episode's and journal commit's ms")
    ap.add_argument("--fill-after", type=int, help="after this many saves, fill the disk before the next save")
    ap.add_argument("--keep-partial", action="store_true", help="resume with keep_partial=True")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))

    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    import streamenc.lerobot as sl
    from streamenc.synthetic import SyntheticCamera

    killer = Killer(args.kill_at, args.group, args.signal)
    instrument(killer)
    root = Path(args.root)
    if args.resume:
        ds = sl.resume(REPO, root=root, keep_partial=args.keep_partial)
    else:
        kwargs = {"streaming_encoding": True} if args.stock else {}
        feats = features(args.depth, h, w)
        ds = LeRobotDataset.create(REPO, FPS, feats, root=root, **sl.codec_kwargs("libsvtav1"), **kwargs)
        if not args.stock:
            sl.install(ds, crash_safe=not args.no_journal)
    commit_ms: list[float] = []
    if args.time_saves:
        from streamenc.lerobot.journal import Journal

        commit = Journal.commit

        def timed_commit(self, *a, **k):
            t = time.perf_counter()
            commit(self, *a, **k)
            commit_ms.append((time.perf_counter() - t) * 1e3)

        Journal.commit = timed_commit
    killer.armed = True
    encoder = sl.encoder_of(ds)
    finish = encoder.finish_episode

    def finish_episode(*a, **k):
        out = finish(*a, **k)
        killer.passing("finish")
        return out

    encoder.finish_episode = finish_episode
    cams = {k: SyntheticCamera(h, w, seed=i + 1) for i, k in enumerate(KEYS)}
    for ep in range(args.first, args.first + args.episodes):
        # A record loop's pace, from the episode's start: no burst of frames to catch up
        # after a slow save_episode (the open episode's rows are copied every 0.25 s).
        tick = time.monotonic()
        for i in range(args.frames):
            tick += 1 / FPS
            time.sleep(max(0.0, tick - time.monotonic()))
            frame = {k: c.frame(i) for k, c in cams.items()}
            if args.depth:
                frame[DEPTH_KEY] = depth_frame(ep, i)
            frame["observation.state"] = state(ep, i)
            frame["action"] = action(ep, i)
            frame["task"] = "pick" if ep % 2 == 0 else "place"
            ds.add_frame(frame)
            killer.passing("frame")
        killer.passing("save_start")
        if args.fill_after is not None and ep - args.first == args.fill_after:
            fill(root.parent / "filler")
        t = time.perf_counter()
        try:
            ds.save_episode()
        except OSError as e:  # the full disk: what a user's script would print before it stops
            print(f"error {type(e).__name__}: {e}", flush=True)
            sys.exit(3)
        took = (time.perf_counter() - t) * 1e3
        if args.time_saves:
            print(f"save_ms {ep} {took:.3f} {commit_ms[-1] if commit_ms else 0.0:.3f}", flush=True)
        print(f"saved {ep}", flush=True)
        killer.passing("saved")
    ds.finalize()
    print("finalized", flush=True)


if __name__ == "__main__":
    main()
