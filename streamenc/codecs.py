"""Encoder settings and the codec probe.

Settings use LeRobot's names and defaults (vcodec, pix_fmt, g, crf, preset,
fast_decode) and are mapped per encoder family. The probe opens a real encoder
session and encodes one frame: FFmpeg listing an encoder (what LeRobot 0.4.4's
vcodec="auto" checks) says nothing about whether a GPU or driver is there.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from typing import cast

import av
import numpy as np

from . import sched
from .errors import ConfigError, EncoderUnavailable
from .sched import SETTINGS

log = logging.getLogger("streamenc")

NVENC = ("h264_nvenc", "hevc_nvenc", "av1_nvenc")
AUTO_ORDER = (*NVENC, "libsvtav1", "libx264")
PROBED = (*AUTO_ORDER, "libx265")  # libx265 only when asked (LeRobot's "hevc"): slow for RGB
KNOWN = frozenset(PROBED)
PIX_FMTS = frozenset({"yuv420p", "yuv444p", "yuv420p10le", "gray12le"})
DEPTH_PIX_FMT = "gray12le"  # 12-bit depth codes (LeRobot 0.6's depth format), libx265 only
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
PROBE_SIZE = (256, 256)  # NVENC refuses frames narrower than 145 px
# "auto": SCHED_IDLE while the encoders keep up, so the record loop always comes first;
# SCHED_OTHER (their fair share, never more) once they fall behind or the recorder waits for
# them, so a busy machine cannot starve them; SCHED_BATCH where the recorder may not steer
# them (no CAP_SYS_NICE). Chosen by measurement: docs/tuning.md, Scheduling.
DEFAULT_SCHED = "auto"


def quiet_svt() -> None:
    """SVT-AV1 prints its banner to stderr unless told otherwise; keep only its errors."""
    os.environ.setdefault("SVT_LOG", "1")


def default_threads(cameras: int = 1) -> int:
    """Encoder threads per camera: the cores we may use, split across the cameras."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, cameras))


@dataclass(frozen=True)
class EncoderConfig:
    """How each camera is encoded. Names and defaults follow LeRobot.

    ``vcodec="auto"`` takes the first encoder of NVENC, SVT-AV1, x264 that really
    opens on this machine. ``preset`` is SVT's 0..13, x264's name, or NVENC's 1..7
    (p1..p7); None picks a real-time default per encoder. ``threads`` caps each
    encoder (SVT ``lp``, x264 ``threads``); None splits the cores across the cameras.

    ``sched``, ``nice`` and ``cpus`` place the encoder processes for the CPU scheduler:
    "auto" (default: idle while they keep up, their fair share once they fall behind or
    are waited for), or one normal policy ("other", "batch" or "idle"; never a real-time
    one, see sched.py); a nice value 0..19; optionally the CPUs they may run on.
    """

    vcodec: str = "libsvtav1"
    pix_fmt: str = "yuv420p"
    g: int = 2
    crf: int = 30
    preset: int | str | None = None
    fast_decode: int = 0
    threads: int | None = None
    extra: dict[str, str] = field(default_factory=dict)
    sched: str = DEFAULT_SCHED
    nice: int = 0
    cpus: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.vcodec != "auto" and self.vcodec not in KNOWN:
            raise ConfigError(f"vcodec {self.vcodec!r} is not one of auto, {', '.join(PROBED)}")
        if self.pix_fmt not in PIX_FMTS:
            raise ConfigError(f"pix_fmt {self.pix_fmt!r} is not one of {sorted(PIX_FMTS)}")
        if not isinstance(self.g, int) or self.g < 1:
            raise ConfigError(f"g (keyframe interval) must be an int >= 1, got {self.g!r}")
        if not isinstance(self.crf, int) or not 0 <= self.crf <= 63:
            raise ConfigError(f"crf must be an int in 0..63, got {self.crf!r}")
        if self.fast_decode not in (0, 1, 2):
            raise ConfigError(f"fast_decode must be 0, 1 or 2, got {self.fast_decode!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ConfigError(f"threads must be None or an int >= 1, got {self.threads!r}")
        if self.sched not in SETTINGS:
            raise ConfigError(f"sched must be one of {', '.join(SETTINGS)}, got {self.sched!r}")
        if not isinstance(self.nice, int) or not 0 <= self.nice <= 19:
            raise ConfigError(f"nice must be an int in 0..19 (encoders never outrank the loop), got {self.nice!r}")
        if self.cpus is not None:
            cpus = tuple(self.cpus) if isinstance(self.cpus, (list, tuple, set, frozenset)) else None
            allowed = os.sched_getaffinity(0)
            if not cpus or not all(isinstance(c, int) and c in allowed for c in cpus):
                raise ConfigError(
                    f"cpus must be a non-empty set of this process's CPUs {sorted(allowed)}, got {self.cpus!r}"
                )
            object.__setattr__(self, "cpus", tuple(sorted(set(cpus))))
        if self.vcodec != "auto":
            codec_options(self, self.vcodec)  # validates preset and crf for that family

    def with_codec(self, vcodec: str) -> EncoderConfig:
        return dataclasses.replace(self, vcodec=vcodec)

    @property
    def depth(self) -> bool:
        """Settings for a depth camera: 12-bit gray codes."""
        return self.pix_fmt == DEPTH_PIX_FMT


def depth_config(**changes: object) -> EncoderConfig:
    """Depth cameras' default: LeRobot 0.6's DepthEncoderConfig (libx265, gray12le,
    lossless), at x265's "ultrafast" preset: lossless is lossless at every preset, so the
    preset only trades file size (~1.1x) for speed, and x265's default ("medium") cannot
    keep up with one 640x480 camera at 30 fps on 2 cores (docs/benchmarks.md)."""
    base = {
        "vcodec": "libx265",
        "pix_fmt": DEPTH_PIX_FMT,
        "preset": "ultrafast",
        "extra": {"x265-params": "lossless=1"},
    }
    return EncoderConfig(**{**base, **changes})  # type: ignore[arg-type]


def _family(vcodec: str) -> str:
    return "nvenc" if vcodec in NVENC else vcodec


def codec_options(cfg: EncoderConfig, vcodec: str | None = None, threads: int | None = None) -> dict[str, str]:
    """FFmpeg options for ``vcodec`` (default cfg.vcodec) from LeRobot-style settings."""
    vcodec = vcodec or cfg.vcodec
    threads = threads or cfg.threads
    fam = _family(vcodec)
    opts: dict[str, str] = {"g": str(cfg.g)}
    if fam == "libsvtav1":
        preset = 12 if cfg.preset is None else cfg.preset
        if not isinstance(preset, int) or not -1 <= preset <= 13:
            raise ConfigError(f"libsvtav1 preset must be an int in -1..13, got {preset!r}")
        opts.update(crf=str(cfg.crf), preset=str(preset))
        params = []
        if threads:
            params.append(f"lp={threads}")
        if cfg.g == 2:
            # A keyframe every other frame leaves nothing to look ahead at and no long
            # mini-GOP to build: both settings give byte-identical video (tests/test_codecs.py;
            # not so at g=1). SVT then holds 8 frames at the end of a paced episode (11 with
            # the look-ahead off alone), so the flush that end_episode waits for is short.
            params.append("lookahead=0:hierarchical-levels=2")
        if cfg.fast_decode:
            params.append(f"fast-decode={cfg.fast_decode}")
        if params:
            opts["svtav1-params"] = ":".join(params)
    elif fam == "libx264":
        preset = _x26x_preset(cfg, fam)
        # no B-frames: in fragmented MP4 they push the first pts one frame late, which
        # breaks timestamp-based frame lookup (LeRobot's); fewer frames in flight, too
        opts.update(crf=str(cfg.crf), preset=str(preset), bf="0")
        if threads:
            opts["threads"] = str(threads)
        if cfg.fast_decode:
            opts["tune"] = "fastdecode"
    elif fam == "libx265":
        preset = _x26x_preset(cfg, fam)
        params = ["bframes=0", "log-level=error"]  # no B-frames, as for x264; quiet on stderr
        if threads:
            params.append(f"pools={threads}")
        opts.update(crf=str(cfg.crf), preset=str(preset))
        if cfg.fast_decode:
            opts["tune"] = "fastdecode"
        opts["x265-params"] = ":".join(params)
    elif fam == "nvenc":
        preset = 4 if cfg.preset is None else cfg.preset
        if isinstance(preset, str) and preset.startswith("p") and preset[1:].isdigit():
            preset = int(preset[1:])
        if not isinstance(preset, int) or not 1 <= preset <= 7:
            raise ConfigError(f"NVENC preset must be 1..7 (p1..p7), got {cfg.preset!r}")
        if cfg.crf > 51:
            raise ConfigError(f"NVENC cq (crf) must be in 0..51, got {cfg.crf}")
        opts.update(preset=f"p{preset}", rc="vbr", cq=str(cfg.crf), b="0")
    else:
        raise ConfigError(f"no option mapping for {vcodec!r}")
    if cfg.pix_fmt == DEPTH_PIX_FMT and fam != "libx265":
        raise ConfigError(f"pix_fmt {DEPTH_PIX_FMT} (depth) is encoded with libx265 only, not {vcodec}")
    for key, value in cfg.extra.items():  # the user's "x265-params" etc. add to ours; theirs win
        opts[key] = f"{opts[key]}:{value}" if key.endswith("-params") and key in opts else str(value)
    return opts


def _x26x_preset(cfg: EncoderConfig, family: str) -> str:
    """x264's and x265's shared settings, checked: the preset (default "veryfast") and crf."""
    preset = "veryfast" if cfg.preset is None else cfg.preset
    if preset not in X264_PRESETS:
        raise ConfigError(f"{family} preset must be one of {', '.join(X264_PRESETS)}, got {preset!r}")
    if cfg.crf > 51:
        raise ConfigError(f"{family} crf must be in 0..51, got {cfg.crf}")
    return preset


def input_format(vcodec: str) -> str:
    """The pixel format frames are handed to the encoder in. NVENC takes packed RGB and
    converts to YUV on the GPU; the CPU encoders get yuv converted by swscale."""
    return "rgb0" if _family(vcodec) == "nvenc" else ""


def stream_pix_fmt(cfg: EncoderConfig, vcodec: str) -> str:
    return input_format(vcodec) or cfg.pix_fmt


@dataclass(frozen=True)
class EncoderInfo:
    """One probe result: whether ``name`` opened a session, and FFmpeg's words if not.
    ``realtime``: opening it moved the opening thread to a real-time class (SVT-AV1 does
    that where the process may); the probe put the thread back, and encoder processes
    give up that right before they open a codec."""

    name: str
    usable: bool
    reason: str
    realtime: bool = False


# What FFmpeg says when NVENC cannot open, and what it means for the user, first match wins.
_CAUSES = (
    ("libcuda.so", "no NVIDIA driver here (libcuda.so.1 cannot be loaded); NVENC needs an NVIDIA GPU and its driver"),
    ("libnvidia-encode", "the NVIDIA driver has no NVENC library (libnvidia-encode.so.1): install the full driver"),
    ("no capable devices", "this GPU has no NVENC encoder (e.g. H100, H200, A100); use libsvtav1 or libx264"),
    ("unsupported device", "this GPU has no NVENC encoder (e.g. H100, H200, A100); use libsvtav1 or libx264"),
    ("no nvenc capable", "this GPU has no NVENC encoder (e.g. H100, H200, A100); use libsvtav1 or libx264"),
    ("required nvenc api version", "the NVIDIA driver is older than this FFmpeg's NVENC needs: update the driver"),
    ("incompatible client key", "the GPU's NVENC session limit is reached (consumer cards allow a few at once)"),
    ("out of memory", "NVENC could not open a session: the session limit, or GPU memory, is used up"),
    ("cuda_error_no_device", "no CUDA device is visible (CUDA_VISIBLE_DEVICES, or a container without --gpus)"),
    ("no cuda-capable device", "no CUDA device is visible (CUDA_VISIBLE_DEVICES, or a container without --gpus)"),
)


def rejection_cause(text: str) -> str:
    """The cause of an encoder's rejection in words a user can act on, from FFmpeg's log
    text (the exception alone says only "Operation not permitted"); "" if not known."""
    low = text.lower()
    return next((cause for key, cause in _CAUSES if key in low), "")


_lock = threading.Lock()
_cache: dict[tuple, EncoderInfo] = {}
_logged: set[tuple] = set()


def _try_open(vcodec: str, cfg: EncoderConfig) -> EncoderInfo:
    try:
        av.codec.Codec(vcodec, "w")
    except Exception as e:  # not built into this FFmpeg
        return EncoderInfo(vcodec, False, f"not in this FFmpeg build: {e}")
    w, h = PROBE_SIZE
    level = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)  # FFmpeg's reason ("Cannot load libcuda.so.1") goes to the logs
    realtime = False
    with av.logging.Capture(local=False) as logs, sched.kept_schedule():
        try:
            ctx = cast(av.VideoCodecContext, av.CodecContext.create(vcodec, "w"))
            ctx.width, ctx.height = w, h
            ctx.pix_fmt = stream_pix_fmt(cfg, vcodec)
            ctx.time_base = Fraction(1, 30)
            ctx.framerate = Fraction(30, 1)
            ctx.options = codec_options(cfg, vcodec, threads=1)
            frame = av.VideoFrame.from_ndarray(np.zeros((h, w, 3), np.uint8), format="rgb24")
            frame = frame.reformat(format=ctx.pix_fmt)
            frame.pts = 0
            packets = list(ctx.encode(frame))
            realtime = os.sched_getscheduler(0) in sched.REALTIME
            packets += list(ctx.encode(None))
            if not packets:
                return EncoderInfo(vcodec, False, "opened but produced no packet for one frame", realtime)
        except Exception as e:
            text = "; ".join(m.strip() for _, _, m in logs if m.strip())
            detail = f"{type(e).__name__}: {e}"
            if text and text not in detail:
                detail += f" | ffmpeg: {text}"
            cause = rejection_cause(f"{text} {e}")
            return EncoderInfo(vcodec, False, f"{cause} ({detail})" if cause else detail, realtime)
        finally:
            av.logging.set_level(level)
    return EncoderInfo(vcodec, True, "opened a session and encoded a frame", realtime)


def probe(config: EncoderConfig | None = None, refresh: bool = False) -> list[EncoderInfo]:
    """Try every known encoder with ``config``'s options. Cached per process."""
    cfg = config or EncoderConfig()
    quiet_svt()
    out = []
    with _lock:
        for name in PROBED:
            try:
                opts = tuple(sorted(codec_options(cfg, name, threads=1).items()))
            except ConfigError as e:
                out.append(EncoderInfo(name, False, f"settings do not fit this encoder: {e}"))
                continue
            key = (name, cfg.pix_fmt, opts)
            if refresh or key not in _cache:
                _cache[key] = _try_open(name, cfg)
            out.append(_cache[key])
    return out


def select(config: EncoderConfig) -> str:
    """The encoder to use. ``auto`` takes the first usable in NVENC, SVT-AV1, x264 order;
    a named encoder that does not open raises EncoderUnavailable, never a silent fallback."""
    results = probe(config)
    usable = [r.name for r in results if r.usable]
    if config.vcodec == "auto":
        candidates = [name for name in usable if name in AUTO_ORDER]
        if not candidates:
            reasons = "; ".join(f"{r.name}: {r.reason}" for r in results if r.name in AUTO_ORDER)
            raise EncoderUnavailable(f"no usable video encoder on this machine ({reasons})")
        choice = candidates[0]
    else:
        info = next(r for r in results if r.name == config.vcodec)
        if not info.usable:
            raise EncoderUnavailable(
                f"{config.vcodec} cannot be used here: {info.reason}. "
                f"Usable: {', '.join(usable) or 'none'}; vcodec='auto' picks the first of them."
            )
        choice = config.vcodec
    key = (config.vcodec, choice)
    if key not in _logged:
        _logged.add(key)
        rejected = ", ".join(r.name for r in results if not r.usable)
        log.info("streamenc: encoder %s (asked for %s; rejected: %s)", choice, config.vcodec, rejected or "none")
    return choice
