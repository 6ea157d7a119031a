"""The seams: every private LeRobot attribute streamenc reads or replaces, reached here only.

LeRobot's hook moved between releases (the dataset in 0.4.x and 0.5.0, its
``DatasetWriter`` from 0.5.1, with the encoder configs of 0.6.x beside it); ``Seams``
finds it by what the installed lerobot has, not by its version string, so when LeRobot
moves it again this is the one module to change.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..camera import Camera
from ..codecs import DEPTH_PIX_FMT, EncoderConfig, depth_config
from ..depth import Depth
from ..errors import ConfigError
from .settings import _TO_OURS, DEPTH_DTYPE, _fields_of, _replaced
from .versions import TESTED

_REPLACED = ("add_frame", "save_episode", "finalize", "start_image_writer")  # what the hooks replace (hooks.py)
_NONE = object()


class Seams:
    """Where the installed lerobot keeps what streamenc replaces: the object that owns the
    streaming-encoder hook and the image writer (``owner``: the dataset's
    ``DatasetWriter`` from 0.5.1, else the dataset), and the codec settings.

    ``Seams(dataset)`` raises ConfigError for an object with no streaming-encoder hook.
    Public so that tests and tools see a dataset as ``install`` does (``Seams(ds).owner``,
    ``Seams(ds).vcodec``: LeRobot's codec name, before streamenc maps it)."""

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

    def put(self, encoder: Any) -> Any:
        """Put ``encoder`` at the hook; returns the one it replaces (LeRobot's own, when the
        dataset was made with ``streaming_encoding=True``, else None), which the caller
        closes once nothing can fail any more (``install``)."""
        old = self.encoder
        self.encoder = encoder
        return None if old is encoder else old

    def saved(self) -> Callable[[], None]:
        """A function that puts back what ``install`` changes here, as it is now: the encoder
        at the hook, the encoder configs, and the methods the hooks replace on the dataset
        and its writer (instance attributes, removed again where there were none)."""
        configs = {n: getattr(self.owner, n) for n in ("_rgb_encoder", "_depth_encoder") if hasattr(self.owner, n)}
        encoder = self.encoder
        methods = [
            (obj, name, vars(obj).get(name, _NONE))
            for obj in {id(self.dataset): self.dataset, id(self.owner): self.owner}.values()
            for name in _REPLACED
        ]

        def restore() -> None:
            self.encoder = encoder
            for name, value in configs.items():
                setattr(self.owner, name, value)
            for obj, name, value in methods:
                if value is not _NONE:
                    setattr(obj, name, value)
                elif name in vars(obj):
                    delattr(obj, name)

        return restore

    def settings(self) -> dict[str, Any]:
        """LeRobot's settings as EncoderConfig fields (codec name not yet mapped)."""
        out: dict[str, Any] = {"vcodec": self.vcodec, "threads": self.threads}
        if self.rgb is not None:
            out.update(_fields_of(self.rgb))
        return out

    def cameras(self, depth_dtype: str) -> dict[str, Camera]:
        """Each video key's camera, named for the recorder (no "/"): its size from the
        feature, and for a depth key its ``Depth``."""
        cameras: dict[str, Camera] = {}
        for key in list(self.dataset.meta.video_keys):
            feature = self.dataset.features[key]
            spec = self.depth_spec(key, feature, depth_dtype) if key in self.depth_keys else _hwc(key, feature)
            cameras[key] = Camera.declare(key.replace("/", "_"), spec)
        return cameras

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
        return Depth(h, w, DEPTH_DTYPE.get(unit, dtype), **params)

    def reload(self) -> None:
        """Read the dataset's metadata from disk again and start the episode buffer over:
        after a repair under a dataset LeRobot had already opened (resume() reads only the
        metadata, which a crash may have left short of info.json)."""
        meta = self.dataset.meta
        (getattr(meta, "_load_metadata", None) or meta.load_metadata)()  # 0.5.1+, then 0.4.x
        make = getattr(self.owner, "_create_episode_buffer", None) or self.owner.create_episode_buffer
        self.owner.episode_buffer = make()

    def write_back(self, config: EncoderConfig, codec: str | None, depth: EncoderConfig | None = None) -> None:
        """Make the dataset's encoder configs say what streamenc really used: info.json's
        ``video.*`` fields are written from them (0.6.x; older lines read the file itself).
        ``codec`` is the RGB cameras' encoder; None (no RGB camera) leaves LeRobot's RGB
        config as it made it, since no feature is written with it."""
        if self.rgb is not None and codec is not None:
            self.owner._rgb_encoder = _replaced(self.rgb, config, codec)
        if self.depth is not None and depth is not None:
            self.owner._depth_encoder = _replaced(self.depth, depth, "libx265")


def recordable(dataset: Any) -> Seams:
    """The seams of a dataset ``install`` can record; ConfigError for anything else: not a
    LeRobotDataset, no streaming-encoder hook, no video features."""
    if not hasattr(dataset, "meta"):
        raise ConfigError(f"install() takes a lerobot LeRobotDataset, got {type(dataset).__name__}")
    seams = Seams(dataset)
    if not list(dataset.meta.video_keys):
        raise ConfigError("the dataset has no video features (use_videos=False?); streamenc has nothing to record")
    return seams


def dataset_root(repo_id: str, root: Any = None) -> Path:
    """Where LeRobot keeps ``repo_id`` when no root is given: $HF_LEROBOT_HOME/repo_id."""
    if root is not None:
        return Path(root)
    from lerobot.utils.constants import HF_LEROBOT_HOME  # 0.4.x to 0.6.x

    return Path(HF_LEROBOT_HOME) / repo_id


def writable(dataset: Any) -> bool:
    try:
        Seams(dataset)
        return True
    except ConfigError:
        return False


def encoder_of(dataset: Any) -> Any:
    """The streaming encoder a LeRobotDataset records with (ours once installed), any release."""
    return Seams(dataset).encoder


def image_writer_of(dataset: Any) -> Any:
    """The dataset's AsyncImageWriter, or None, any release."""
    return getattr(Seams(dataset).owner, "image_writer", None)


def _hwc(key: str, feature: dict, channels: int = 3) -> tuple[int, int, int]:
    """A video feature's (height, width, channels), whether it is declared HWC or CHW."""
    shape = tuple(int(d) for d in feature["shape"])
    names = list(feature.get("names") or [])
    if len(shape) != 3:
        raise ConfigError(f"video feature {key!r} has shape {shape}; expected 3 dimensions")
    if names[:1] == ["channels"] or (shape[0] == channels and shape[2] != channels):
        return shape[1], shape[2], shape[0]
    return shape  # type: ignore[return-value]
