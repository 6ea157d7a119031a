"""The encoder adapter: ``StreamencVideoEncoder``, what LeRobot's save path talks to.

LeRobot's one hook for a different encoder is its streaming encoder: ``add_frame`` hands
it each camera frame (``feed_frame``) and ``save_episode`` takes one finished MP4 and raw
stats per camera from it (``finish_episode``). This class answers that interface with a
``Recorder``, so frames go to shared-memory rings and encoder processes, and the record
loop never waits for an encoder.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .. import frames as framelib
from ..camera import Camera
from ..codecs import EncoderConfig
from ..depth import Depth
from ..errors import ConfigError, StateError
from ..recorder import Recorder
from .settings import DEPTH_DTYPE

log = logging.getLogger("streamenc")

WORK_DIR = ".streamenc"  # spill files, under the dataset root so they share its disk


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
        cameras: dict[str, Camera],
        config: EncoderConfig,
        depth_config: EncoderConfig | None = None,
        features: dict[str, dict] | None = None,
        **options: Any,
    ) -> None:
        self.root, self.fps, self.config, self.options = Path(root), fps, config, options
        self.depth_config = depth_config
        self.features = features  # the dataset's, live: its depth keys' depth_unit is set at frame 0
        self.cameras = dict(cameras)  # LeRobot's video key -> the recorder's camera
        self.keys = {key: cam.name for key, cam in cameras.items()}
        self.recorder: Recorder | None = None
        self._dirs: dict[str, Path] = {}
        self.recorder = self._start()

    @property
    def codec(self) -> str:
        """The encoder the rings are drained with ("libsvtav1", ...)."""
        if self.recorder is None:
            raise StateError("the encoder is closed")
        return self.recorder.codec

    @property
    def rgb_codec(self) -> str | None:
        """The RGB cameras' encoder, or None for a dataset whose only video is depth (whose
        ``codec`` is then the depth encoder's)."""
        return self.codec if any(not cam.is_depth for cam in self.cameras.values()) else None

    @property
    def depth(self) -> dict[str, Depth]:
        """The depth keys' settings, as the rings are made for them now."""
        return {key: cam.depth for key, cam in self.cameras.items() if cam.depth is not None}

    def _start(self) -> Recorder:
        return Recorder(
            self.root,
            self.fps,
            {cam.name: cam for cam in self.cameras.values()},
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
            dtype = DEPTH_DTYPE.get(self._unit(key) or "", spec.dtype)
            if dtype != spec.dtype:
                wrong[key] = dataclasses.replace(self.cameras[key], depth=dataclasses.replace(spec, dtype=dtype))
        if not wrong:
            return
        log.warning(
            "streamenc: depth frames of %s come as %s; restarting their encoders for that "
            "(install(..., depth_dtype=...) avoids this stall at the first frame)",
            sorted(wrong),
            sorted({c.dtype for c in wrong.values()}),
        )
        self.cameras.update(wrong)
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
        for key, cam in self.cameras.items():
            value = frame.get(key)
            if cam.is_depth and isinstance(value, np.ndarray):  # tensors: LeRobot converts them first
                spec = self._depth_spec_for(key, value)
                (cam if spec is cam.depth else dataclasses.replace(cam, depth=spec)).frame(value)
            elif not cam.is_depth and (isinstance(value, np.ndarray) or framelib.is_pil(value)):
                cam.frame(value, strict=False)

    def feed_frame(self, video_key: str, image: Any) -> None:
        if not self.active or self.recorder is None:
            raise StateError("No active episode: LeRobot's add_frame starts one at frame 0")
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
            raise StateError("No active episode to finish")
        self._dirs = {}
        videos = self.recorder.end_episode()
        out = {}
        for key, cam in self.keys.items():
            video = videos[cam]
            raw = None
            if video.stats is not None:
                scale = 1.0 if self.cameras[key].is_depth else 255.0
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
