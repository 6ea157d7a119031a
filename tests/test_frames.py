"""Frame contracts: the Recorder's strict one, LeRobot's lenient one, and the one-pass
conversion into a slot; plus add_camera_frame end to end."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from streamenc import FrameError, Recorder, StreamencError
from streamenc import frames as fl
from streamenc.synthetic import SyntheticCamera
from streamenc.verify import check

SHAPE = (48, 64, 3)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([np.float16, np.float32, np.float64]), st.booleans())
def test_float_frames_round_trip_exactly(seed, dtype, chw):
    u8 = np.random.default_rng(seed).integers(0, 256, SHAPE, dtype=np.uint8)
    src = (u8 / 255.0).astype(dtype)
    if chw:
        src = np.ascontiguousarray(src.transpose(2, 0, 1))
    dst = np.zeros(SHAPE, np.uint8)
    fl.write(dst, fl.lenient("c", src, SHAPE))
    np.testing.assert_array_equal(dst, u8)


def test_write_converts_in_chunks_for_tall_frames():
    u8 = np.random.default_rng(1).integers(0, 256, (2000, 48, 3), dtype=np.uint8)  # more rows than one chunk
    dst = np.zeros_like(u8)
    fl.write(dst, u8.astype(np.float64) / 255)
    np.testing.assert_array_equal(dst, u8)


def test_lenient_accepts_chw_uint8_and_pil_as_views_or_arrays():
    u8 = np.random.default_rng(2).integers(0, 256, SHAPE, dtype=np.uint8)
    chw = np.ascontiguousarray(u8.transpose(2, 0, 1))
    view = fl.lenient("c", chw, SHAPE)
    assert np.shares_memory(view, chw) and view.shape == SHAPE
    np.testing.assert_array_equal(fl.lenient("c", Image.fromarray(u8), SHAPE), u8)
    gray = Image.fromarray(u8[..., 0])  # any PIL mode is converted to RGB
    np.testing.assert_array_equal(fl.lenient("c", gray, SHAPE)[..., 2], u8[..., 0])


@pytest.mark.parametrize(
    "frame, match",
    [
        (np.full(SHAPE, 1.5, np.float32), r"values in \[1.5, 1.5\], expected \[0, 1\]"),
        (np.full(SHAPE, -0.1), r"expected \[0, 1\]"),
        (np.full(SHAPE, np.nan, np.float32), r"expected \[0, 1\]"),
        (np.zeros(SHAPE, np.uint16), "dtype uint16"),
        (np.zeros((48, 64), np.uint8), "shape"),
        (np.zeros((64, 48, 3), np.uint8), "shape"),
        (Image.new("RGB", (48, 64)), "PIL image is 48x64, expected 64x48"),
        ([[0]], "numpy array or PIL image"),
    ],
)
def test_lenient_rejects_with_frame_error(frame, match):
    with pytest.raises(FrameError, match=match):
        fl.lenient("c", frame, SHAPE)


def test_add_camera_frame_records_lerobot_inputs(tmp_path):
    cam = SyntheticCamera(240, 320, seed=5)
    with Recorder(tmp_path, fps=30, cameras={"a": (240, 320), "b": (240, 320)}) as rec:
        rec.start_episode(videos={"a": tmp_path / "x" / "a.mp4", "b": tmp_path / "y" / "b.mp4"})
        for i in range(40):
            img = cam.frame(i)
            rec.add_camera_frame("a", img.transpose(2, 0, 1).astype(np.float32) / 255)
            rec.add_camera_frame("b", Image.fromarray(img) if i % 2 else img.transpose(2, 0, 1))
        with pytest.raises(StreamencError, match="out of step"):
            rec.add_camera_frame("a", cam.frame(40))
            rec.add_frame({"a": cam.frame(41), "b": cam.frame(41)})
        rec.add_camera_frame("b", cam.frame(40))
        with pytest.raises(FrameError, match="unknown camera"):
            rec.add_camera_frame("c", cam.frame(0))
        videos = rec.end_episode()
    assert videos["a"].path == tmp_path / "x" / "a.mp4"
    for name in "ab":
        result = check(videos[name].path, cam)
        assert result.frames == 41 and result.in_order() and result.max_mean_abs_error < 6


def test_start_episode_videos_must_name_every_camera(tmp_path):
    with Recorder(tmp_path, fps=30, cameras={"a": (64, 64), "b": (64, 64)}) as rec:
        with pytest.raises(StreamencError, match="a path for each camera"):
            rec.start_episode(videos={"a": tmp_path / "a.mp4"})
