"""``install``: the sequence that puts streamenc into a LeRobotDataset, step by step.

Each step is another module's (seams, settings, encoder, hooks); reading this function
is reading the install sequence.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from ..errors import ShmTooSmall, StateError
from . import hooks, recovery
from .encoder import StreamencVideoEncoder
from .journal import Journal
from .seams import Seams, dataset_root, recordable
from .settings import encoder_config, split_options
from .versions import check_version

log = logging.getLogger("streamenc")


def install(
    dataset: Any,
    *,
    png_fallback: bool | None = None,
    crash_safe: bool = True,
    keep_partial: bool = False,
    **options: Any,
) -> Any:
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

    A dataset a crash interrupted (its journal is there) is repaired first, and the
    metadata LeRobot read from it read again (``recovery``; one log line says what was
    restored and dropped; ``keep_partial`` keeps the episode the crash interrupted, as an
    episode of its own). ``crash_safe`` (default) journals every saved episode, so that no
    crash loses one, and the open episode's rows (``journal``; removed at finalize).
    """
    check_version()
    seams = recordable(dataset)
    if isinstance(seams.encoder, StreamencVideoEncoder):
        return dataset
    repair_before_recording(seams, keep_partial)
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
    # encoder still open, ours is closed and the session's journal removed. What cannot be
    # undone (stopping the image writer, closing LeRobot's encoder) comes last. (The
    # module-level taps of hooks.py stay: they act only inside a streamenc save_episode.)
    restore = seams.saved()
    journal = None
    try:
        theirs = seams.put(encoder)
        seams.write_back(config, encoder.rgb_codec, depth)
        if crash_safe:
            rows = [k for k, ft in dataset.meta.features.items() if ft["dtype"] not in ("video", "image")]
            journal = Journal.begin(
                dataset.root,
                dataset.meta.total_episodes,
                buffer=lambda: seams.owner.episode_buffer,
                keys=[k for k in rows if k not in _DEFAULT_FEATURES],
            )
        hooks.wrap_add_frame(dataset, encoder)
        hooks.wrap_save_episode(dataset, encoder, journal)
        hooks.wrap_finalize(dataset, journal)
        if not dataset.meta.image_keys:  # video frames no longer go through the image writer
            hooks.without_image_writer(seams)
        if theirs is not None:
            theirs.close()
    except BaseException:
        restore()
        encoder.close()
        if journal is not None:
            journal.end()
        raise
    log.info(
        "streamenc: recording %d cameras with %s in encoder processes; no PNGs, no encode at save_episode",
        len(cameras),
        encoder.codec,
    )
    return dataset


def repair_if_needed(root: Any, keep_partial: bool = False) -> recovery.Report | None:
    """Restore a dataset a crash interrupted (its journal is there), with one log line;
    StateError when something of it could not be restored (recording on would bury it)."""
    if not recovery.needs_repair(root):
        return None
    report = recovery.repair(root, keep_partial=keep_partial)
    if not report.ok:
        raise StateError(f"streamenc: {report.line()}; see `streamenc repair {root} --dry-run`")
    log.warning("streamenc: repaired after a crash: %s", report.line())
    return report


def repair_before_recording(seams: Seams, keep_partial: bool = False) -> None:
    """For a dataset LeRobot opened before it was repaired: repair, then read its
    metadata again."""
    if repair_if_needed(seams.dataset.root, keep_partial) is not None:
        seams.reload()


def resume(repo_id: str, root: Any = None, *, keep_partial: bool = False, **kwargs: Any) -> Any:
    """Open a dataset to record more episodes into, repaired first if a crash interrupted
    it, with streamenc installed: ``LeRobotDataset.resume`` (0.5.1 on), else the
    constructor (0.4.x). ``kwargs`` are LeRobot's. LeRobot alone cannot open a dataset a
    crash interrupted (its episode metadata was still buffered), so resume through here.
    ``keep_partial``: see ``install``."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    path = dataset_root(repo_id, root)
    repair_if_needed(path, keep_partial)
    opener = getattr(LeRobotDataset, "resume", None) or LeRobotDataset
    try:
        dataset = opener(repo_id, root=root, **kwargs)
    except Exception:
        info = json.loads((path / "meta" / "info.json").read_text())
        if info["total_episodes"] or not _only_metadata(path):
            raise
        # A crash before the first save leaves the dataset create() made, which 0.4.x
        # cannot open (it goes to the hub): make it again, it holds nothing.
        shutil.rmtree(path)
        features = {  # as LeRobot's load_info gives them (shapes as tuples)
            k: {**v, "shape": tuple(v["shape"])} for k, v in info["features"].items() if k not in _DEFAULT_FEATURES
        }
        dataset = LeRobotDataset.create(repo_id, info["fps"], features, root=root, robot_type=info.get("robot_type"))
    return install(dataset)


_DEFAULT_FEATURES = ("timestamp", "frame_index", "episode_index", "index", "task_index")


def _only_metadata(root: Path) -> bool:
    """Nothing in the dataset but what create() writes (info.json, empty directories)."""
    return all(p.is_dir() or p.relative_to(root).as_posix() == "meta/info.json" for p in root.rglob("*"))
