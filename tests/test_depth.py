"""Depth cameras: LeRobot 0.6's quantizer bit for bit, depth stats, the Recorder round trip
(exact 12-bit codes back from the video), bad input, the PNG (TIFF) fallback, and the
fault guarantees (spill, kill -9 of an encoder, of the recorder) for depth."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import av
import numpy as np
import psutil
import pytest
from helpers import wait_for
from PIL import Image

from streamenc import Depth, EncoderConfig, FrameError, Recorder
from streamenc.depth import QMAX, DepthStats, quantize
from streamenc.stats import QUANTILES, downsample_factor
from streamenc.synthetic import SyntheticCamera, SyntheticDepth
from streamenc.verify import check, check_depth

H, W, FPS = 240, 320, 30

try:  # lerobot >= 0.6 (the Python 3.12 venv of `make test`); 0.4.x has no depth
    from lerobot.datasets.depth_utils import quantize_depth
except ImportError:
    quantize_depth = None
needs_lerobot06 = pytest.mark.skipif(
    quantize_depth is None, reason="lerobot < 0.6 has no depth; make test runs this under lerobot 0.6.1"
)


def _edge_frames(rng) -> dict[str, np.ndarray]:
    """Random frames of each kind, with the edge cases written into the first row."""
    mm = rng.integers(0, 65536, (H, W), dtype=np.uint16)
    mm[0, :8] = [0, 1, 9, 10, 11, 9999, 10000, 65535]  # 0, below min, at min, at max, above, uint16 max
    m = (rng.random((H, W)) * 12 - 1).astype(np.float32)
    m[0, :10] = [0, np.nan, np.inf, -np.inf, 0.005, 0.01, 10.0, 10.5, -3.5, -4.0]
    near = rng.uniform(0.2, 1.5, (H, W)).astype(np.float32)  # where log quantization spends its codes
    return {"uint16": mm, "float32": m, "float64": m.astype(np.float64), "near": near}


@needs_lerobot06
@pytest.mark.parametrize("params", [{}, {"use_log": False}, {"depth_min": 0.2, "depth_max": 4.0, "shift": 0.5}])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quantize_is_lerobots_bit_for_bit(params, seed):
    spec = Depth(H, W, **params)
    for kind, frame in _edge_frames(np.random.default_rng(seed)).items():
        with np.errstate(all="ignore"):
            theirs = quantize_depth(frame, video_backend=None, **params)
        ours = quantize(frame, spec)
        assert ours.dtype == np.uint16 and ours.shape == (H, W)
        assert np.array_equal(ours, theirs), (kind, np.argwhere(ours != theirs)[:5])
        assert np.array_equal(quantize(frame[..., None], spec), theirs)  # (H, W, 1) as LeRobot takes it


def test_non_finite_and_out_of_range_depth_have_defined_codes():
    m = np.array([[np.nan, -np.inf, np.inf, 0.0, -1.0, -9.0, 0.001, 0.01, 10.0, 50.0]], np.float32)
    codes = quantize(np.repeat(m, 2, axis=0), Depth(2, 10, "float32"))[0]
    assert codes.tolist() == [0, 0, QMAX, 0, 0, 0, 0, 0, QMAX, QMAX]
    mm = np.array([[0, 10, 9000, 10000, 65535]], np.uint16)
    codes = quantize(mm)[0].tolist()
    assert codes[:2] == [0, 0] and 0 < codes[2] < QMAX and codes[3:] == [QMAX, QMAX]
    # in between: monotonic, and the float64 formula to within rounding
    d = np.linspace(0.01, 10.0, 5000, dtype=np.float32)[None]
    codes = quantize(d)[0].astype(np.int64)
    assert (np.diff(codes) >= 0).all() and codes[0] == 0 and codes[-1] == QMAX
    exact = (np.log(d[0].astype(np.float64) + 3.5) - np.log(3.51)) / (np.log(13.5) - np.log(3.51)) * QMAX
    assert np.abs(codes - exact).max() <= 0.5 + 1e-3


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_depth_stats_are_numpys_over_lerobots_downsampled_frames(dtype):
    h, w = 480, 640
    cam = SyntheticDepth(h, w, dtype)
    stats = DepthStats(h, w, dtype)
    frames = [cam.expected(i) for i in range(12)]
    if dtype == "float32":
        frames[3][7, 9:13] = [np.nan, np.inf, -np.inf, np.nan]  # left out of the stats
    for f in frames:
        stats.update(f)
    s = downsample_factor(h, w)
    vals = np.concatenate([f[::s, ::s].ravel() for f in frames]).astype(np.float64)
    vals = vals[np.isfinite(vals)]
    out = stats.lerobot()
    assert out["count"].tolist() == [12]
    for key in ("min", "max", "mean", "std"):
        assert out[key].shape == (1, 1, 1)
    np.testing.assert_allclose(out["min"].ravel(), vals.min(), rtol=1e-7)
    np.testing.assert_allclose(out["max"].ravel(), vals.max(), rtol=1e-7)
    np.testing.assert_allclose(out["mean"].ravel(), vals.mean(), rtol=1e-9)
    np.testing.assert_allclose(out["std"].ravel(), vals.std(), rtol=1e-7)
    for q in QUANTILES:  # exact for uint16; float32 bins are 2^-11 of the value wide
        want = np.quantile(vals, q)
        rtol = 1e-12 if dtype == "uint16" else 2.0**-12
        np.testing.assert_allclose(out[f"q{int(q * 100):02d}"].ravel(), want, rtol=rtol, err_msg=str(q))
    assert DepthStats(h, w, dtype).raw() is None  # fewer than 2 frames: none, as LeRobot


def _assert_exact(path, cam, spec, n):
    c = check_depth(path, cam, spec)
    assert c.frames == n and c.in_order(n), (c.frames, c.indices[:10], c.max_mean_abs_error)
    assert c.cfr(FPS)
    with av.open(str(path)) as f:
        stream = f.streams.video[0]
        assert (stream.codec_context.name, stream.pix_fmt) == ("hevc", "gray12le")


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_depth_camera_records_exact_12_bit_codes_beside_an_rgb_camera(tmp_path, dtype):
    rgb, depth = SyntheticCamera(H, W, seed=1), SyntheticDepth(H, W, dtype, seed=2)
    spec = Depth(H, W, dtype)
    n = 45
    with Recorder(tmp_path, FPS, {"rgb": (H, W), "depth": spec}) as rec:
        assert rec.codec == "libsvtav1"
        rec.start_episode()
        for i in range(n):
            d = depth.frame(i)
            if i % 3 == 1:
                d = d[..., None]  # (H, W, 1), as LeRobot's features are declared
            elif i % 3 == 2 and dtype == "float32":
                d = d.astype(np.float64)  # converted to float32 on its way into the ring
            rec.add_frame({"rgb": rgb.frame(i), "depth": d})
        videos = rec.end_episode()
    assert videos["depth"].codec == "libx265" and videos["depth"].frames == n
    _assert_exact(videos["depth"].path, depth, spec, n)
    c = check(videos["rgb"].path, rgb)
    assert c.frames == n and c.in_order(n)
    stats = videos["depth"].stats
    assert stats["mean"].shape == (1, 1, 1) and stats["count"].tolist() == [n]
    k = downsample_factor(H, W)
    want = np.mean([depth.expected(i)[::k, ::k].astype(np.float64).mean() for i in range(n)])
    np.testing.assert_allclose(stats["mean"].ravel(), want, rtol=1e-6)  # in mm or m: not divided by 255


@pytest.mark.parametrize(
    "frame,match",
    [
        (np.zeros((H, W, 3), np.uint16), "3 channels"),
        (np.zeros((3, H, W), np.uint16), "3 channels"),
        (np.zeros((H, W), np.uint8), "dtype uint8"),
        (np.zeros((H, W), np.float32), "declare the camera with dtype='float32'"),
        (np.zeros((H // 2, W), np.uint16), "shape"),
        ([[0]], "numpy array"),
    ],
)
def test_bad_depth_frames_raise_frame_error_and_the_episode_goes_on(tmp_path, frame, match):
    depth = SyntheticDepth(H, W)
    spec = Depth(H, W)
    with Recorder(tmp_path, FPS, {"depth": spec}) as rec:
        rec.start_episode()
        for i in range(10):
            rec.add_frame({"depth": depth.frame(i)})
            with pytest.raises(FrameError, match=match):
                rec.add_frame({"depth": frame})
            with pytest.raises(FrameError, match=match):
                rec.add_camera_frame("depth", frame)
        videos = rec.end_episode()
    _assert_exact(videos["depth"].path, depth, spec, 10)


def test_a_float32_depth_camera_refuses_integer_frames(tmp_path):
    with Recorder(tmp_path, FPS, {"depth": Depth(H, W, "float32")}) as rec:
        rec.start_episode()
        with pytest.raises(FrameError, match="declare the camera with dtype='uint16'"):
            rec.add_frame({"depth": np.zeros((H, W), np.uint16)})
        with pytest.raises(FrameError, match="expected float32 metres"):
            rec.add_frame({"depth": np.zeros((H, W), np.int32)})
        rec.cancel_episode()


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_png_fallback_writes_depth_as_lerobots_raw_tiffs(tmp_path, dtype):
    depth, rgb = SyntheticDepth(H, W, dtype), SyntheticCamera(H, W)
    with Recorder(tmp_path, FPS, {"rgb": (H, W), "depth": Depth(H, W, dtype)}, png_fallback=True) as rec:
        rec.start_episode()
        for i in range(6):
            rec.add_frame({"rgb": rgb.frame(i), "depth": depth.frame(i)[..., None]})
        out = rec.end_episode()
    d = tmp_path / "images" / "depth" / "episode-000000"
    assert sorted(p.name for p in d.iterdir()) == [f"frame-{i:06d}.tiff" for i in range(6)]
    for i in range(6):
        with Image.open(d / f"frame-{i:06d}.tiff") as img:
            assert img.mode == ("I;16" if dtype == "uint16" else "F")
            back = np.asarray(img)
        assert back.dtype == np.dtype(dtype) and np.array_equal(back, depth.expected(i))
    assert out["depth"].stats["max"].shape == (1, 1, 1)
    assert sorted(p.name for p in (tmp_path / "images" / "rgb" / "episode-000000").iterdir())[0].endswith(".png")


@pytest.mark.slow
def test_depth_under_overload_spills_and_loses_nothing(tmp_path):
    """x265 lossless cannot take 480p depth at 4x real time here: the ring fills, frames
    spill to disk, and every frame's codes still come back exactly, in order."""
    depth = SyntheticDepth(480, 640, "uint16")
    spec = Depth(480, 640)
    n, spilled = 240, 0
    with Recorder(tmp_path, FPS, {"depth": spec}, slots=16) as rec:
        rec.start_episode()
        tick = time.perf_counter()
        for i in range(n):
            rec.add_frame({"depth": depth.frame(i)})
            spilled = max(spilled, rec.health()["depth"].spilled)
            tick += 1 / (4 * FPS)
            time.sleep(max(0.0, tick - time.perf_counter()))
        videos = rec.end_episode()
    assert spilled > 0, "the overload never reached the spill"
    _assert_exact(videos["depth"].path, depth, spec, n)


@pytest.mark.slow
def test_kill_9_of_a_depth_encoder_mid_episode_loses_no_frame(tmp_path):
    depth, spec = SyntheticDepth(H, W, "float32"), Depth(H, W, "float32")
    n = 150
    with Recorder(tmp_path, FPS, {"depth": spec, "rgb": (H, W)}) as rec:
        rgb = SyntheticCamera(H, W)
        rec.start_episode()
        victim = rec.health()["depth"].pid
        for i in range(n):
            if i == 70:
                os.kill(victim, signal.SIGKILL)
            rec.add_frame({"depth": depth.frame(i), "rgb": rgb.frame(i)})
            time.sleep(1 / (2 * FPS))
        health = rec.health()
        videos = rec.end_episode()
    assert health["depth"].restarts == 1 and health["rgb"].restarts == 0
    assert videos["depth"].frames == n
    _assert_exact(videos["depth"].path, depth, spec, n)
    assert sorted(os.listdir(tmp_path / "videos" / "depth")) == ["episode-000000.mp4"]


RECORDER_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from streamenc import Depth, Recorder
    from streamenc.synthetic import SyntheticDepth
    cam = SyntheticDepth(240, 320)
    with Recorder(sys.argv[1], fps=30, cameras={"depth": Depth(240, 320)}) as rec:
        print("encoder", rec.health()["depth"].pid, flush=True)
        rec.start_episode()
        for i in range(int(sys.argv[2])):
            rec.add_frame({"depth": cam.frame(i)})
            time.sleep(1 / 30)
        print("added", flush=True)
        time.sleep(600)  # mid-episode, until the test kills it
    """
)


@pytest.mark.slow
def test_kill_9_of_the_recorder_leaves_a_playable_depth_video_with_exact_codes(tmp_path):
    """The fragmented MP4: the recorder dies mid-episode; its encoder drains the ring and
    closes the file, and what is in it decodes to the exact codes of the frames put."""
    proc = subprocess.Popen(
        [sys.executable, "-c", RECORDER_SCRIPT, str(tmp_path), "90"], stdout=subprocess.PIPE, text=True
    )
    encoder = int(proc.stdout.readline().split()[1])
    assert proc.stdout.readline() == "added\n"
    proc.kill()
    proc.wait(10)
    wait_for(lambda: not psutil.pid_exists(encoder), 20, "the encoder to end after its recorder")
    video = tmp_path / "videos" / "depth" / "episode-000000.mp4"
    c = check_depth(video, SyntheticDepth(240, 320), Depth(240, 320))
    assert c.frames == 90 and c.in_order(90), (c.frames, c.indices[-5:])
    subprocess.run([sys.executable, "-m", "streamenc", "clean"], capture_output=True, timeout=30)


def test_depth_encoder_must_be_a_12_bit_gray_config(tmp_path):
    from streamenc import ConfigError

    with pytest.raises(ConfigError, match="depth_encoder must encode 12-bit gray"):
        Recorder(tmp_path, FPS, {"d": Depth(H, W)}, depth_encoder=EncoderConfig())
    for dtype in ("float64", "millimetres", np.uint8):
        with pytest.raises(ConfigError, match="uint16 \\(millimetres\\) or float32"):
            Depth(H, W, dtype)
