"""The config mapping: LeRobot's encoder settings and codec names to streamenc's, and back.

A dataset carries LeRobot's choice of codec and settings (0.6.x: an ``RGBEncoderConfig``
and a ``DepthEncoderConfig``; older lines: a codec name). streamenc records with the same
choice where it has that encoder, overridden by ``install()``'s options, and writes what it
really used back, because LeRobot writes info.json's ``video.*`` fields from it. The
reading and writing of LeRobot's attributes is in ``seams.py``; this module holds the
translation only.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from typing import Any

from ..codecs import NVENC, EncoderConfig, codec_options, probe
from ..errors import ConfigError

log = logging.getLogger("streamenc")

# LeRobot's codec names -> ours. libaom-av1 writes the same format as SVT-AV1, many times
# slower: SVT-AV1 records it. Hardware names other than NVENC have no streamenc path.
_TO_OURS = {
    "libsvtav1": "libsvtav1",
    "av1": "libsvtav1",
    "libaom-av1": "libsvtav1",
    "h264": "libx264",
    "hevc": "libx265",
    "auto": "auto",
    **{n: n for n in NVENC},
}
_TO_LEROBOT = {
    "libsvtav1": "libsvtav1",
    "libx264": "h264",
    "libx265": "hevc",
    "h264_nvenc": "h264_nvenc",
    "hevc_nvenc": "hevc_nvenc",
}
_CONFIG_FIELDS = {f.name for f in dataclasses.fields(EncoderConfig)}
_RECORDER_OPTIONS = ("overflow", "slots", "warn_behind_s")
_SHARED_WITH_DEPTH = ("sched", "nice", "cpus", "threads")  # encoder options that apply to depth keys too
DEPTH_DTYPE = {"mm": "uint16", "m": "float32"}  # LeRobot's depth_unit -> the ring's dtype


@dataclasses.dataclass(frozen=True)
class InstallOptions:
    """``install()``'s keyword options, sorted by who takes them."""

    encoder: dict[str, Any]  # EncoderConfig fields for the RGB keys
    recorder: dict[str, Any]  # Recorder options (overflow, slots, warn_behind_s)
    depth_dtype: str  # the depth frames' dtype until the dataset's depth_unit says
    depth: dict[str, Any]  # EncoderConfig fields for the depth keys: depth_<field>, and the scheduling


def split_options(options: dict[str, Any]) -> InstallOptions:
    """Sort ``install()``'s options; ConfigError for a ``depth_<field>`` that is no field.
    Unknown encoder options are refused later, by ``encoder_config``."""
    rest = dict(options)
    recorder = {k: rest.pop(k) for k in _RECORDER_OPTIONS if k in rest}
    depth_dtype = str(rest.pop("depth_dtype", "uint16"))
    depth = {k[len("depth_") :]: rest.pop(k) for k in list(rest) if k.startswith("depth_")}
    unknown = set(depth) - _CONFIG_FIELDS
    if unknown:
        raise ConfigError(f"unknown depth options {sorted('depth_' + k for k in unknown)}")
    shared = {k: rest[k] for k in _SHARED_WITH_DEPTH if k in rest}
    return InstallOptions(rest, recorder, depth_dtype, {**shared, **depth})


def _fields_of(lerobot_cfg: Any) -> dict[str, Any]:
    """EncoderConfig fields from a LeRobot 0.6 RGBEncoderConfig or DepthEncoderConfig: those
    it sets (a None leaves ours), its codec name aside."""
    out: dict[str, Any] = {
        "fast_decode": int(lerobot_cfg.fast_decode or 0),
        "extra": {str(k): str(v) for k, v in (lerobot_cfg.extra_options or {}).items()},
    }
    if lerobot_cfg.g is not None:
        out["g"] = int(lerobot_cfg.g)
    if lerobot_cfg.crf is not None:
        out["crf"] = int(round(lerobot_cfg.crf))
    if lerobot_cfg.preset is not None:
        out["preset"] = lerobot_cfg.preset
    return out


def _replaced(lerobot_cfg: Any, config: EncoderConfig, codec: str) -> Any:
    """LeRobot's encoder config with the settings streamenc used for ``codec``."""
    name = _TO_LEROBOT.get(codec)
    changes = {
        "g": config.g,
        "crf": config.crf,
        "preset": _preset_used(config, codec),
        "fast_decode": config.fast_decode,
        "extra_options": dict(config.extra),
    }
    if name is not None:
        changes["vcodec"] = name
    try:
        return dataclasses.replace(lerobot_cfg, **changes)
    except (ValueError, TypeError) as e:  # this lerobot refuses what we used: keep its own, say so
        log.warning("streamenc: could not record the settings used (%s) in the dataset's config: %s", codec, e)
        return lerobot_cfg


def _preset_used(config: EncoderConfig, codec: str) -> Any:
    preset = codec_options(config, codec).get("preset")
    return int(preset) if codec == "libsvtav1" and preset is not None else preset


def codec_kwargs(vcodec: str) -> dict[str, Any]:
    """The ``LeRobotDataset.create``/``resume`` arguments that choose ``vcodec`` (LeRobot's
    name) on the installed lerobot: ``vcodec=`` up to 0.5.x, ``rgb_encoder=`` from 0.6.0."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    if "rgb_encoder" in inspect.signature(LeRobotDataset.create).parameters:
        from lerobot.configs import RGBEncoderConfig

        return {"rgb_encoder": RGBEncoderConfig(vcodec=vcodec)}
    return {"vcodec": vcodec}


def encoder_config(lerobot_settings: dict[str, Any], options: dict[str, Any]) -> EncoderConfig:
    """LeRobot's settings for the dataset (``Seams.settings()``), overridden by ``options``.

    LeRobot resolves ``vcodec="auto"`` to a hardware encoder whenever FFmpeg merely lists
    it, so a dataset's NVENC choice is kept only if a real session opens; otherwise our own
    ``auto`` probe chooses, with a warning, instead of a crash mid-episode.
    """
    unknown = set(options) - _CONFIG_FIELDS
    if unknown:
        raise ConfigError(f"unknown encoder options {sorted(unknown)}; known: {sorted(_CONFIG_FIELDS)}")
    settings = dict(lerobot_settings)
    lerobot_codec = settings.pop("vcodec")
    vcodec = _TO_OURS.get(lerobot_codec)
    if "vcodec" not in options:
        if vcodec is None:
            log.warning("streamenc: lerobot vcodec %r has no streamenc encoder; choosing with 'auto'", lerobot_codec)
            vcodec = "auto"
        elif lerobot_codec == "libaom-av1":
            log.warning("streamenc: recording lerobot's libaom-av1 with libsvtav1 (the same AV1, in real time)")
    merged = {**settings, "vcodec": vcodec or "auto", **options}
    try:
        config = EncoderConfig(**merged)
    except ConfigError as e:  # LeRobot's preset or crf for its codec may not fit ours (x265 names, ...)
        log.warning("streamenc: the dataset's encoder settings do not fit %s (%s); using its defaults", vcodec, e)
        config = EncoderConfig(**{k: v for k, v in merged.items() if k in ("vcodec", "threads", *options)})
    if "vcodec" not in options and config.vcodec in NVENC:
        info = next(r for r in probe(config) if r.name == config.vcodec)
        if not info.usable:
            log.warning(
                "streamenc: lerobot chose %s, which cannot encode here (%s); choosing with vcodec='auto'",
                config.vcodec,
                info.reason,
            )
            config = config.with_codec("auto")
    return config
