"""LeRobot integration: streamenc in place of LeRobot's image writer and encoders.

LeRobot 0.4.4 has one hook for this, the dataset's ``_streaming_encoder``: add_frame
hands it each camera frame (``feed_frame``) and save_episode takes one finished MP4
and raw stats per camera from it (``finish_episode``). ``install`` puts a
``StreamencVideoEncoder`` there, so frames go to shared-memory rings and encoder
processes instead of PNGs, and the record loop never waits for an encoder.

    dataset = streamenc.lerobot.install(LeRobotDataset.create(...))

``record`` is ``lerobot-record`` with that one change (console script
``streamenc-lerobot-record``, same flags).
"""

from __future__ import annotations

import importlib.metadata
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from . import frames as framelib
from .codecs import NVENC, EncoderConfig, probe
from .errors import ConfigError, ShmTooSmall, StateError
from .recorder import Recorder

log = logging.getLogger("streamenc")

SUPPORTED = "0.4."  # the hook's contract is read from lerobot 0.4.4
WORK_DIR = ".streamenc"  # spill files, under the dataset root so they share its disk
# LeRobot's codec names -> ours; hevc, videotoolbox, vaapi and qsv have no streamenc mapping
_CODECS = {"libsvtav1": "libsvtav1", "h264": "libx264", "auto": "auto", **{n: n for n in NVENC}}
_CONFIG_FIELDS = set(EncoderConfig.__dataclass_fields__)


def check_version() -> str:
    """The installed lerobot version; ConfigError when this adapter does not support it."""
    try:
        version = importlib.metadata.version("lerobot")
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError("lerobot is not installed; streamenc.lerobot needs lerobot 0.4.x (tested: 0.4.4)") from None
    if not version.startswith(SUPPORTED):
        raise ConfigError(
            f"lerobot {version} is not supported: streamenc.lerobot uses the streaming-encoder hook of "
            f"lerobot 0.4.x (tested: 0.4.4). Install lerobot==0.4.4, or record with streamenc.Recorder directly."
        )
    return version


def _hwc(key: str, feature: dict) -> tuple[int, int, int]:
    """A video feature's (height, width, channels), whether it is declared HWC or CHW."""
    shape = tuple(int(d) for d in feature["shape"])
    names = list(feature.get("names") or [])
    if len(shape) != 3:
        raise ConfigError(f"video feature {key!r} has shape {shape}; expected 3 dimensions")
    if names[:1] == ["channels"] or (shape[0] == 3 and shape[2] != 3):
        return shape[1], shape[2], shape[0]
    return shape  # type: ignore[return-value]


def _config(dataset: Any, options: dict[str, Any]) -> EncoderConfig:
    """LeRobot's settings from the dataset, overridden by ``options``.

    LeRobot resolves ``vcodec="auto"`` to h264_nvenc whenever FFmpeg merely lists it,
    so a dataset's NVENC choice is kept only if a real session opens; otherwise our
    own ``auto`` probe chooses, with a warning, instead of a crash mid-episode.
    """
    unknown = set(options) - _CONFIG_FIELDS
    if unknown:
        raise ConfigError(f"unknown encoder options {sorted(unknown)}; known: {sorted(_CONFIG_FIELDS)}")
    lerobot_codec = getattr(dataset, "vcodec", "libsvtav1")
    vcodec = _CODECS.get(lerobot_codec)
    if vcodec is None and "vcodec" not in options:
        log.warning("streamenc: lerobot vcodec %r has no streamenc encoder; choosing with vcodec='auto'", lerobot_codec)
        vcodec = "auto"
    config = EncoderConfig(**{"vcodec": vcodec, "threads": getattr(dataset, "_encoder_threads", None), **options})
    if "vcodec" not in options and vcodec in NVENC:
        info = next(r for r in probe(config) if r.name == vcodec)
        if not info.usable:
            log.warning(
                "streamenc: lerobot chose %s, which cannot encode here (%s); choosing with vcodec='auto'",
                vcodec,
                info.reason,
            )
            config = config.with_codec("auto")
    return config


class StreamencVideoEncoder:
    """Stands in for LeRobot's StreamingVideoEncoder on ``dataset._streaming_encoder``.

    One Recorder (rings and encoder processes) lives across episodes; close() ends it
    and the next start_episode() starts a new one, as LeRobot's encoder allows.
    Each episode's MP4 is written alone into a fresh temporary directory under the
    dataset root, because save_episode moves the file and removes that directory.
    """

    def __init__(
        self, root: Path, fps: int, cameras: dict[str, tuple[int, int, int]], config: EncoderConfig, **options: Any
    ) -> None:
        self.root, self.fps, self.config, self.options = Path(root), fps, config, options
        self.keys = {key: key.replace("/", "_") for key in cameras}
        self.shapes = dict(cameras)
        self.cameras = {self.keys[k]: shape[:2] for k, shape in cameras.items()}
        self.recorder: Recorder | None = None
        self._dirs: dict[str, Path] = {}
        self.recorder = self._start()

    def _start(self) -> Recorder:
        return Recorder(
            self.root,
            self.fps,
            self.cameras,
            self.config,
            png_fallback=False,
            spill_dir=self.root / WORK_DIR,
            **self.options,
        )

    @property
    def active(self) -> bool:
        return bool(self._dirs)

    def start_episode(self, video_keys: list[str], temp_dir: Path) -> None:
        if self.active:
            self.cancel_episode()
        if set(video_keys) != set(self.keys):
            raise ConfigError(f"video keys {sorted(video_keys)} differ from those installed {sorted(self.keys)}")
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
            if isinstance(value, np.ndarray) or framelib.is_pil(value):
                framelib.lenient(key, value, shape)

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
        episode already joined), with stats in the raw 0-255, shape (3,) form LeRobot wants."""
        if not self.active or self.recorder is None:
            raise StateError("no episode is active")
        self._dirs = {}
        videos = self.recorder.end_episode()
        out = {}
        for key, cam in self.keys.items():
            video = videos[cam]
            raw = None
            if video.stats is not None:
                raw = {k: v if k == "count" else np.asarray(v).reshape(-1) * 255.0 for k, v in video.stats.items()}
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
    and Recorder options (overflow, slots, warn_behind_s). When /dev/shm cannot hold the
    rings, ``png_fallback=None`` leaves LeRobot's own PNG path in place with a warning;
    False raises ShmTooSmall.
    """
    check_version()
    if not hasattr(dataset, "_streaming_encoder") or not hasattr(dataset, "meta"):
        raise ConfigError(f"install() takes a lerobot LeRobotDataset, got {type(dataset).__name__}")
    video_keys = list(dataset.meta.video_keys)
    if not video_keys:
        raise ConfigError("the dataset has no video features (use_videos=False?); streamenc has nothing to record")
    if isinstance(dataset._streaming_encoder, StreamencVideoEncoder):
        return dataset
    if png_fallback:
        log.warning("streamenc: png_fallback=True, so LeRobot records PNGs itself; streamenc is not installed")
        return dataset
    recorder_options = {k: options.pop(k) for k in ("overflow", "slots", "warn_behind_s") if k in options}
    cameras = {key: _hwc(key, dataset.features[key]) for key in video_keys}
    config = _config(dataset, options)
    try:
        encoder = StreamencVideoEncoder(dataset.root, dataset.fps, cameras, config, **recorder_options)
    except ShmTooSmall as e:
        if png_fallback is False:
            raise
        log.warning("streamenc: %s; LeRobot records PNGs itself (png_fallback=False makes this an error)", e)
        return dataset
    old = dataset._streaming_encoder
    if old is not None and old is not encoder:
        old.close()
    dataset._streaming_encoder = encoder
    lerobot_add_frame = dataset.add_frame

    def add_frame(frame: dict) -> None:
        encoder.check(frame)
        lerobot_add_frame(frame)

    lerobot_save_episode = dataset.save_episode

    def save_episode(*args: Any, **kwargs: Any) -> None:
        encoder.seal()
        lerobot_save_episode(*args, **kwargs)

    add_frame.__doc__ = lerobot_add_frame.__doc__
    save_episode.__doc__ = lerobot_save_episode.__doc__
    dataset.add_frame, dataset.save_episode = add_frame, save_episode
    log.info(
        "streamenc: recording %d cameras with %s in encoder processes; no PNGs, no encode at save_episode",
        len(video_keys),
        encoder.recorder.codec if encoder.recorder else config.vcodec,
    )
    if not dataset.meta.image_keys:  # video frames no longer go through the image writer
        dataset.stop_image_writer()
        dataset.start_image_writer = _image_writer_not_needed
    return dataset


def _image_writer_not_needed(*args: Any, **kwargs: Any) -> None:
    """Replaces start_image_writer on an installed dataset without image features:
    lerobot-record starts one after opening a dataset, and it would only idle."""
    log.debug("streamenc: image writer not started; video frames go to streamenc")


def record(argv: list[str] | None = None) -> Any:
    """``lerobot-record`` with streamenc installed on the dataset it records; same flags.

    lerobot-record builds its dataset with ``LeRobotDataset.create`` (or
    ``LeRobotDataset(...)`` with --resume=true); both are wrapped so the dataset is
    installed before the first frame. ``--dataset.streaming_encoding`` is ignored:
    streamenc replaces both of LeRobot's encoding paths.
    """
    import sys

    check_version()
    from lerobot.scripts import lerobot_record
    from lerobot.utils.import_utils import register_third_party_plugins

    base = lerobot_record.LeRobotDataset

    class _Installed(base):  # type: ignore[misc, valid-type]
        @classmethod
        def create(cls, *args: Any, **kwargs: Any) -> Any:
            return install(base.create(*args, **kwargs))

        def __new__(cls, *args: Any, **kwargs: Any) -> Any:
            return install(base(*args, **kwargs))

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    lerobot_record.LeRobotDataset = _Installed
    try:
        register_third_party_plugins()
        return lerobot_record.record()
    finally:
        lerobot_record.LeRobotDataset = base


def main() -> None:
    """Console script ``streamenc-lerobot-record``."""
    record()
