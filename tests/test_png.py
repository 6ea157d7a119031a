"""PNG fallback: LeRobot's layout, lossless pixels, and write errors that surface."""

from __future__ import annotations

import errno

import av
import numpy as np
import pytest

from streamenc import DiskFull, Recorder, ShmTooSmall, StreamencError, segments, testing
from streamenc import ring as ringmod
from streamenc.synthetic import SyntheticCamera

H, W = 120, 160


def _read_png(path) -> np.ndarray:
    with av.open(str(path)) as c:
        return next(c.decode(video=0)).to_ndarray(format="rgb24")


def test_png_fallback_writes_lerobot_layout_with_exact_pixels(tmp_path):
    cams = {"wrist": SyntheticCamera(H, W, seed=1), "top": SyntheticCamera(H, W, seed=2)}
    with Recorder(tmp_path, fps=30, cameras={n: (H, W) for n in cams}, png_fallback=True) as rec:
        assert rec.codec == "png"
        for ep, n in ((0, 12), (1, 7)):
            rec.start_episode()
            for i in range(n):
                rec.add_frame({name: cam.frame(i) for name, cam in cams.items()})
            out = rec.end_episode()
            for name, cam in cams.items():
                d = tmp_path / "images" / name / f"episode-{ep:06d}"
                assert out[name].path == d and out[name].frames == n and out[name].codec == "png"
                assert sorted(p.name for p in d.iterdir()) == [f"frame-{i:06d}.png" for i in range(n)]
                for i in range(n):
                    assert np.array_equal(_read_png(d / f"frame-{i:06d}.png"), cam.expected(i))
                assert out[name].stats["mean"].shape == (3, 1, 1)
    assert not (tmp_path / "videos").exists()


def test_png_cancel_removes_the_episode(tmp_path):
    cam = SyntheticCamera(H, W)
    with Recorder(tmp_path, cameras={"a": (H, W)}, png_fallback=True) as rec:
        rec.start_episode()
        for i in range(5):
            rec.add_frame({"a": cam.frame(i)})
        rec.cancel_episode()
    assert not (tmp_path / "images" / "a" / "episode-000000").exists()


@pytest.mark.parametrize("code,error", [(errno.EIO, StreamencError), (errno.ENOSPC, DiskFull)])
def test_injected_write_error_surfaces_at_end_episode(tmp_path, code, error):
    cam = SyntheticCamera(H, W)
    with Recorder(tmp_path, cameras={"a": (H, W)}, png_fallback=True) as rec:
        real = testing.backend(rec).write

        def flaky(path, data):
            if path.name == "frame-000003.png":
                raise OSError(code, "injected", str(path))
            real(path, data)

        testing.backend(rec).write = flaky
        rec.start_episode()
        for i in range(8):
            rec.add_frame({"a": cam.frame(i)})
        with pytest.raises(error) as info:
            rec.end_episode()
        assert "frame-000003.png" in str(info.value)
        if error is DiskFull:
            assert info.value.needed > 0
        testing.backend(rec).write = real  # the recorder goes on after the error
        rec.start_episode()
        rec.add_frame({"a": cam.frame(0)})
        assert rec.end_episode()["a"].frames == 1
    written = sorted(p.name for p in (tmp_path / "images" / "a" / "episode-000000").iterdir())
    assert written == [f"frame-{i:06d}.png" for i in range(8) if i != 3]


def test_shm_too_small_falls_back_to_png_with_a_warning_or_raises(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(ringmod, "shm_free_bytes", lambda path=segments.SHM_DIR: 1 << 20)
    cam = SyntheticCamera(H, W)
    with caplog.at_level("WARNING", logger="streamenc"):
        with Recorder(tmp_path, cameras={"a": (H, W)}) as rec:
            assert rec.codec == "png"
            rec.start_episode()
            rec.add_frame({"a": cam.frame(0)})
            rec.add_frame({"a": cam.frame(1)})
            assert rec.end_episode()["a"].frames == 2
    assert "recording PNGs instead" in caplog.text
    with pytest.raises(ShmTooSmall):
        Recorder(tmp_path / "strict", cameras={"a": (H, W)}, png_fallback=False)
