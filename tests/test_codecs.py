"""Encoder settings: LeRobot names mapped per family, bad values refused, and the probe."""

from __future__ import annotations

import os

import pytest

from streamenc import ConfigError, EncoderConfig, EncoderUnavailable, probe
from streamenc.codecs import codec_options, depth_config, input_format, rejection_cause, select


def test_defaults_are_lerobots():
    cfg = EncoderConfig()
    assert (cfg.vcodec, cfg.pix_fmt, cfg.g, cfg.crf, cfg.fast_decode) == ("libsvtav1", "yuv420p", 2, 30, 0)
    assert codec_options(cfg) == {
        "g": "2",
        "crf": "30",
        "preset": "12",
        "svtav1-params": "lookahead=0:hierarchical-levels=2",
    }


def test_svt_mapping_uses_svtav1_params_for_threads_and_fast_decode():
    opts = codec_options(EncoderConfig(preset=8, crf=35, g=30, fast_decode=1, threads=3))
    assert opts == {"g": "30", "crf": "35", "preset": "8", "svtav1-params": "lp=3:fast-decode=1"}
    assert codec_options(EncoderConfig(), threads=1)["svtav1-params"] == "lp=1:lookahead=0:hierarchical-levels=2"


def test_x264_mapping():
    opts = codec_options(EncoderConfig(vcodec="libx264", crf=23, threads=2, fast_decode=1))
    assert opts == {"g": "2", "crf": "23", "preset": "veryfast", "bf": "0", "threads": "2", "tune": "fastdecode"}
    assert codec_options(EncoderConfig(vcodec="libx264", preset="ultrafast"))["preset"] == "ultrafast"
    assert input_format("libx264") == ""


@pytest.mark.parametrize("name", ["h264_nvenc", "hevc_nvenc", "av1_nvenc"])
def test_nvenc_mapping_takes_rgb_and_constant_quality(name):
    opts = codec_options(EncoderConfig(vcodec=name, preset=2, crf=28, threads=4))
    assert opts == {"g": "2", "preset": "p2", "rc": "vbr", "cq": "28", "b": "0"}
    assert codec_options(EncoderConfig(vcodec=name, preset="p7"))["preset"] == "p7"
    assert codec_options(EncoderConfig(vcodec=name))["preset"] == "p4"
    assert input_format(name) == "rgb0"  # converted to YUV on the GPU, not by swscale


def test_x265_mapping_has_no_b_frames_and_caps_its_pool():
    opts = codec_options(EncoderConfig(vcodec="libx265", crf=20, threads=2, fast_decode=1))
    assert opts == {
        "g": "2",
        "crf": "20",
        "preset": "veryfast",
        "tune": "fastdecode",
        "x265-params": "bframes=0:log-level=error:pools=2",
    }
    assert select(EncoderConfig(vcodec="auto")) != "libx265"  # only when asked: slow for RGB


def test_extra_options_pass_through():
    opts = codec_options(EncoderConfig(extra={"svtav1-params": "tune=0", "tile-columns": "1"}))
    # a *-params string adds to ours, after them (the encoder takes the last value of a key)
    assert opts["svtav1-params"] == "lookahead=0:hierarchical-levels=2:tune=0"
    assert opts["tile-columns"] == "1"
    x265 = codec_options(depth_config(), threads=2)
    assert x265["x265-params"] == "bframes=0:log-level=error:pools=2:lossless=1"


def test_depth_pix_fmt_is_for_libx265_only():
    with pytest.raises(ConfigError, match="libx265 only"):
        EncoderConfig(vcodec="libsvtav1", pix_fmt="gray12le")
    assert select(depth_config()) == "libx265"


@pytest.mark.parametrize(
    "kwargs,what",
    [
        ({"vcodec": "h265"}, "vcodec"),
        ({"pix_fmt": "rgb24"}, "pix_fmt"),
        ({"g": 0}, "g"),
        ({"g": 2.5}, "g"),
        ({"crf": 64}, "crf"),
        ({"crf": -1}, "crf"),
        ({"fast_decode": 3}, "fast_decode"),
        ({"threads": 0}, "threads"),
        ({"preset": 14}, "preset"),
        ({"preset": "fast"}, "preset"),
        ({"vcodec": "libx264", "preset": 5}, "preset"),
        ({"vcodec": "libx264", "crf": 52}, "crf"),
        ({"vcodec": "h264_nvenc", "preset": "p8"}, "preset"),
        ({"vcodec": "h264_nvenc", "crf": 60}, "cq"),
    ],
)
def test_invalid_settings_raise_a_value_error_at_construction(kwargs, what):
    with pytest.raises(ConfigError, match=what) as info:
        EncoderConfig(**kwargs)
    assert isinstance(info.value, ValueError)


def _has_nvidia_driver() -> bool:
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia")


def test_probe_opens_real_sessions():
    results = {r.name: r for r in probe()}
    assert list(results) == ["h264_nvenc", "hevc_nvenc", "av1_nvenc", "libsvtav1", "libx264", "libx265"]
    assert results["libsvtav1"].usable and results["libx264"].usable and results["libx265"].usable
    assert probe() == list(results.values())  # cached: same answers


@pytest.mark.skipif(_has_nvidia_driver(), reason="this machine has an NVIDIA driver; NVENC may really open")
def test_without_nvidia_nvenc_is_rejected_with_ffmpegs_reason_and_auto_picks_svt():
    results = {r.name: r for r in probe()}
    for name in ("h264_nvenc", "hevc_nvenc", "av1_nvenc"):
        assert not results[name].usable
        assert name in results[name].reason and "Error" in results[name].reason
    assert select(EncoderConfig(vcodec="auto")) == "libsvtav1"
    with pytest.raises(EncoderUnavailable, match=r"h264_nvenc cannot be used here: .*Usable: libsvtav1, libx264"):
        select(EncoderConfig(vcodec="h264_nvenc"))


def test_a_rejection_leads_with_its_cause_in_words_a_user_can_act_on():
    for name, info in {r.name: r for r in probe()}.items():
        if "Cannot load libcuda.so.1" in info.reason:  # no NVIDIA driver: CI, and most laptops
            assert info.reason.startswith("no NVIDIA driver here"), (name, info.reason)
            assert "ffmpeg" in info.reason.lower() or "libcuda" in info.reason  # FFmpeg's own words follow
    assert rejection_cause("[h264_nvenc] OpenEncodeSessionEx failed: unsupported device (2)").startswith(
        "this GPU has no NVENC"
    )
    assert "session limit" in rejection_cause("OpenEncodeSessionEx failed: incompatible client key (21)")
    assert "older than" in rejection_cause("Driver does not support the required nvenc API version. Required: 12.1")
    assert rejection_cause("something new") == ""


def test_named_usable_codec_is_taken_as_is():
    assert select(EncoderConfig(vcodec="libx264")) == "libx264"


@pytest.mark.parametrize("preset", [12, 8])
def test_svt_low_latency_settings_at_g2_write_the_same_bytes(preset):
    """codec_options turns SVT's look-ahead off and shortens its mini-GOP at g=2; that
    must not change the video."""
    import io
    from fractions import Fraction

    import av

    from streamenc.synthetic import SyntheticCamera

    cam = SyntheticCamera(96, 128, seed=4)

    def encode(params: str) -> bytes:
        buf = io.BytesIO()
        with av.open(buf, "w", format="mp4") as c:
            s = c.add_stream("libsvtav1", rate=30)
            s.height, s.width, s.pix_fmt, s.time_base = 96, 128, "yuv420p", Fraction(1, 30)
            s.options = {"g": "2", "crf": "30", "preset": str(preset), "svtav1-params": params}
            for i in range(24):
                frame = av.VideoFrame.from_ndarray(cam.frame(i), format="rgb24")
                frame.pts = i
                c.mux(s.encode(frame))
            c.mux(s.encode(None))
        return buf.getvalue()

    ours = codec_options(EncoderConfig(preset=preset, threads=1))["svtav1-params"]
    assert "lookahead=0" in ours and "hierarchical-levels=2" in ours
    assert encode(ours) == encode("lp=1")
    for g in (1, 30):  # there they would change the video
        params = codec_options(EncoderConfig(g=g)).get("svtav1-params", "")
        assert "lookahead" not in params and "hierarchical" not in params
