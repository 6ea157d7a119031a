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

One module per role; this one only names what users import:

- ``installer``: ``install``, the sequence of the steps below;
- ``versions``: the release lines this adapter knows (``check_version``);
- ``seams``: every private LeRobot attribute, reached there only (``Seams``);
- ``settings``: LeRobot's codec names and encoder settings to ours and back;
- ``encoder``: ``StreamencVideoEncoder``, what LeRobot's save path talks to;
- ``hooks``: the monkeypatches (add_frame, save_episode and its chunk append, the image
  writer, ``installing``);
- ``journal``: one durable file per saved episode, so that a crash loses none;
- ``recovery``: ``repair``, a dataset made whole again from its journal (and ``resume``);
- ``cli``: ``installing`` (the dataset class that installs itself), ``record``,
  ``rollout`` and their console scripts.
"""

from __future__ import annotations

import importlib.metadata  # noqa: F401  (tests patch streamenc.lerobot.importlib.metadata.version)

from ..codecs import EncoderConfig, probe
from .cli import installing, main, main_rollout, record, rollout
from .encoder import WORK_DIR, StreamencVideoEncoder
from .installer import install, resume
from .recovery import Report, repair
from .seams import Seams, encoder_of, image_writer_of
from .settings import codec_kwargs
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
    "Report",
    "repair",
    "resume",
    "rollout",
]
