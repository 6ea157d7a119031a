"""Episode stats agree with LeRobot 0.4.4's own compute_stats on the same frames."""

from __future__ import annotations

import numpy as np
from lerobot.datasets import compute_stats as lerobot_stats

from streamenc import Recorder
from streamenc.stats import EpisodeStats, downsample_factor
from streamenc.synthetic import SyntheticCamera


def _lerobot_episode_stats(frames: np.ndarray, as_float: bool) -> dict:
    """LeRobot's path for a video feature: sample frames, downsample, per-channel stats, /255."""
    chw = frames.transpose(0, 3, 1, 2)
    idx = lerobot_stats.sample_indices(len(chw))
    sampled = np.stack([lerobot_stats.auto_downsample_height_width(chw[i]) for i in idx])
    if as_float:
        sampled = sampled.astype(np.float64)
    stats = lerobot_stats.get_feature_stats(sampled, axis=(0, 2, 3), keepdims=True)
    return {k: v if k == "count" else np.squeeze(v / 255.0, axis=0) for k, v in stats.items()}


def test_downsampling_matches_lerobot():
    for h, w in [(480, 640), (720, 1280), (1080, 1920), (240, 320), (96, 128)]:
        img = np.zeros((3, h, w), np.uint8)
        assert (
            img[:, :: downsample_factor(h, w), :: downsample_factor(h, w)].shape
            == lerobot_stats.auto_downsample_height_width(img).shape
        )


def test_recorded_stats_match_lerobot_compute_stats(tmp_path):
    cam = SyntheticCamera(240, 320, seed=3)
    n = 90  # LeRobot samples every frame of an episode this short, so both see the same frames
    with Recorder(tmp_path, fps=30, cameras={"front": (240, 320)}) as rec:
        rec.start_episode()
        for i in range(n):
            rec.add_frame({"front": cam.frame(i)})
        ours = rec.end_episode()["front"].stats
    frames = np.stack([cam.expected(i) for i in range(n)])
    theirs_u8 = _lerobot_episode_stats(frames, as_float=False)
    theirs = _lerobot_episode_stats(frames, as_float=True)

    assert set(ours) == set(theirs)
    for key in ours:
        assert ours[key].shape == theirs[key].shape, key
    assert ours["count"][0] == theirs["count"][0] == n
    for key in ("min", "max", "mean"):
        np.testing.assert_allclose(ours[key], theirs_u8[key], atol=1e-12, err_msg=key)
    # LeRobot 0.4.4 squares uint8 pixels, which wraps: its std from uint8 input is wrong.
    # Fed floats, its own function gives the true std, and ours matches that.
    np.testing.assert_allclose(ours["std"], theirs["std"], rtol=1e-9)
    for key in ("q01", "q10", "q50", "q90", "q99"):  # LeRobot reads quantiles off a 5000-bin histogram
        np.testing.assert_allclose(ours[key], theirs[key], atol=0.5 / 255, err_msg=key)


def test_fewer_than_two_frames_give_no_stats_like_lerobot():
    s = EpisodeStats(48, 64)
    s.update(np.zeros((48, 64, 3), np.uint8))
    assert s.lerobot() is None
