"""What a benchmark measures: one Run is a pipeline on one configuration; ``plan`` makes
the runs of a sweep."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PIPELINES = ("png", "stream", "streamenc")
CONTENTS = ("synthetic", "scene")  # synthetic.SyntheticCamera, synthetic.SceneCamera
SIZES = {"240p": (240, 320), "480p": (480, 640), "720p": (720, 1280), "1080p": (1080, 1920)}


@dataclass(frozen=True)
class Run:
    """One measured run: a pipeline on one configuration."""

    pipeline: str
    cameras: int = 2
    size: str = "480p"
    codec: str = "libsvtav1"
    pressure: float = 0.0  # share of available RAM held by another process during the run
    limit_as_mib: int | None = None  # RLIMIT_AS of the recording process
    memory_limit_mib: int | None = None  # a memory cgroup around the recording process tree
    seconds: float = 5.0
    episodes: int = 1
    fps: int = 30
    video: str | None = None  # frames from this file instead of synthetic ones
    content: str = "synthetic"  # or "scene": a rendered tabletop with a moving arm (CONTENTS)
    # streamenc's encoder scheduling (EncoderConfig sched / nice / cpus); None: the default
    sched: str | None = None
    nice: int | None = None
    cpus: tuple[int, ...] | None = None
    # competing load (load.py): busy programs at nice 0, how many of them in the recorder's
    # own session, a bursty policy in its session; and how long the loop runs on after each
    # episode before it is saved (lerobot-record's reset period)
    busy: int = 0
    busy_own: int = 0
    policy: bool = False
    reset_s: float = 0.0

    @property
    def config(self) -> str:
        out = f"{self.cameras}x{self.size} {self.codec}"
        if self.content != "synthetic" and not self.video:
            out += f" {self.content}"
        if self.sched:
            out += f" sched {self.sched}"
        if self.nice is not None:
            out += f" nice {self.nice}"
        if self.cpus:
            out += f" cpus {','.join(map(str, self.cpus))}"
        if self.busy:
            out += f" busy {self.busy}" + (f" ({self.busy_own} own)" if self.busy_own else "")
        if self.policy:
            out += " policy"
        if self.reset_s:
            out += f" reset {self.reset_s:g}s"
        if self.pressure:
            out += f" pressure {self.pressure:.0%}"
        if self.limit_as_mib:
            out += f" AS<={self.limit_as_mib}MiB"
        if self.memory_limit_mib:
            out += f" cgroup<={self.memory_limit_mib}MiB"
        return out


LOADS = {  # the --load axis: name -> Run fields
    "0": {},
    "1": {"busy": 1},
    "2": {"busy": 2},
    "2own": {"busy": 2, "busy_own": 1},
    "policy": {"policy": True},
    "policy1": {"policy": True, "busy": 1},
}


def load(name: str) -> dict[str, Any]:
    """The Run fields of a --load value: 0, 1 or 2 busy programs in other sessions, "2own"
    (2, one of them in the recorder's session), "policy" (bursty, in the recorder's session),
    "policy1" (that and 1 busy program)."""
    if name not in LOADS:
        raise ValueError(f"unknown load {name!r}; known: {', '.join(LOADS)}")
    return LOADS[name]


def scheduling(run: Run) -> dict[str, Any]:
    """The run's EncoderConfig scheduling fields that differ from the default."""
    options = {"sched": run.sched, "nice": run.nice, "cpus": tuple(run.cpus) if run.cpus else None}
    return {k: v for k, v in options.items() if v is not None}


def plan(
    quick: bool = False,
    pipelines: list[str] | None = None,
    cameras: list[int] | None = None,
    sizes: list[str] | None = None,
    codecs: list[str] | None = None,
    pressures: list[float] | None = None,
    loads: list[str] | None = None,
    resets: list[float] | None = None,
    contents: list[str] | None = None,
    **common: Any,
) -> list[Run]:
    """The runs of a sweep. Any axis given, or ``quick``: the product of the given axes,
    the others at 2 cameras, 480p, libsvtav1, no pressure (``quick``: 1 camera at 240p
    for 2 s). Otherwise the default sweep: cameras 1/2/4 at 480p, then 2 cameras at 720p
    and 1080p, with x264 (and NVENC where the probe opens it), and at 50% memory pressure.
    ``loads`` (load()), ``resets`` (seconds) and ``contents`` (CONTENTS) are axes too."""
    pipelines = pipelines or list(PIPELINES)
    if quick:
        common = {"seconds": 2.0, "episodes": 1, **common}
    if quick or any(x is not None for x in (cameras, sizes, codecs, pressures, loads, resets, contents)):
        configs = [
            {"cameras": c, "size": s, "codec": k, "pressure": p, **load(ld), "reset_s": r, "content": m}
            for m in contents or ["synthetic"]
            for c in cameras or [1 if quick else 2]
            for s in sizes or ["240p" if quick else "480p"]
            for k in codecs or ["libsvtav1"]
            for p in pressures or [0.0]
            for ld in loads or ["0"]
            for r in resets or [0.0]
        ]
    else:
        from ..codecs import NVENC, probe

        nvenc = [r.name for r in probe() if r.usable and r.name in NVENC][:1]
        configs = [{"cameras": c} for c in (1, 2, 4)]
        configs += [{"size": s} for s in ("720p", "1080p")]
        configs += [{"codec": k} for k in ("libx264", *nvenc)]
        configs += [{"pressure": 0.5}]
    for cfg in configs:
        if cfg.get("content", "synthetic") not in CONTENTS:
            raise ValueError(f"unknown content {cfg['content']!r}; known: {', '.join(CONTENTS)}")
        if cfg.get("size", "480p") not in SIZES:
            raise ValueError(f"unknown size {cfg['size']!r}; known: {', '.join(SIZES)}")
    return [Run(pipeline=p, **cfg, **common) for cfg in configs for p in pipelines]
