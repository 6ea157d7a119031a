"""LeRobot integration: streamenc in place of LeRobot's image writer and encoders.

LeRobot's one hook for this is its streaming encoder: ``add_frame`` hands it each camera
frame (``feed_frame``) and ``save_episode`` takes one finished MP4 and raw stats per camera
from it (``finish_episode``). ``install`` puts a ``StreamencVideoEncoder`` there, so frames
go to shared-memory rings and encoder processes instead of PNGs, and the record loop never
waits for an encoder.

    dataset = streamenc.lerobot.install(LeRobotDataset.create(...))

The hook moved between LeRobot releases; ``Seams`` finds it by what the installed lerobot
has, not by its version string:

- 0.4.x and 0.5.0: ``dataset._streaming_encoder``; codec settings ``dataset.vcodec``;
- 0.5.1: ``dataset.writer._streaming_encoder`` (a ``DatasetWriter``); ``writer._vcodec``;
- 0.6.x: the same writer, with ``writer._rgb_encoder`` (an ``RGBEncoderConfig``: vcodec,
  g, crf, preset, fast_decode, extra_options) that ``info.json`` is written from, and
  depth features (``meta.depth_keys``, ``writer._depth_encoder``, a ``DepthEncoderConfig``
  with the quantizer's parameters; ``start_episode(..., depth_video_keys=...)``).

``record`` / ``rollout`` are ``lerobot-record`` / ``lerobot-rollout`` with that one change
(console scripts ``streamenc-lerobot-record`` and ``streamenc-lerobot-rollout``, same flags).

One module per role; this one holds ``install``, the sequence that uses them:

- ``versions``: the release lines this adapter knows (``check_version``);
- ``seams``: every private LeRobot attribute, reached there only (``Seams``);
- ``settings``: LeRobot's codec names and encoder settings to ours and back;
- ``encoder``: ``StreamencVideoEncoder``, what LeRobot's save path talks to;
- ``hooks``: the monkeypatches (add_frame, save_episode and its chunk append, the image
  writer, ``installing``);
- ``cli``: ``record``, ``rollout`` and their console scripts.
"""

from __future__ import annotations

import importlib.metadata  # noqa: F401  (tests patch streamenc.lerobot.importlib.metadata.version)
import logging
from typing import Any

from ..codecs import EncoderConfig, probe
from ..errors import ShmTooSmall
from . import hooks
from .cli import main, main_rollout, record, rollout
from .encoder import WORK_DIR, StreamencVideoEncoder
from .hooks import installing
from .seams import Seams, encoder_of, image_writer_of, recordable
from .settings import codec_kwargs, encoder_config, split_options
from .versions import SUPPORTED, TESTED, UNTESTED_ENV, check_version

__all__ = [
    "SUPPORTED",
    "TESTED",
    "UNTESTED_ENV",
    "WORK_DIR",
    "EncoderConfig",
    "Seams",
    "StreamencVideoEncoder",
    "check_version",
    "codec_kwargs",
    "encoder_of",
    "image_writer_of",
    "install",
    "installing",
    "main",
    "main_rollout",
    "probe",
    "record",
    "rollout",
]

log = logging.getLogger("streamenc")


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
    seams = recordable(dataset)
    if isinstance(seams.encoder, StreamencVideoEncoder):
        return dataset
    if png_fallback:
        log.warning("streamenc: png_fallback=True, so LeRobot records PNGs itself; streamenc is not installed")
        return dataset
    opts = split_options(options)
    config = encoder_config(seams, opts.encoder)
    cameras = seams.cameras(opts.depth_dtype)
    depth = seams.depth_config(opts.depth) if seams.depth_keys else None
    try:
        encoder = StreamencVideoEncoder(
            dataset.root, dataset.fps, cameras, config, depth, dataset.meta.features, **opts.recorder
        )
    except ShmTooSmall as e:
        if png_fallback is False:
            raise
        log.warning("streamenc: %s; LeRobot records PNGs itself (png_fallback=False makes this an error)", e)
        return dataset
    seams.put(encoder)
    seams.write_back(config, encoder.recorder.codec, depth)
    hooks.wrap_add_frame(dataset, encoder)
    hooks.wrap_save_episode(dataset, encoder)
    log.info(
        "streamenc: recording %d cameras with %s in encoder processes; no PNGs, no encode at save_episode",
        len(cameras),
        encoder.recorder.codec,
    )
    if not dataset.meta.image_keys:  # video frames no longer go through the image writer
        hooks.without_image_writer(seams)
    return dataset
