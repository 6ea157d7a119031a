"""Episode stats: exact histograms against a plain numpy computation on the same frames.

The comparison with LeRobot's own compute_stats is in test_lerobot.py; these need no torch.
"""

from __future__ import annotations

import numpy as np
import pytest

from streamenc.stats import QUANTILES, EpisodeStats, downsample_factor


def _reference(frames: np.ndarray) -> dict:
    """What the stats mean, computed directly: per channel over every downsampled pixel."""
    step = downsample_factor(*frames.shape[1:3])
    px = frames[:, ::step, ::step].reshape(-1, frames.shape[-1]).astype(np.float64)
    out = {"min": px.min(0), "max": px.max(0), "mean": px.mean(0), "std": px.std(0)}
    for q in QUANTILES:
        out[f"q{int(q * 100):02d}"] = np.quantile(px, q, axis=0)
    return out


@pytest.mark.parametrize("shape", [(48, 64, 3), (480, 640, 3), (720, 1280, 3), (30, 40, 1)])
def test_histogram_stats_equal_the_direct_computation(shape):
    rng = np.random.default_rng(7)
    frames = rng.integers(0, 256, (12, *shape), dtype=np.uint8)
    frames[3] = 0  # the extremes, and a frame that is all one value
    frames[4] = 255
    s = EpisodeStats(*shape)
    for f in frames:
        s.update(f)
    raw, ref = s.raw(), _reference(frames)
    assert raw["count"][0] == len(frames)
    for key, value in ref.items():
        np.testing.assert_allclose(raw[key], value, rtol=1e-9, atol=1e-9, err_msg=key)
    scaled = s.lerobot()
    assert scaled["mean"].shape == (shape[2], 1, 1)
    np.testing.assert_allclose(scaled["mean"].ravel(), ref["mean"] / 255.0)
    assert scaled["count"][0] == len(frames)


def test_downsample_factor_takes_the_long_side_to_about_150_px():
    assert downsample_factor(480, 640) == 4 and downsample_factor(1080, 1920) == 12
    assert downsample_factor(240, 320) == 2 and downsample_factor(96, 128) == 1  # under 300 px: kept


def test_reset_starts_a_new_episode():
    s = EpisodeStats(48, 64)
    for v in (10, 20):
        s.update(np.full((48, 64, 3), v, np.uint8))
    s.reset()
    for v in (100, 200):
        s.update(np.full((48, 64, 3), v, np.uint8))
    np.testing.assert_allclose(s.raw()["mean"], [150, 150, 150])


def test_fewer_than_two_frames_give_no_stats_like_lerobot():
    s = EpisodeStats(48, 64)
    s.update(np.zeros((48, 64, 3), np.uint8))
    assert s.lerobot() is None
