"""``install``: the sequence that puts streamenc into a LeRobotDataset, step by step.

Each step is another module's (seams, settings, encoder, hooks); reading this function
is reading the install sequence.
"""

from __future__ import annotations

import logging
from typing import Any

from ..errors import ShmTooSmall
from . import hooks
from .encoder import StreamencVideoEncoder
from .seams import recordable
from .settings import encoder_config, split_options
from .versions import check_version

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
    config = encoder_config(seams.settings(), opts.encoder)
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
    # All or nothing: if a step fails, LeRobot's hook, settings and methods go back, its
    # encoder still open, and ours is closed. What cannot be undone (stopping the image
    # writer, closing LeRobot's encoder) comes last.
    restore = seams.saved()
    try:
        theirs = seams.put(encoder)
        seams.write_back(config, encoder.rgb_codec, depth)
        hooks.wrap_add_frame(dataset, encoder)
        hooks.wrap_save_episode(dataset, encoder)
        if not dataset.meta.image_keys:  # video frames no longer go through the image writer
            hooks.without_image_writer(seams)
        if theirs is not None:
            theirs.close()
    except BaseException:
        restore()
        encoder.close()
        raise
    log.info(
        "streamenc: recording %d cameras with %s in encoder processes; no PNGs, no encode at save_episode",
        len(cameras),
        encoder.codec,
    )
    return dataset
