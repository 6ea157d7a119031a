"""Overload timeline: more cameras than the machine can encode in real time.

Three pipelines take the same synthetic 480p frames, paced at 30 fps, for --seconds:

- ``streamenc``: Recorder, default overflow="spill";
- ``stream``: LeRobot-style in-process encoding, a thread and a 30-frame queue per
  camera; a frame that does not fit within 0.1 s is dropped (LeRobot 0.4.4's behaviour);
- ``png``: LeRobot-style AsyncImageWriter, PNG-writing threads fed by an unbounded queue,
  then the PNGs encoded at the end.

Every 0.5 s it samples frames accepted, encoded and waiting, RSS and USS of the whole
process tree, /dev/shm bytes and temporary disk bytes, and keeps sampling after the stop
until the backlog is drained. It also measures offline conversion (overflow="block")
throughput against a single-process PyAV encode of the same frames.

    python bench/overload_bench.py [--cameras 4] [--seconds 60] [--out bench/out]
"""

from __future__ import annotations

import argparse
import json
import queue
import shutil
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import psutil

from streamenc import EncoderConfig, Recorder
from streamenc.codecs import codec_options
from streamenc.png import encode_png
from streamenc.ring import ENCODED, SHM_DIR
from streamenc.synthetic import Pacer, SyntheticCamera
from streamenc.verify import check

SIZE = (480, 640)
FPS = 30


def shm_bytes() -> int:
    return sum((Path(SHM_DIR) / e).stat().st_size for e in _listdir(SHM_DIR) if "streamenc" in e)


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def _listdir(d: str) -> list[str]:
    try:
        import os

        return os.listdir(d)
    except OSError:
        return []


def sample_memory(root_pid: int, tmp: str, t0: float, conn) -> None:
    """In its own process, so that reading /proc/*/smaps (about 20 ms a round) does not take
    the record loop's GIL or CPU: RSS and USS of root_pid's tree, /dev/shm and temp disk."""
    import os

    root, me = psutil.Process(root_pid), os.getpid()
    while True:  # one sample at once, then every 0.5 s until told to stop
        rss = uss = 0
        for p in [root, *root.children(recursive=True)]:
            if p.pid == me:
                continue
            try:
                info = p.memory_info()  # statm: smaps would take the process's memory-map lock
                rss, uss = rss + info.rss, uss + info.rss - info.shared
            except psutil.Error:
                pass
        conn.send(
            {
                "t": round(time.monotonic() - t0, 2),
                "rss": rss,
                "uss": uss,
                "shm": shm_bytes(),
                "disk": dir_bytes(Path(tmp)),
            }
        )
        if conn.poll(0.5):
            return


class Sampler(threading.Thread):
    """Samples a pipeline's counters every 0.5 s (cheap, in this process) and, through a
    separate process, the memory and disk of the whole process tree."""

    def __init__(self, counters, tmp: Path) -> None:
        import multiprocessing as mp
        import os

        super().__init__(daemon=True)
        self.counters, self.rows, self.memory, self.stop_at = counters, [], [], None
        self._halt = threading.Event()
        self.t0 = time.monotonic()
        self._conn, child = mp.Pipe()
        self._mem = mp.get_context("spawn").Process(target=sample_memory, args=(os.getpid(), str(tmp), self.t0, child))
        self._mem.start()
        if self._conn.poll(60):  # its first sample, before the pipeline under test loads the CPU
            self.memory.append(self._conn.recv())

    def _drain(self) -> None:
        try:
            while self._conn.poll():
                self.memory.append(self._conn.recv())
        except (EOFError, OSError):
            pass

    def run(self) -> None:
        while not self._halt.is_set():
            row = {"t": round(time.monotonic() - self.t0, 2)}
            row.update(self.counters())
            self.rows.append(row)
            self._drain()
            self._halt.wait(0.5)

    def halt(self) -> list[dict]:
        self._halt.set()
        self.join()
        self._conn.send("stop")
        self._mem.join(10)
        self._drain()
        memory = self.memory
        for row in self.rows:  # pair each counters row with the memory sample nearest in time
            near = min(memory, key=lambda m: abs(m["t"] - row["t"])) if memory else {}
            row.update({k: near.get(k, 0) for k in ("rss", "uss", "shm", "disk")})
        return self.rows


# -- the three pipelines ------------------------------------------------------------------


def run_streamenc(cams, seconds, tmp: Path) -> dict:
    n = int(seconds * FPS)
    accepted = [0]
    with Recorder(tmp, fps=FPS, cameras={k: SIZE for k in cams}) as rec:

        def counters():
            h = rec.health()
            return {
                "accepted": accepted[0],
                "encoded": sum(c.ring.counter("consumer", ENCODED) for c in rec._cams.values()),
                "waiting": sum(x.queued + x.spilled for x in h.values()),
                "spilled": sum(x.spilled for x in h.values()),
                "dropped": 0,
            }

        sampler = Sampler(counters, tmp)
        sampler.start()
        rec.start_episode()
        lat = pace(n, lambda i: rec.add_frame({k: c.frame(i) for k, c in cams.items()}), accepted, len(cams))
        sampler.stop_at = time.monotonic() - sampler.t0
        videos = rec.end_episode()
        rows = sampler.halt()
    back = sum(check(v.path).frames for v in videos.values())
    return summary("streamenc", rows, sampler.stop_at, lat, n * len(cams), back, dropped=0)


class StreamEncoder(threading.Thread):
    """LeRobot 0.4.4's streaming encoder, reduced: a thread per camera, a bounded queue."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.q: queue.Queue = queue.Queue(maxsize=30)
        self.path, self.encoded, self.dropped = path, 0, 0

    def feed(self, frame: np.ndarray) -> None:
        try:
            self.q.put(frame.copy(), timeout=0.1)
        except queue.Full:
            self.dropped += 1

    def run(self) -> None:
        with av.open(str(self.path), "w") as c:
            s = c.add_stream("libsvtav1", rate=FPS)
            s.height, s.width, s.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
            s.time_base = Fraction(1, FPS)
            s.options = codec_options(EncoderConfig())
            while (frame := self.q.get()) is not None:
                vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
                vf.pts = self.encoded
                for p in s.encode(vf):
                    c.mux(p)
                self.encoded += 1
            for p in s.encode(None):
                c.mux(p)


def run_stream(cams, seconds, tmp: Path) -> dict:
    n = int(seconds * FPS)
    accepted = [0]
    encs = {k: StreamEncoder(tmp / f"{k}.mp4") for k in cams}
    for e in encs.values():
        e.start()
    sampler = Sampler(
        lambda: {
            "accepted": accepted[0],
            "encoded": sum(e.encoded for e in encs.values()),
            "waiting": sum(e.q.qsize() for e in encs.values()),
            "spilled": 0,
            "dropped": sum(e.dropped for e in encs.values()),
        },
        tmp,
    )
    sampler.start()

    def add(i):
        for k, c in cams.items():
            encs[k].feed(c.frame(i))

    lat = pace(n, add, accepted, len(cams))
    sampler.stop_at = time.monotonic() - sampler.t0
    for e in encs.values():
        e.q.put(None)
    for e in encs.values():
        e.join()
    rows = sampler.halt()
    back = sum(check(e.path).frames for e in encs.values())
    return summary(
        "stream", rows, sampler.stop_at, lat, n * len(cams), back, dropped=sum(e.dropped for e in encs.values())
    )


def run_png(cams, seconds, tmp: Path) -> dict:
    n = int(seconds * FPS)
    accepted, written = [0], [0]
    q: queue.Queue = queue.Queue()  # unbounded, as AsyncImageWriter's
    lock = threading.Lock()

    def writer():
        while (item := q.get()) is not None:
            path, frame = item
            path.write_bytes(encode_png(frame))
            with lock:
                written[0] += 1

    threads = [threading.Thread(target=writer, daemon=True) for _ in range(4 * len(cams))]
    for t in threads:
        t.start()
    for k in cams:
        (tmp / k).mkdir(parents=True)
    sampler = Sampler(
        lambda: {"accepted": accepted[0], "encoded": written[0], "waiting": q.qsize(), "spilled": 0, "dropped": 0}, tmp
    )
    sampler.start()

    def add(i):
        for k, c in cams.items():
            q.put((tmp / k / f"frame-{i:06d}.png", c.frame(i).copy()))

    lat = pace(n, add, accepted, len(cams))
    sampler.stop_at = time.monotonic() - sampler.t0
    for _ in threads:
        q.put(None)
    for t in threads:
        t.join()
    back = 0
    for k in cams:  # then encode at "save_episode"
        files = sorted((tmp / k).glob("*.png"))
        with av.open(str(tmp / f"{k}.mp4"), "w") as c:
            s = c.add_stream("libsvtav1", rate=FPS)
            s.height, s.width, s.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
            s.time_base = Fraction(1, FPS)
            s.options = codec_options(EncoderConfig())
            for i, f in enumerate(files):
                with av.open(str(f)) as img:
                    vf = next(img.decode(video=0)).reformat(format="rgb24")
                vf.pts = i
                for p in s.encode(vf):
                    c.mux(p)
            for p in s.encode(None):
                c.mux(p)
        back += check(tmp / f"{k}.mp4").frames
    rows = sampler.halt()
    return summary("png", rows, sampler.stop_at, lat, n * len(cams), back, dropped=0)


def pace(n: int, add, accepted: list, cameras: int) -> np.ndarray:
    lat = np.empty(n)
    pacer = Pacer(FPS)
    for i in range(n):
        t0 = time.perf_counter()
        add(i)
        lat[i] = time.perf_counter() - t0
        accepted[0] += cameras
        pacer.wait()
    return lat * 1e3


def summary(name, rows, stop_at, lat, sent, back, dropped) -> dict:
    during = [r for r in rows if r["t"] <= stop_at] or rows
    return {
        "pipeline": name,
        "sent": sent,
        "read_back": back,
        "dropped": dropped,
        "lost": sent - back,
        "add_p99_ms": float(np.percentile(lat, 99)),
        "add_max_ms": float(lat.max()),
        "rss_first_10s_mib": max(r["rss"] for r in during if r["t"] <= 10) / 2**20,
        "rss_peak_mib": max(r["rss"] for r in rows) / 2**20,
        "uss_peak_mib": max(r["uss"] for r in rows) / 2**20,
        "disk_peak_mib": max(r["disk"] for r in rows) / 2**20,
        "shm_peak_mib": max(r["shm"] for r in rows) / 2**20,
        "stop_s": round(stop_at, 1),
        "drained_s": round(rows[-1]["t"] - stop_at, 1),
        "timeline": rows,
    }


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    for r in results:
        t = [x["t"] for x in r["timeline"]]
        (line,) = axes[0].plot(t, [x["encoded"] for x in r["timeline"]], label=f"{r['pipeline']} encoded")
        axes[0].plot(
            t,
            [x["accepted"] - x["dropped"] for x in r["timeline"]],
            ls=":",
            color=line.get_color(),
            label=f"{r['pipeline']} accepted (minus dropped)",
        )
        axes[1].plot(t, [x["rss"] / 2**20 for x in r["timeline"]], color=line.get_color(), label=r["pipeline"])
        axes[2].plot(
            t, [(x["disk"] + x["shm"]) / 2**20 for x in r["timeline"]], color=line.get_color(), label=r["pipeline"]
        )
        for ax in axes:
            ax.axvline(r["stop_s"], color=line.get_color(), ls="--", lw=0.8)
    axes[0].set_ylabel("frames (all cameras)")
    axes[1].set_ylabel("RSS, process tree (MiB)")
    axes[2].set_ylabel("temp disk + /dev/shm (MiB)")
    axes[2].set_xlabel("seconds (dashed: recording stops)")
    for ax in axes:
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)
    fig.suptitle("overload: more 480p @ 30 fps cameras than this machine encodes in real time; same frames for all")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def offline(cameras: int, frames: int) -> dict:
    """overflow="block" conversion throughput against one process encoding the same frames."""
    cams = {f"c{k}": SyntheticCamera(*SIZE, seed=k) for k in range(cameras)}
    tmp = Path(tempfile.mkdtemp(prefix="streamenc-offline-"))
    try:
        t0 = time.perf_counter()
        with Recorder(tmp, fps=FPS, cameras={k: SIZE for k in cams}, overflow="block") as rec:
            t1 = time.perf_counter()
            rec.start_episode()
            for i in range(frames):
                rec.add_frame({k: c.frame(i) for k, c in cams.items()})
            videos = rec.end_episode()
        ours = time.perf_counter() - t1
        assert all(check(v.path).in_order(frames) for v in videos.values())
        t2 = time.perf_counter()
        for k, c in cams.items():
            with av.open(str(tmp / f"{k}-single.mp4"), "w") as out:
                s = out.add_stream("libsvtav1", rate=FPS)
                s.height, s.width, s.pix_fmt, s.time_base = SIZE[0], SIZE[1], "yuv420p", Fraction(1, FPS)
                s.options = codec_options(EncoderConfig())
                for i in range(frames):
                    vf = av.VideoFrame.from_ndarray(c.frame(i), format="rgb24")
                    vf.pts = i
                    for p in s.encode(vf):
                        out.mux(p)
                for p in s.encode(None):
                    out.mux(p)
        single = time.perf_counter() - t2
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total = frames * cameras
    return {
        "cameras": cameras,
        "frames": total,
        "streamenc_fps": total / ours,
        "single_process_fps": total / single,
        "ratio": single / ours,
        "startup_s": t1 - t0,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--pipelines", default="streamenc,stream,png")
    ap.add_argument("--offline-frames", type=int, default=300)
    ap.add_argument("--out", type=Path, default=Path("bench/out"))
    ap.add_argument("--plot", type=Path, default=Path("docs/img/overload.png"))
    ap.add_argument("--from-json", type=Path, default=None, help="re-plot and re-tabulate a saved run")
    args = ap.parse_args(argv)
    cams = {f"c{k}": SyntheticCamera(*SIZE, seed=k) for k in range(args.cameras)}
    runners = {"streamenc": run_streamenc, "stream": run_stream, "png": run_png}
    results = json.loads(args.from_json.read_text()) if args.from_json else []
    for name in [] if args.from_json else args.pipelines.split(","):
        tmp = Path(tempfile.mkdtemp(prefix=f"streamenc-overload-{name}-"))
        try:
            results.append(runners[name](cams, args.seconds, tmp))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        r = {k: v for k, v in results[-1].items() if k != "timeline"}
        print(json.dumps(r), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.from_json:
        (args.out / "overload.json").write_text(json.dumps(results))
    plot(results, args.plot)
    print(f"\n{args.cameras} cameras 640x480 @ {FPS} fps for {args.seconds:g} s, paced\n")
    print(
        "| pipeline | frames sent | read back | dropped | lost | add_frame p99 / max (ms) | RSS first 10 s / peak "
        "(MiB) | USS peak (MiB) | temp disk peak (MiB) | /dev/shm peak (MiB) | drain after stop (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['pipeline']} | {r['sent']} | {r['read_back']} | {r['dropped']} | {r['lost']} | "
            f"{r['add_p99_ms']:.2f} / {r['add_max_ms']:.1f} | {r['rss_first_10s_mib']:.0f} / {r['rss_peak_mib']:.0f} | "
            f"{r['uss_peak_mib']:.0f} | {r['disk_peak_mib']:.0f} | {r['shm_peak_mib']:.0f} | {r['drained_s']} |"
        )
    if args.offline_frames:
        print("\n| cameras | frames | streamenc block (fps) | one process, PyAV (fps) | speed-up |")
        print("|---|---|---|---|---|")
        for k in (1, 2, 4):
            o = offline(k, args.offline_frames)
            print(
                f"| {k} | {o['frames']} | {o['streamenc_fps']:.1f} | {o['single_process_fps']:.1f} | "
                f"{o['ratio']:.2f}x |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
