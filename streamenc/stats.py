"""Per-episode image statistics in LeRobot's format, computed in the encoder process.

LeRobot's compute_stats samples frames, downsamples them so the long side is about
150 px, and reports per-channel min, max, mean, std, count (how many frames it sampled)
and quantiles, scaled to [0, 1] with shape (3, 1, 1). For uint8 frames an exact 256-bin histogram per channel
gives all of these without keeping any frame, so we update one per frame.
"""

from __future__ import annotations

import numpy as np

QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)  # LeRobot 0.4.4 DEFAULT_QUANTILES
_LEVELS = np.arange(256, dtype=np.float64)


def downsample_factor(height: int, width: int, target: int = 150, threshold: int = 300) -> int:
    """LeRobot's auto_downsample_height_width stride: long side to about ``target`` px."""
    if max(height, width) < threshold:
        return 1
    return int(width / target) if width > height else int(height / target)


def sample_count(frames: int) -> int:
    """The ``count`` LeRobot's PNG path gives an episode of ``frames`` frames: how many it
    samples (compute_stats.estimate_num_samples: all of them up to 100, then n**0.75,
    at most 10000). LeRobot weighs each episode by it when it aggregates stats, so an
    episode recorded here weighs what the same episode recorded by LeRobot does (a
    resumed dataset holds both). The stats themselves are of every frame."""
    return max(min(frames, 100), min(int(frames**0.75), 10_000))


class EpisodeStats:
    """Accumulates per-channel histograms of downsampled HWC uint8 frames."""

    def __init__(self, height: int, width: int, channels: int = 3) -> None:
        self.step = downsample_factor(height, width)
        self.channels = channels
        self._offsets = (np.arange(channels) * 256).astype(np.intp)
        self.reset()

    def reset(self) -> None:
        self.hist = np.zeros((self.channels, 256), np.int64)
        self.frames = 0

    def update(self, frame: np.ndarray) -> None:
        small = frame[:: self.step, :: self.step]
        idx = small.astype(np.intp) + self._offsets
        self.hist += np.bincount(idx.ravel(), minlength=256 * self.channels).reshape(self.channels, 256)
        self.frames += 1

    def raw(self) -> dict[str, np.ndarray] | None:
        """Stats in pixel units, shape (C,); None before two frames (as LeRobot)."""
        if self.frames < 2:
            return None
        h = self.hist.astype(np.float64)
        n = h.sum(axis=1)
        mean = (h * _LEVELS).sum(axis=1) / n
        var = (h * _LEVELS**2).sum(axis=1) / n - mean**2
        nonzero = self.hist > 0
        out = {
            "min": nonzero.argmax(axis=1).astype(np.float64),
            "max": (255 - nonzero[:, ::-1].argmax(axis=1)).astype(np.float64),
            "mean": mean,
            "std": np.sqrt(np.maximum(var, 0.0)),
            "count": np.array([sample_count(self.frames)], np.int64),
        }
        for q in QUANTILES:
            out[f"q{int(q * 100):02d}"] = self._quantile(q)
        return out

    def _quantile(self, q: float) -> np.ndarray:
        """np.quantile's default (linear) of the pixel values, read off the histogram."""
        cum = np.cumsum(self.hist, axis=1)
        out = np.empty(self.channels)
        for c in range(self.channels):
            pos = q * (cum[c, -1] - 1)
            lo = int(np.floor(pos))
            v_lo = np.searchsorted(cum[c], lo + 1)
            v_hi = np.searchsorted(cum[c], min(lo + 2, cum[c, -1]))
            out[c] = v_lo + (pos - lo) * (v_hi - v_lo)
        return out

    def lerobot(self) -> dict[str, np.ndarray] | None:
        """Stats as LeRobot's compute_episode_stats gives them: [0, 1], shape (C, 1, 1)."""
        raw = self.raw()
        if raw is None:
            return None
        return {k: v if k == "count" else (v / 255.0).reshape(-1, 1, 1) for k, v in raw.items()}
