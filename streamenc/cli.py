"""The ``streamenc`` command: ``probe``, ``record``, ``bench``, ``clean``.

User errors are one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from .errors import ConfigError, StreamencError


def cmd_probe(args: argparse.Namespace) -> int:
    from .codecs import probe
    from .sched import realtime_allowed
    from .segments import SHM_DIR, shm_free_bytes

    results = probe()
    free = shm_free_bytes()
    gpus = _nvidia()
    allowed = realtime_allowed()
    went = [r.name for r in results if r.realtime]
    if args.json:
        realtime = {"allowed": allowed, "codecs_that_went_realtime": went, "prevented_in_encoders": True}
        print(
            json.dumps(
                {"encoders": [r.__dict__ for r in results], "shm_free_bytes": free, "gpus": gpus, "realtime": realtime}
            )
        )
        return 0
    for r in results:
        print(f"{r.name:12s} {'usable' if r.usable else 'no':6s}  {r.reason}")
    print(_realtime_line(allowed, went))
    for g in gpus:
        if "error" in g:
            print(f"gpu: {g['error']}")
        else:
            print(
                f"gpu {g['index']}: {g['name']}, encoder capacity {g['encoder_capacity']}%, "
                f"{g['encoder_sessions']} encoder sessions open"
            )
    print(f"{SHM_DIR}: {free / 2**20:.0f} MiB free")
    return 0


def _realtime_line(allowed: str | None, went: list[str]) -> str:
    if not allowed:
        return "real-time: no thread here may enter a real-time class, so no encoder can starve the record loop"
    what = (
        f"{', '.join(went)} moved its opening thread to real-time priority (SCHED_FIFO)"
        if went
        else ("a codec may move its threads to real-time priority (SVT-AV1 asks for SCHED_FIFO 99)")
    )
    return (
        f"real-time: this process may use real-time scheduling ({allowed}); {what}. Encoders run like that "
        "would starve the record loop; streamenc's encoder processes give up that right before they open a "
        "codec and check their threads after each open"
    )


def _nvidia() -> list[dict]:
    """GPU names and encoder sessions through NVML, when nvidia-ml-py is installed."""
    try:
        import pynvml
    except ImportError:
        return [{"error": "no NVML (pip install nvidia-ml-py to list NVIDIA GPUs)"}]
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        return [{"error": f"no NVIDIA driver ({e})"}]
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            try:
                capacity = pynvml.nvmlDeviceGetEncoderCapacity(h, pynvml.NVML_ENCODER_QUERY_H264)
                sessions = len(pynvml.nvmlDeviceGetEncoderSessions(h))
            except pynvml.NVMLError as e:  # no NVENC on this GPU (e.g. H100)
                capacity, sessions = 0, f"none ({e})"
            out.append(
                {
                    "index": i,
                    "name": name if isinstance(name, str) else name.decode(),
                    "encoder_capacity": capacity,
                    "encoder_sessions": sessions,
                }
            )
        return out
    finally:
        pynvml.nvmlShutdown()


def cmd_clean(args: argparse.Namespace) -> int:
    from .segments import PREFIX, SHM_DIR, clean_stale
    from .spill import stale_spills

    removed = clean_stale(dry_run=args.dry_run)
    live = {e for e in os.listdir(SHM_DIR) if e.startswith(PREFIX)} - set(removed)
    spills = stale_spills([Path(p) for p in args.paths], live)
    if not args.dry_run:
        for path, _ in spills:
            path.unlink(missing_ok=True)
    verb = "would remove" if args.dry_run else "removed"
    if args.json:
        files = [{"path": str(p), "frames": n} for p, n in spills]
        print(json.dumps({"dry_run": args.dry_run, "entries": removed, "spill_files": files}))
        return 0
    for name in removed:
        print(f"{verb} {SHM_DIR}/{name}")
    for path, frames in spills:
        print(f"{verb} {path} ({frames} frames)")
    print(f"{len(removed)} stale shared-memory entries and {len(spills)} spill files {verb}")
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    from .codecs import EncoderConfig
    from .depth import Depth
    from .recorder import Recorder
    from .synthetic import Pacer, SyntheticCamera, SyntheticDepth
    from .verify import check_depth

    if not args.synthetic:
        raise ConfigError("only synthetic cameras can be recorded from the command line: add --synthetic")
    w, h = _size(args.size)
    names = [f"cam{i}" for i in range(args.cameras)]
    cams: dict = {n: SyntheticCamera(h, w, seed=i) for i, n in enumerate(names)}
    declared: dict = dict.fromkeys(names, (h, w))
    if args.depth:
        cams["depth"], declared["depth"] = SyntheticDepth(h, w, args.depth), Depth(h, w, args.depth)
    n = int(round(args.seconds * args.fps))
    lat = []
    with Recorder(args.out, args.fps, declared, EncoderConfig(vcodec=args.codec)) as rec:
        print(
            f"recording {args.cameras} x {w}x{h} @ {args.fps} fps for {args.seconds:g} s with {rec.codec} "
            f"into {args.out}",
            file=sys.stderr,
        )
        rec.start_episode()
        pacer, t0, shown = Pacer(args.fps), time.monotonic(), 0.0
        for i in range(n):
            frames = {k: c.frame(i) for k, c in cams.items()}
            t = time.perf_counter()
            rec.add_frame(frames)
            lat.append(time.perf_counter() - t)
            pacer.wait()
            now = time.monotonic() - t0
            if now - shown >= 0.5 or i == n - 1:
                shown = now
                status = " | ".join(f"{k} q{h.queued} spill{h.spilled} enc{h.encoded}" for k, h in rec.health().items())
                print(f"\r{now:5.1f}s {(i + 1) / max(now, 1e-9):5.1f} fps | {status}", end="", file=sys.stderr)
        print(file=sys.stderr)
        t = time.perf_counter()
        videos = rec.end_episode()
        end_s = time.perf_counter() - t
    p99 = sorted(lat)[int(0.99 * (len(lat) - 1))] * 1e3
    for name, v in videos.items():
        line = f"{name}: {v.frames} frames -> {v.path}"
        if name == "depth":
            c = check_depth(v.path, cams[name], declared[name])
            same = c.in_order(n)
            line += f" ({v.codec}; 12-bit codes {'identical' if same else 'NOT identical'} to the frames sent)"
        print(line)
    print(f"codec {rec.codec}; add_frame p99 {p99:.2f} ms; missed deadlines {pacer.missed}; end_episode {end_s:.2f} s")
    return 0


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--size must be WIDTHxHEIGHT, e.g. 640x480, got {text!r}") from None
    return w, h


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def _list(kind):
    def parse(text: str):
        try:
            return [kind(x) for x in text.split(",") if x]
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a comma-separated list of {kind.__name__}: {text!r}") from None

    return parse


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench.harness import sweep
    from .bench.memory import MemoryCgroup
    from .bench.report import verdict
    from .bench.runs import PIPELINES, plan

    bad = set(args.pipelines or []) - set(PIPELINES)
    if bad:
        raise ConfigError(f"unknown pipelines {sorted(bad)}; known: {', '.join(PIPELINES)}")
    common = {
        k: v
        for k, v in (
            ("seconds", args.seconds),
            ("episodes", args.episodes),
            ("limit_as_mib", args.limit_as),
            ("memory_limit_mib", args.memory_limit),
            ("video", args.video),
            ("sched", args.sched),
            ("nice", args.nice),
            ("cpus", tuple(args.cpus) if args.cpus else None),
        )
        if v is not None
    }
    if args.video and not Path(args.video).is_file():
        raise ConfigError(f"--video {args.video}: no such file")
    if args.memory_limit:
        MemoryCgroup(args.memory_limit).remove()  # fail now, not after the first runs
    try:
        runs = plan(
            args.quick,
            args.pipelines,
            args.cameras,
            args.sizes,
            args.codecs,
            args.pressure,
            args.load,
            args.reset,
            args.content,
            **common,
        )
    except ValueError as e:
        raise ConfigError(str(e)) from None
    lines = sweep(runs, Path(args.out))
    for line in lines:
        print(f"{line['config']:32s} {line['pipeline']:10s} {verdict(line)}")
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0 if all(line.get("ok") for line in lines) else 1


def cmd_repair(args: argparse.Namespace) -> int:
    from .lerobot import recovery  # pyarrow, which LeRobot brings; LeRobot itself is not imported

    return recovery.main(args)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="streamenc", description="Record robot camera frames straight to video.")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("probe", help="which encoders really open here, and why not")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_probe)
    p = sub.add_parser("record", help="a real recording of synthetic cameras, with a live status line")
    p.add_argument("--synthetic", action="store_true", help="camera-like generated frames (the only source)")
    p.add_argument("--cameras", type=_positive(int), default=2)
    p.add_argument("--size", default="640x480", help="WIDTHxHEIGHT")
    p.add_argument("--fps", type=_positive(int), default=30)
    p.add_argument("--seconds", type=_positive(float), default=10.0)
    p.add_argument("--codec", default="auto", help="auto, libsvtav1, libx264, h264_nvenc, ...")
    p.add_argument("--depth", choices=["uint16", "float32"], help="add a synthetic depth camera (mm or m)")
    p.add_argument("--out", default="streamenc-recording")
    p.set_defaults(func=cmd_record)
    p = sub.add_parser("bench", help="compare recording pipelines on this machine (memory-pressure harness)")
    p.add_argument("--quick", action="store_true", help="1 camera at 240p for 2 s: does it work here?")
    p.add_argument("--pipelines", type=_list(str), help="comma-separated: png,stream,streamenc")
    p.add_argument("--cameras", type=_list(int), help="e.g. 1,2,4,8")
    p.add_argument("--sizes", type=_list(str), help="e.g. 480p,720p,1080p")
    p.add_argument("--codecs", type=_list(str), help="e.g. libsvtav1,libx264,h264_nvenc")
    p.add_argument("--pressure", type=_list(float), help="shares of available RAM held during runs, e.g. 0,0.5")
    p.add_argument(
        "--load",
        type=_list(str),
        help="competing programs: 0, 1, 2 (busy at nice 0, other sessions), 2own (one of them in the "
        "recorder's session), policy (bursty numpy work in its session), policy1 (and 1 busy)",
    )
    p.add_argument("--reset", type=_list(float), help="seconds the loop runs on before each save, e.g. 0,10")
    p.add_argument("--limit-as", type=_positive(int), help="RLIMIT_AS of the recording process, MiB")
    p.add_argument("--memory-limit", type=_positive(int), help="memory cgroup around each run's process tree, MiB")
    p.add_argument("--seconds", type=_positive(float), help="per episode (default 5)")
    p.add_argument("--episodes", type=_positive(int))
    p.add_argument("--video", help="take frames from this video file instead of synthetic ones")
    p.add_argument(
        "--content",
        type=_list(str),
        help="synthetic frames: synthetic (smooth gradients, the default), scene (a rendered tabletop with a "
        "moving arm), or both: synthetic,scene",
    )
    p.add_argument("--sched", choices=["other", "batch", "idle", "auto"], help="streamenc encoders' scheduling policy")
    p.add_argument("--nice", type=int, help="streamenc encoders' nice value, 0..19")
    p.add_argument("--cpus", type=_list(int), help="CPUs for streamenc's encoders, e.g. 1")
    p.add_argument("--out", default="streamenc-bench")
    p.set_defaults(func=cmd_bench)
    p = sub.add_parser("clean", help="remove shared memory and spill files left by dead recorders")
    p.add_argument("paths", nargs="*", default=["."], help="recording roots to search for spill files (default .)")
    p.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_clean)
    p = sub.add_parser("repair", help="restore a LeRobot dataset a crash interrupted (every saved episode)")
    p.add_argument("root", help="the dataset's root directory")
    p.add_argument("--dry-run", action="store_true", help="only say what would be done")
    p.add_argument("--json", action="store_true", help="write the report as JSON")
    p.add_argument(
        "--keep-partial",
        action="store_true",
        help="keep the episode the crash interrupted, with its frames durable in both rows and video",
    )
    p.set_defaults(func=cmd_repair)
    args = ap.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so a recording is finalized and a bench run's processes ended
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return args.func(args)
    except (StreamencError, OSError) as e:
        print(f"streamenc: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("streamenc: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
