"""LeRobot integration: streamenc in place of LeRobot's image writer and encoders.

LeRobot's one hook for this is its streaming encoder: ``add_frame`` hands it each
camera frame (``feed_frame``) and ``save_episode`` takes one finished MP4 and raw
stats per camera from it (``finish_episode``). ``install`` puts a
``StreamencVideoEncoder`` there, so frames go to shared-memory rings and encoder
processes instead of PNGs, and the record loop never waits for an encoder.

    dataset = streamenc.lerobot.install(LeRobotDataset.create(...))

The hook moved between LeRobot releases; ``_Seams`` finds it by what the installed
lerobot has, not by its version string:

- 0.4.x and 0.5.0: ``dataset._streaming_encoder``; codec settings ``dataset.vcodec``;
- 0.5.1: ``dataset.writer._streaming_encoder`` (a ``DatasetWriter``); ``writer._vcodec``;
- 0.6.x: the same writer, with ``writer._rgb_encoder`` (an ``RGBEncoderConfig``: vcodec,
  g, crf, preset, fast_decode, extra_options) that ``info.json`` is written from, and
  depth features (``meta.depth_keys``, ``writer._depth_encoder``, a ``DepthEncoderConfig``
  with the quantizer's parameters; ``start_episode(..., depth_video_keys=...)``).

``record`` / ``rollout`` are ``lerobot-record`` / ``lerobot-rollout`` with that one change
(console scripts ``streamenc-lerobot-record`` and ``streamenc-lerobot-rollout``, same flags).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import importlib.metadata
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from . import chunks
from . import frames as framelib
from .codecs import DEPTH_PIX_FMT, NVENC, EncoderConfig, depth_config, probe
from .depth import Depth
from .depth import view as depth_view
from .errors import ConfigError, ShmTooSmall, StateError
from .recorder import Recorder

log = logging.getLogger("streamenc")

SUPPORTED = ("0.4.", "0.5.", "0.6.")  # release lines whose hooks this adapter knows
TESTED = "0.4.4 and 0.6.1"
UNTESTED_ENV = "STREAMENC_LEROBOT_UNTESTED"  # set to 1 to try a lerobot outside SUPPORTED
WORK_DIR = ".streamenc"  # spill files, under the dataset root so they share its disk
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
_DEPTH_DTYPE = {"mm": "uint16", "m": "float32"}  # LeRobot's depth_unit -> the ring's dtype


def check_version() -> str:
    """The installed lerobot version; ConfigError when this adapter does not know its line."""
    try:
        version = importlib.metadata.version("lerobot")
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError("lerobot is not installed; streamenc.lerobot supports lerobot 0.4.x to 0.6.x") from None
    if not version.startswith(SUPPORTED) and not os.environ.get(UNTESTED_ENV):
        raise ConfigError(
            f"lerobot {version} is not supported: streamenc.lerobot supports lerobot 0.4.x, 0.5.x and 0.6.x "
            f"(tested: {TESTED}). Install one of those, record with streamenc.Recorder directly, or set "
            f"{UNTESTED_ENV}=1 to try anyway."
        )
    return version


class _Seams:
    """Where the installed lerobot keeps what streamenc replaces: the object that owns the
    streaming-encoder hook and the image writer, and the codec settings."""

    def __init__(self, dataset: Any) -> None:
        writer = getattr(dataset, "writer", None)
        if writer is not None and hasattr(writer, "_streaming_encoder"):  # 0.5.1 and later: a DatasetWriter
            self.owner = writer
        elif hasattr(dataset, "_streaming_encoder"):  # 0.4.x, 0.5.0 (whose .writer is a parquet writer)
            self.owner = dataset
        else:
            raise ConfigError(
                f"install() takes a lerobot LeRobotDataset opened for writing (create() or resume()), "
                f"got {type(dataset).__name__} with no streaming-encoder hook; streamenc.lerobot supports "
                f"lerobot 0.4.x, 0.5.x and 0.6.x (tested: {TESTED})"
            )
        self.dataset = dataset
        self.rgb = getattr(self.owner, "_rgb_encoder", None)  # 0.6: RGBEncoderConfig
        self.depth = getattr(self.owner, "_depth_encoder", None)  # 0.6: DepthEncoderConfig
        self.threads = getattr(self.owner, "_encoder_threads", None)
        if self.rgb is not None:
            self.vcodec = self.rgb.vcodec
        else:
            self.vcodec = getattr(self.owner, "vcodec", None) or getattr(self.owner, "_vcodec", None) or "libsvtav1"
        self.depth_keys = list(getattr(dataset.meta, "depth_keys", []) or [])

    @property
    def encoder(self) -> Any:
        return self.owner._streaming_encoder

    @encoder.setter
    def encoder(self, value: Any) -> None:
        self.owner._streaming_encoder = value

    def settings(self) -> dict[str, Any]:
        """LeRobot's settings as EncoderConfig fields (codec name not yet mapped)."""
        out: dict[str, Any] = {"vcodec": self.vcodec, "threads": self.threads}
        if self.rgb is not None:
            out.update(_fields_of(self.rgb))
        return out

    def depth_config(self, options: dict[str, Any]) -> EncoderConfig:
        """The depth keys' EncoderConfig from the dataset's DepthEncoderConfig: its codec
        (hevc, gray12le: the only depth format streamenc writes), GOP, CRF and options;
        its preset when it names one, else ours (``depth_config()``: real time, and the
        same codes, lossless at every preset). ``options`` (``depth_*``) override."""
        cfg = self.depth
        fields = {"threads": self.threads}
        if cfg is not None:
            if _TO_OURS.get(cfg.vcodec) != "libx265" or cfg.pix_fmt != DEPTH_PIX_FMT:
                raise ConfigError(
                    f"the dataset's depth encoder is {cfg.vcodec} {cfg.pix_fmt}; streamenc records depth as "
                    f"hevc (libx265) {DEPTH_PIX_FMT}, LeRobot's default. Use that, or record without streamenc."
                )
            fields.update(_fields_of(cfg))
        fields.update(options)
        return depth_config(**{k: v for k, v in fields.items() if v is not None or k == "threads"})

    def depth_spec(self, key: str, feature: dict, dtype: str) -> Depth:
        """A depth key's camera: its size, the quantizer's parameters, the ring's dtype."""
        h, w, c = _hwc(key, feature, channels=1)
        if c != 1:
            raise ConfigError(f"depth feature {key!r} has shape {tuple(feature['shape'])}; expected (H, W, 1)")
        unit = (feature.get("info") or {}).get("depth_unit")
        params = {}
        if self.depth is not None:
            params = {n: getattr(self.depth, n) for n in ("depth_min", "depth_max", "shift", "use_log")}
        return Depth(h, w, _DEPTH_DTYPE.get(unit, dtype), **params)

    def write_back(self, config: EncoderConfig, codec: str, depth: EncoderConfig | None = None) -> None:
        """Make the dataset's encoder configs say what streamenc really used: info.json's
        ``video.*`` fields are written from them (0.6.x; older lines read the file itself)."""
        if self.rgb is not None:
            self.owner._rgb_encoder = _replaced(self.rgb, config, codec)
        if self.depth is not None and depth is not None:
            self.owner._depth_encoder = _replaced(self.depth, depth, "libx265")


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
    from .codecs import codec_options

    preset = codec_options(config, codec).get("preset")
    return int(preset) if codec == "libsvtav1" and preset is not None else preset


def codec_kwargs(vcodec: str) -> dict[str, Any]:
    """The ``LeRobotDataset.create``/``resume`` arguments that choose ``vcodec`` (LeRobot's
    name) on the installed lerobot: ``vcodec=`` up to 0.5.x, ``rgb_encoder=`` from 0.6.0."""
    import inspect

    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    if "rgb_encoder" in inspect.signature(LeRobotDataset.create).parameters:
        from lerobot.configs import RGBEncoderConfig

        return {"rgb_encoder": RGBEncoderConfig(vcodec=vcodec)}
    return {"vcodec": vcodec}


def _writable(dataset: Any) -> bool:
    try:
        _Seams(dataset)
        return True
    except ConfigError:
        return False


def encoder_of(dataset: Any) -> Any:
    """The streaming encoder a LeRobotDataset records with (ours once installed), any release."""
    return _Seams(dataset).encoder


def image_writer_of(dataset: Any) -> Any:
    """The dataset's AsyncImageWriter, or None, any release."""
    return getattr(_Seams(dataset).owner, "image_writer", None)


def _hwc(key: str, feature: dict, channels: int = 3) -> tuple[int, int, int]:
    """A video feature's (height, width, channels), whether it is declared HWC or CHW."""
    shape = tuple(int(d) for d in feature["shape"])
    names = list(feature.get("names") or [])
    if len(shape) != 3:
        raise ConfigError(f"video feature {key!r} has shape {shape}; expected 3 dimensions")
    if names[:1] == ["channels"] or (shape[0] == channels and shape[2] != channels):
        return shape[1], shape[2], shape[0]
    return shape  # type: ignore[return-value]


def _config(seams: _Seams, options: dict[str, Any]) -> EncoderConfig:
    """LeRobot's settings from the dataset, overridden by ``options``.

    LeRobot resolves ``vcodec="auto"`` to a hardware encoder whenever FFmpeg merely lists
    it, so a dataset's NVENC choice is kept only if a real session opens; otherwise our own
    ``auto`` probe chooses, with a warning, instead of a crash mid-episode.
    """
    unknown = set(options) - _CONFIG_FIELDS
    if unknown:
        raise ConfigError(f"unknown encoder options {sorted(unknown)}; known: {sorted(_CONFIG_FIELDS)}")
    settings = seams.settings()
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


class StreamencVideoEncoder:
    """Stands in for LeRobot's StreamingVideoEncoder at the dataset's hook.

    One Recorder (rings and encoder processes) lives across episodes; close() ends it
    and the next start_episode() starts a new one, as LeRobot's encoder allows.
    Each episode's MP4 is written alone into a fresh temporary directory under the
    dataset root, because save_episode moves the file and removes that directory.
    """

    def __init__(
        self,
        root: Path,
        fps: int,
        cameras: dict[str, tuple[int, int, int] | Depth],
        config: EncoderConfig,
        depth_config: EncoderConfig | None = None,
        features: dict[str, dict] | None = None,
        **options: Any,
    ) -> None:
        self.root, self.fps, self.config, self.options = Path(root), fps, config, options
        self.depth_config = depth_config
        self.features = features  # the dataset's, live: its depth keys' depth_unit is set at frame 0
        self.keys = {key: key.replace("/", "_") for key in cameras}
        self.shapes = dict(cameras)
        self.depth = {key: spec for key, spec in cameras.items() if isinstance(spec, Depth)}
        self.recorder: Recorder | None = None
        self._dirs: dict[str, Path] = {}
        self.recorder = self._start()

    def _start(self) -> Recorder:
        cameras = {self.keys[k]: s if isinstance(s, Depth) else s[:2] for k, s in self.shapes.items()}
        return Recorder(
            self.root,
            self.fps,
            cameras,
            self.config,
            png_fallback=False,
            spill_dir=self.root / WORK_DIR,
            depth_encoder=self.depth_config,
            **self.options,
        )

    def _unit(self, key: str) -> str | None:
        return ((self.features or {}).get(key, {}).get("info") or {}).get("depth_unit")

    def _depth_spec_for(self, key: str, value: Any) -> Depth:
        """The camera a depth frame must fit: until the dataset has a unit for the key (its
        first frame), either dtype LeRobot takes; after that, the unit's dtype only (LeRobot
        itself would record a second unit's values as the first's)."""
        spec = self.depth[key]
        if self._unit(key) is None and isinstance(value, np.ndarray) and value.dtype.kind in "fu":
            return dataclasses.replace(spec, dtype="float32" if value.dtype.kind == "f" else "uint16")
        return spec

    def _match_depth_units(self) -> None:
        """LeRobot sets a depth key's unit from the episode's first frame, just before it
        starts the episode here. A ring made for the other dtype is made again (once: the
        unit is then fixed in info.json), which stalls this one frame for the encoder's start."""
        wrong = {}
        for key, spec in self.depth.items():
            dtype = _DEPTH_DTYPE.get(self._unit(key), spec.dtype)
            if dtype != spec.dtype:
                wrong[key] = dataclasses.replace(spec, dtype=dtype)
        if not wrong:
            return
        log.warning(
            "streamenc: depth frames of %s come as %s; restarting their encoders for that "
            "(install(..., depth_dtype=...) avoids this stall at the first frame)",
            sorted(wrong),
            sorted({s.dtype for s in wrong.values()}),
        )
        self.depth.update(wrong)
        self.shapes.update(wrong)
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None

    @property
    def active(self) -> bool:
        return bool(self._dirs)

    def start_episode(self, video_keys: list[str], temp_dir: Path, depth_video_keys: list[str] | None = None) -> None:
        if self.active:
            self.cancel_episode()
        if set(video_keys) != set(self.keys):
            raise ConfigError(f"video keys {sorted(video_keys)} differ from those installed {sorted(self.keys)}")
        if set(depth_video_keys or ()) != set(self.depth):
            raise ConfigError(
                f"depth keys {sorted(depth_video_keys or ())} differ from those installed {sorted(self.depth)}"
            )
        self._match_depth_units()
        if self.recorder is None:
            self.recorder = self._start()
        dirs = {key: Path(tempfile.mkdtemp(dir=temp_dir)) for key in video_keys}
        videos = {self.keys[k]: d / f"{self.keys[k]}_streaming.mp4" for k, d in dirs.items()}
        try:
            self.recorder.start_episode(videos=videos)
        except BaseException:
            for d in dirs.values():
                shutil.rmtree(d, ignore_errors=True)
            raise
        self._dirs = dirs

    def check(self, frame: dict[str, Any]) -> None:
        """FrameError for a bad video frame in ``frame``, before LeRobot's add_frame has
        changed its episode buffer: a refused frame then records nothing, for any key."""
        for key, shape in self.shapes.items():
            value = frame.get(key)
            if key in self.depth and isinstance(value, np.ndarray):  # tensors: LeRobot converts them first
                depth_view(key, value, self._depth_spec_for(key, value))
            elif isinstance(value, np.ndarray) or framelib.is_pil(value):
                framelib.lenient(key, value, shape)  # type: ignore[arg-type]

    def feed_frame(self, video_key: str, image: Any) -> None:
        if not self.active or self.recorder is None:
            raise StateError("no episode is active: LeRobot's add_frame starts one at frame 0")
        if video_key not in self.keys:
            raise ConfigError(f"unknown video key {video_key!r}; installed {sorted(self.keys)}")
        self.recorder.add_camera_frame(self.keys[video_key], image)

    def seal(self) -> None:
        """The episode's last frame is in: the encoders flush while save_episode writes its
        parquet and stats, which it does before it calls finish_episode."""
        if self.active and self.recorder is not None:
            self.recorder.seal_episode()

    def finish_episode(self) -> dict[str, tuple[Path, dict[str, np.ndarray] | None]]:
        """Every frame encoded and each camera's MP4 closed (parts of a crash-recovered
        episode already joined), with stats in the raw form LeRobot wants: 0-255, shape (3,)
        for RGB; the frames' unit, shape (1,) for depth."""
        if not self.active or self.recorder is None:
            raise StateError("no episode is active")
        self._dirs = {}
        videos = self.recorder.end_episode()
        out = {}
        for key, cam in self.keys.items():
            video = videos[cam]
            raw = None
            if video.stats is not None:
                scale = 1.0 if key in self.depth else 255.0
                raw = {k: v if k == "count" else np.asarray(v).reshape(-1) * scale for k, v in video.stats.items()}
            out[key] = (Path(video.path), raw)
        return out

    def cancel_episode(self) -> None:
        if not self.active:
            return
        dirs, self._dirs = self._dirs, {}
        try:
            if self.recorder is not None:
                self.recorder.cancel_episode()
        finally:
            for d in dirs.values():
                shutil.rmtree(d, ignore_errors=True)

    def close(self) -> None:
        """Cancel an open episode (as LeRobot's encoder does), then end the encoder processes."""
        try:
            self.cancel_episode()
        finally:
            if self.recorder is not None:
                self.recorder.close()
                self.recorder = None
            work = self.root / WORK_DIR
            if work.is_dir() and not any(work.iterdir()):
                work.rmdir()


def install(dataset: Any, *, png_fallback: bool | None = None, **options: Any) -> Any:
    """Record ``dataset``'s video features through streamenc; returns the dataset.

    ``options`` are EncoderConfig fields (vcodec, g, crf, preset, threads, and the
    encoders' scheduling: sched, nice, cpus), which override the dataset's own settings,
    and Recorder options (overflow, slots, warn_behind_s). Depth features (lerobot 0.6)
    record as LeRobot's lossless 12-bit HEVC with the dataset's DepthEncoderConfig;
    ``depth_<field>`` overrides a field for them (``depth_preset="medium"``), and
    ``depth_dtype`` ("uint16" mm, default, or "float32" m) says what the depth frames
    will be, until the dataset's ``depth_unit`` says so. When /dev/shm cannot hold the
    rings, ``png_fallback=None`` leaves LeRobot's own PNG path in place with a warning;
    False raises ShmTooSmall.
    """
    check_version()
    if not hasattr(dataset, "meta"):
        raise ConfigError(f"install() takes a lerobot LeRobotDataset, got {type(dataset).__name__}")
    seams = _Seams(dataset)
    video_keys = list(dataset.meta.video_keys)
    if not video_keys:
        raise ConfigError("the dataset has no video features (use_videos=False?); streamenc has nothing to record")
    if isinstance(seams.encoder, StreamencVideoEncoder):
        return dataset
    if png_fallback:
        log.warning("streamenc: png_fallback=True, so LeRobot records PNGs itself; streamenc is not installed")
        return dataset
    recorder_options = {k: options.pop(k) for k in _RECORDER_OPTIONS if k in options}
    depth_dtype = str(options.pop("depth_dtype", "uint16"))
    depth_options = {k[len("depth_") :]: options.pop(k) for k in list(options) if k.startswith("depth_")}
    unknown = set(depth_options) - _CONFIG_FIELDS
    if unknown:
        raise ConfigError(f"unknown depth options {sorted('depth_' + k for k in unknown)}")
    config = _config(seams, options)
    cameras: dict[str, Any] = {}
    for key in video_keys:
        feature = dataset.features[key]
        if key in seams.depth_keys:
            cameras[key] = seams.depth_spec(key, feature, depth_dtype)
        else:
            cameras[key] = _hwc(key, feature)
    depth = None
    if seams.depth_keys:
        shared = {k: options[k] for k in ("sched", "nice", "cpus", "threads") if k in options}
        depth = seams.depth_config({**shared, **depth_options})
    try:
        encoder = StreamencVideoEncoder(
            dataset.root, dataset.fps, cameras, config, depth, dataset.meta.features, **recorder_options
        )
    except ShmTooSmall as e:
        if png_fallback is False:
            raise
        log.warning("streamenc: %s; LeRobot records PNGs itself (png_fallback=False makes this an error)", e)
        return dataset
    old = seams.encoder
    if old is not None and old is not encoder:
        old.close()
    seams.encoder = encoder
    seams.write_back(config, encoder.recorder.codec, depth)
    lerobot_add_frame = dataset.add_frame

    def add_frame(frame: dict) -> None:
        encoder.check(frame)
        lerobot_add_frame(frame)

    lerobot_save_episode = dataset.save_episode
    _hook_appends()

    def save_episode(*args: Any, **kwargs: Any) -> None:
        encoder.seal()
        token = _saving.set(dataset)
        try:
            lerobot_save_episode(*args, **kwargs)
        finally:
            _saving.reset(token)

    add_frame.__doc__ = lerobot_add_frame.__doc__
    save_episode.__doc__ = lerobot_save_episode.__doc__
    dataset.add_frame, dataset.save_episode = add_frame, save_episode
    log.info(
        "streamenc: recording %d cameras with %s in encoder processes; no PNGs, no encode at save_episode",
        len(video_keys),
        encoder.recorder.codec,
    )
    if not dataset.meta.image_keys:  # video frames no longer go through the image writer
        seams.owner.stop_image_writer()
        seams.owner.start_image_writer = _image_writer_not_needed
        if seams.owner is not dataset and hasattr(dataset, "start_image_writer"):
            dataset.start_image_writer = _image_writer_not_needed
    return dataset


# The dataset whose save_episode is running, for the append hook below.
_saving: contextvars.ContextVar[Any] = contextvars.ContextVar("streamenc_saving", default=None)
# Where LeRobot's save path calls concatenate_video_files: 0.6.x, then 0.4.x and 0.5.x
_SAVE_MODULES = ("lerobot.datasets.dataset_writer", "lerobot.datasets.lerobot_dataset")


def _hook_appends() -> None:
    """Make LeRobot's "chunk file + this episode -> chunk file" remux an in-place append
    (``chunks.append``) while an installed dataset saves an episode; every other use of
    ``concatenate_video_files`` (merging datasets, editing them, datasets without
    streamenc) and whatever ``append`` declines goes to LeRobot's own function."""
    import importlib

    for name in _SAVE_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        original = getattr(module, "concatenate_video_files", None)
        if original is None or getattr(original, "_streamenc", False):
            continue
        module.concatenate_video_files = _appending(original)


def _appending(original: Any) -> Any:
    def concatenate_video_files(input_video_paths: list, output_video_path: Any, *args: Any, **kwargs: Any) -> Any:
        dataset = _saving.get()
        paths = [Path(p) for p in input_video_paths]
        if dataset is not None and len(paths) == 2 and Path(output_video_path) == paths[0]:
            key = paths[0].parent.parent.name  # videos/{key}/chunk-NNN/file-NNN.mp4
            try:
                chunks.append(paths[0], paths[1], keep_s=_recorded_end(dataset, key))
                return None
            except chunks.Unsupported as e:
                log.info("streamenc: %s: LeRobot's full remux (%s)", paths[0], e)
        return original(input_video_paths, output_video_path, *args, **kwargs)

    concatenate_video_files._streamenc = True  # type: ignore[attr-defined]
    concatenate_video_files.__doc__ = original.__doc__
    return concatenate_video_files


def _recorded_end(dataset: Any, key: str) -> float | None:
    """Where the dataset's metadata says ``key``'s current chunk file ends (seconds)."""
    latest = getattr(dataset.meta, "latest_episode", None)
    try:
        value = latest[f"videos/{key}/to_timestamp"]
    except (TypeError, KeyError):
        return None
    return float(value[0] if isinstance(value, (list, tuple, np.ndarray)) else value)


def _image_writer_not_needed(*args: Any, **kwargs: Any) -> None:
    """Replaces start_image_writer on an installed dataset without image features:
    lerobot-record starts one after opening a dataset, and it would only idle."""
    log.debug("streamenc: image writer not started; video frames go to streamenc")


@contextlib.contextmanager
def installing(module: Any):
    """While active, ``module.LeRobotDataset`` opens installed datasets: ``create()``,
    ``resume()`` (a classmethod from 0.5.1 on, building the instance with ``cls.__new__``)
    and the constructor (how 0.4.x resumes). The original is put back afterwards."""
    base = module.LeRobotDataset

    class Installed(base):  # type: ignore[misc, valid-type]
        @classmethod
        def create(cls, *args: Any, **kwargs: Any) -> Any:
            return install(base.create(*args, **kwargs))

        def __new__(cls, *args: Any, **kwargs: Any) -> Any:
            dataset = base(*args, **kwargs)
            return install(dataset) if _writable(dataset) else dataset  # 0.6 opens read-only ones too

    if hasattr(base, "resume"):
        Installed.resume = classmethod(lambda cls, *a, **k: install(base.resume(*a, **k)))  # type: ignore[attr-defined]
    module.LeRobotDataset = Installed
    try:
        yield Installed
    finally:
        module.LeRobotDataset = base


def _run(script_module: str, dataset_module: str, entry: str, argv: list[str] | None) -> Any:
    import importlib
    import sys

    check_version()
    from lerobot.utils.import_utils import register_third_party_plugins

    script = importlib.import_module(script_module)
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    with installing(importlib.import_module(dataset_module)):
        register_third_party_plugins()
        return getattr(script, entry)()


def record(argv: list[str] | None = None) -> Any:
    """``lerobot-record`` with streamenc installed on the dataset it records; same flags.

    ``--dataset.streaming_encoding`` is ignored: streamenc replaces both of LeRobot's
    encoding paths.
    """
    return _run("lerobot.scripts.lerobot_record", "lerobot.scripts.lerobot_record", "record", argv)


def rollout(argv: list[str] | None = None) -> Any:
    """``lerobot-rollout`` (lerobot 0.6.x) with streamenc installed on the dataset it records;
    same flags. Its sentry, highlight and DAgger modes force LeRobot's streaming encoding,
    which streamenc then stands in for."""
    try:
        import lerobot.rollout.context  # noqa: F401
    except ImportError:
        raise ConfigError("lerobot-rollout arrived in lerobot 0.6.0; this lerobot has none") from None
    return _run("lerobot.scripts.lerobot_rollout", "lerobot.rollout.context", "rollout", argv)


def main() -> None:
    """Console script ``streamenc-lerobot-record``."""
    record()


def main_rollout() -> None:
    """Console script ``streamenc-lerobot-rollout``."""
    rollout()
