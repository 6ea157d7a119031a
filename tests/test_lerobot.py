"""streamenc installed into the real lerobot: datasets written through LeRobot's own
add_frame / save_episode / finalize, read back as training reads them.

The same tests run against lerobot 0.4.4 (the dev venv) and 0.6.1 (Python 3.12, `make
test-lerobot06`); where the two differ (the hook's place, codec settings, resume), the
helpers below ask the installed lerobot, as the adapter does."""

from __future__ import annotations

import contextlib
import importlib.metadata
import inspect
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest
from helpers import CRASH_SEED
from lerobot.datasets import compute_stats as lerobot_stats
from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata
from PIL import Image

import streamenc.lerobot as sl
from streamenc import ConfigError, FrameError, Recorder, chunks
from streamenc.codecs import AUTO_ORDER
from streamenc.segments import PREFIX, SHM_DIR, owner
from streamenc.stats import downsample_factor
from streamenc.synthetic import SyntheticCamera, SyntheticDepth, read_index

pytestmark = pytest.mark.lerobot

H, W, FPS = 240, 320, 30
KEYS = ("observation.images.front", "observation.images.wrist")
REPO = "streamenc/test"
LEROBOT = importlib.metadata.version("lerobot")
RGB_CONFIG = "rgb_encoder" in inspect.signature(LeRobotDataset.create).parameters  # 0.6.x
# LeRobot 0.6 accumulates image stats in float32 (RunningQuantileStats), 0.4.4 in float64:
# its mean and std of 400k pixels are then off by up to ~1e-3 of the range; streamenc's are
# exact (integer histograms), so they agree with 0.6's to that float32 error only
STATS_TOL = 2e-3 if RGB_CONFIG else 1e-9


def _create(root: Path, features: dict | None = None, vcodec: str | None = None, **kwargs):
    """LeRobotDataset.create on any release; ``vcodec`` in LeRobot's names."""
    codec = sl.codec_kwargs(vcodec) if vcodec else {}
    return LeRobotDataset.create(REPO, FPS, features or _features(), root=root, **codec, **kwargs)


def _resume(root: Path, **kwargs):
    """Open an existing dataset to append episodes: resume() from 0.5.1, the constructor before."""
    if hasattr(LeRobotDataset, "resume"):
        return LeRobotDataset.resume(REPO, root=root, **kwargs)
    return LeRobotDataset(REPO, root=root, **kwargs)


def _owner(ds):
    """What holds the hook and the write path: the dataset (0.4.x) or its writer (0.5.1+)."""
    return sl.Seams(ds).owner


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
        np.testing.assert_allclose(ours[key], theirs_u8[key], atol=STATS_TOL, err_msg=key)
    # LeRobot 0.4.4 squares uint8 pixels, which wraps: its std from uint8 input is wrong.
    # Fed floats, its own function gives the true std, and ours matches that.
    np.testing.assert_allclose(ours["std"], theirs["std"], rtol=STATS_TOL)
    for key in ("q01", "q10", "q50", "q90", "q99"):  # LeRobot reads quantiles off a 5000-bin histogram
        np.testing.assert_allclose(ours[key], theirs[key], atol=0.5 / 255, err_msg=key)


def _features(chw: bool = False) -> dict:
    shape, names = ((3, H, W), ["channels", "height", "width"]) if chw else ((H, W, 3), ["height", "width", "channels"])
    feats = {k: {"dtype": "video", "shape": shape, "names": names} for k in KEYS}
    feats["observation.state"] = {"dtype": "float32", "shape": (2,), "names": ["episode", "frame"]}
    return feats


def _cameras() -> dict[str, SyntheticCamera]:
    return {k: SyntheticCamera(H, W, seed=i + 1) for i, k in enumerate(KEYS)}


def _as_input(img: np.ndarray, kind: str):
    if kind == "chw_float":
        return img.transpose(2, 0, 1).astype(np.float32) / 255.0
    if kind == "pil":
        return Image.fromarray(img)
    return img


def _record(ds, cams, ep: int, n: int, kind: str = "hwc_uint8", on_frame=None, lerobot_pngs: bool = False) -> None:
    for i in range(n):
        frame = {k: _as_input(c.frame(i), kind) for k, c in cams.items()}
        frame["observation.state"] = np.array([ep, i], np.float32)
        frame["task"] = "pick"
        ds.add_frame(frame)
        assert lerobot_pngs or not list((Path(ds.root) / "images").rglob("*.png")), "a PNG was written"
        if on_frame:
            on_frame(i)
    ds.save_episode()


def _episode_rows(root: Path) -> list[dict]:
    rows = []
    for f in sorted((root / "meta" / "episodes").rglob("*.parquet")):
        rows += pq.read_table(f).to_pylist()
    return sorted(rows, key=lambda r: r["episode_index"])


def _check_dataset(root: Path, cams, lengths: list[int], *, any_start: bool = False) -> None:
    """Every episode and camera, found the way LeRobot finds it, decodes to the frames sent:
    stamped 0..n-1, or (``any_start``, frames numbered across a whole run) consecutive.
    Then every frame once more through ``LeRobotDataset.__getitem__``, as training reads."""
    meta = LeRobotDatasetMetadata(REPO, root=root)
    assert meta.total_episodes == len(lengths)
    assert meta.total_frames == sum(lengths)
    rows = _episode_rows(root)
    data = LeRobotDataset(REPO, root=root, download_videos=False).hf_dataset
    starts = {}
    for ep, n in enumerate(lengths):
        assert rows[ep]["length"] == n
        assert sum(1 for e in data["episode_index"] if int(e) == ep) == n  # parquet rows
        for key, cam in cams.items():
            t0 = rows[ep][f"videos/{key}/from_timestamp"]
            t1 = rows[ep][f"videos/{key}/to_timestamp"]
            path = root / meta.get_video_file_path(ep, key)
            got = []
            with av.open(str(path)) as c:
                for fr in c.decode(video=0):
                    t = float(fr.pts * fr.time_base)
                    if t0 - 1e-4 <= t < t1 - 1e-4:
                        got.append((t - t0, fr.to_ndarray(format="rgb24")))
            assert len(got) == n, (ep, key, len(got), n)
            base = read_index(got[0][1]) if any_start else 0
            starts[ep, key] = base
            for i, (t, img) in enumerate(got):
                assert abs(t - i / FPS) < 1e-4, (ep, key, i, t)  # LeRobot looks frames up by timestamp
                assert read_index(img) == base + i, (ep, key, i)
                err = np.abs(img.astype(np.int16) - cam.expected(base + i).astype(np.int16)).mean()
                assert err < 6, (ep, key, i, err)
    assert not [f for f in (root / "images").rglob("*") if f.is_file()]  # (LeRobot's png path leaves the dir)
    assert sorted(p.name for p in root.iterdir() if p.name != "images") == ["data", "meta", "videos"], "stray files"
    for backend in _DECODERS:
        _check_getitem(root, cams, lengths, starts, backend)


# LeRobot's default decoder (torchcodec, which needs FFmpeg's shared libraries), and PyAV
# where LeRobot reads with it (0.6.x; 0.4.4's "pyav" goes through torchvision's VideoReader,
# which torchvision 0.29 no longer has: PyAV reads the files directly above)
_DECODERS = (None, "pyav") if RGB_CONFIG else (None,)


def _check_getitem(root: Path, cams, lengths: list[int], starts: dict, backend: str | None) -> None:
    kwargs = {"video_backend": backend} if backend else {}
    ds = LeRobotDataset(REPO, root=root, download_videos=False, **kwargs)
    assert len(ds) == sum(lengths)
    idx = 0
    for ep, n in enumerate(lengths):
        for i in range(n):
            item = ds[idx]
            assert int(item["episode_index"]) == ep and int(item["frame_index"]) == i, (backend, idx)
            assert abs(float(item["timestamp"]) - i / FPS) < 1e-4, (backend, ep, i, float(item["timestamp"]))
            for key, cam in cams.items():
                img = (item[key].numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8)  # CHW float in [0, 1]
                assert read_index(img) == starts[ep, key] + i, (backend, ep, key, i, read_index(img))
                err = np.abs(img.astype(np.int16) - cam.expected(starts[ep, key] + i).astype(np.int16)).mean()
                assert err < 6, (backend, ep, key, i, err)
            idx += 1


@pytest.mark.parametrize("kind", ["hwc_uint8", "chw_float", "pil"])
def test_three_episodes_two_cameras_read_back_through_lerobot(tmp_path, kind):
    root = tmp_path / "ds"
    ds = _create(root, _features(chw=kind == "chw_float"), vcodec="auto", image_writer_threads=4)
    assert sl.image_writer_of(ds) is not None
    assert sl.install(ds) is ds
    assert sl.image_writer_of(ds) is None  # stopped: video frames no longer go through it
    cams = _cameras()
    lengths = [31, 45, 38]
    for ep, n in enumerate(lengths):
        _record(ds, cams, ep, n, kind)
    for f in (root / "videos").rglob("*.mp4"):  # while recording, episodes are appended in place
        assert chunks.frames(f) == sum(lengths)
    ds.finalize()
    _check_dataset(root, cams, lengths)
    assert sl.encoder_of(ds).recorder is None  # finalize() ended the encoder processes
    for f in (root / "videos").rglob("*.mp4"):
        _assert_ordinary_like_lerobots(f, sum(lengths))


def _assert_ordinary_like_lerobots(path: Path, frames: int) -> None:
    """An MP4 as LeRobot's own files are: ftyp (isom, iso2 and the codec's brand), the
    index first, one mdat of a known size, no fragments, no slack beyond a few kB."""
    data = path.read_bytes()
    boxes, off = [], 0
    while off < len(data):
        size, kind = int.from_bytes(data[off : off + 4], "big"), data[off + 4 : off + 8]
        assert size >= 8, (path, kind, size)  # (0: an open-ended mdat)
        boxes.append((kind, size))
        off += size
    kinds = [k for k, _ in boxes]
    assert kinds[:2] == [b"ftyp", b"moov"] and kinds.count(b"mdat") == 1 and b"moof" not in kinds, (path, kinds)
    brands = data[16 : boxes[0][1]]
    with av.open(str(path)) as c:
        packets = [p for p in c.demux(video=0) if p.size]
        codec = c.streams.video[0].codec_context.name
    assert b"isom" in brands and b"iso2" in brands, brands
    codec_brand = {"libdav1d": b"av01", "av1": b"av01", "h264": b"avc1", "hevc": b"hvc1"}[codec]
    assert codec_brand in brands, (codec, brands)
    assert len(packets) == frames
    slack = len(data) - sum(p.size for p in packets) - dict(boxes)[b"moov"]
    assert slack < 16 << 10, (path, slack, kinds)


def test_lerobots_own_video_tools_take_appended_chunk_files(tmp_path):
    """concatenate_video_files (merging datasets) reads the chunk files finalize() leaves,
    and on 0.6.x so does delete_episodes, which cuts and re-encodes them."""
    from lerobot.datasets.video_utils import concatenate_video_files

    root = tmp_path / "ds"
    cams, lengths = _cameras(), [20, 26, 17]
    ds = sl.install(_create(root, vcodec="libsvtav1"))
    for ep, n in enumerate(lengths):
        _record(ds, cams, ep, n)
    files = sorted((root / "videos").rglob("*.mp4"))
    assert all(chunks.frames(f) == sum(lengths) for f in files)  # appended in place while recording
    ds.finalize()
    out = tmp_path / "merged.mp4"
    concatenate_video_files(files, out)
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 2 * sum(lengths)
    if RGB_CONFIG:
        from lerobot.datasets.dataset_tools import delete_episodes

        kept = delete_episodes(LeRobotDataset(REPO, root=root), [1], output_dir=tmp_path / "edited", repo_id=REPO)
        assert len(kept) == lengths[0] + lengths[2]
        _check_dataset(tmp_path / "edited", cams, [lengths[0], lengths[2]])


def test_episode_stats_match_lerobot_compute_stats(tmp_path):
    root = tmp_path / "ds"
    ds = sl.install(_create(root))
    cams = _cameras()
    n = 40
    _record(ds, cams, 0, n)
    ds.finalize()
    row = _episode_rows(root)[0]
    for key, cam in cams.items():
        frames = np.stack([cam.expected(i) for i in range(n)])
        theirs_u8 = _lerobot_episode_stats(frames, as_float=False)
        theirs = _lerobot_episode_stats(frames, as_float=True)  # LeRobot's std is wrong for uint8 input
        ours = {k: np.asarray(row[f"stats/{key}/{k}"], np.float64) for k in theirs}
        assert ours["count"][0] == n
        for k in ("min", "max", "mean"):
            np.testing.assert_allclose(ours[k], theirs_u8[k], atol=STATS_TOL, err_msg=k)
        np.testing.assert_allclose(ours["std"], theirs["std"], rtol=max(STATS_TOL, 1e-6))
        for k in ("q01", "q10", "q50", "q90", "q99"):
            np.testing.assert_allclose(ours[k], theirs[k], atol=0.5 / 255, err_msg=k)
    meta = LeRobotDatasetMetadata(REPO, root=root)
    assert meta.stats[KEYS[0]]["mean"].shape == (3, 1, 1)


def test_stats_count_is_what_lerobots_png_path_counts(tmp_path):
    """``count`` weighs an episode when LeRobot aggregates stats (a resumed dataset holds
    episodes of both): it is the number of frames LeRobot's PNG path samples, 100 for a
    120-frame episode, not the frames (the stats themselves are of every frame)."""
    from streamenc.depth import DepthStats
    from streamenc.stats import EpisodeStats, sample_count

    for n in [*range(2, 400), 1000, 2000, 5000, 10_000, 20_000, 100_000, 10**6, 10**7]:
        assert sample_count(n) == len(lerobot_stats.sample_indices(n)), n
    for n in (90, 120, 700):
        rgb, depth = EpisodeStats(4, 4), DepthStats(4, 4, "uint16")
        for i in range(n):
            rgb.update(np.full((4, 4, 3), i % 256, np.uint8))
            depth.update(np.full((4, 4), i, np.uint16))
        assert rgb.raw()["count"].tolist() == [len(lerobot_stats.sample_indices(n))]
        assert depth.raw()["count"].tolist() == [len(lerobot_stats.sample_indices(n))]

    feats = {k: v for k, v in _features().items() if k != KEYS[1]}
    cams = {KEYS[0]: _cameras()[KEYS[0]]}
    counts = {}
    for path in ("ours", "png"):
        ds = _create(tmp_path / path, feats)
        if path == "ours":
            sl.install(ds)
        for ep in range(2):
            _record(ds, cams, ep, 120, lerobot_pngs=path == "png")
        ds.finalize()
        rows = _episode_rows(tmp_path / path)
        stats = LeRobotDatasetMetadata(REPO, root=tmp_path / path).stats[KEYS[0]]
        counts[path] = ([r[f"stats/{KEYS[0]}/count"] for r in rows], stats["count"].tolist())
    assert counts["ours"] == counts["png"] == ([[100], [100]], [200])


def test_clear_episode_buffer_midway_leaves_nothing_and_next_episode_is_right(tmp_path):
    root = tmp_path / "ds"
    ds = sl.install(_create(root))
    cams = _cameras()
    for i in range(20):  # a take the user throws away (lerobot-record's re-record)
        ds.add_frame(
            {
                **{k: c.frame(1000 + i) for k, c in cams.items()},
                "observation.state": np.zeros(2, np.float32),
                "task": "pick",
            }
        )
    ds.clear_episode_buffer()
    assert sorted(p.name for p in root.iterdir()) == [".streamenc", "meta"], "the cancelled take left files"
    assert [p.name for p in (root / sl.WORK_DIR).iterdir()] == ["journal"], "only the session's journal"
    _record(ds, cams, 0, 33)
    ds.finalize()
    _check_dataset(root, cams, [33])


def test_save_episode_that_fails_after_the_seal_can_be_cleared_and_recording_goes_on(tmp_path, monkeypatch):
    """save_episode seals the episode (the encoders start flushing), then LeRobot's own
    parquet write fails: clearing the buffer leaves no stray files, the next take is right."""
    root = tmp_path / "ds"
    ds = sl.install(_create(root))
    cams = _cameras()
    write_parquet = _owner(ds)._save_episode_data

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_owner(ds), "_save_episode_data", disk_full)
    with pytest.raises(OSError, match="No space left"):
        _record(ds, cams, 0, 25)
    deadline = time.monotonic() + 30
    while len(list(root.rglob("*_streaming.mp4"))) < len(KEYS):  # the encoders finished the sealed take
        assert time.monotonic() < deadline
        time.sleep(0.01)
    ds.clear_episode_buffer()
    assert sorted(p.name for p in root.iterdir()) == [".streamenc", "meta"], "the failed take left files"
    assert [p.name for p in (root / sl.WORK_DIR).iterdir()] == ["journal"], "only the session's journal"
    monkeypatch.setattr(_owner(ds), "_save_episode_data", write_parquet)
    _record(ds, cams, 0, 33)
    ds.finalize()
    _check_dataset(root, cams, [33])


def test_resume_existing_dataset_and_add_an_episode(tmp_path):
    root = tmp_path / "ds"
    cams = _cameras()
    ds = sl.install(_create(root))
    _record(ds, cams, 0, 30)
    ds.finalize()
    again = sl.install(_resume(root))
    _record(again, cams, 1, 35)
    again.finalize()
    _check_dataset(root, cams, [30, 35])


def test_encoder_killed_mid_episode_loses_no_frame(tmp_path):
    root = tmp_path / "ds"
    ds = sl.install(_create(root))
    cams = _cameras()
    enc = sl.encoder_of(ds)
    killed = []

    def kill_once(i: int) -> None:
        time.sleep(1 / FPS)  # real time, so the encoder has made durable parts
        if i == 45:
            pid = enc.recorder.health()[KEYS[0]].pid
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    _record(ds, cams, 0, 90, on_frame=kill_once)
    assert killed and enc.recorder.health()[KEYS[0]].restarts == 1
    assert enc.recorder.health()[KEYS[0]].pid != killed[0]
    ds.finalize()
    _check_dataset(root, cams, [90])


def test_the_first_add_frame_of_an_episode_does_not_wait_for_stopped_encoders(tmp_path):
    """LeRobot's add_frame starts the episode at frame 0. With every encoder stopped, as a
    starved one is, frame 0 and the rest still go in (the encoders cannot have answered),
    and once they run again the episode saves with every frame."""
    root = tmp_path / "ds"
    ds = sl.install(_create(root))
    cams = _cameras()
    _record(ds, cams, 0, 20)  # a first episode: the encoders are up and between episodes
    pids = [h.pid for h in sl.encoder_of(ds).recorder.health().values()]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        for i in range(30):
            frame = {k: c.frame(i) for k, c in cams.items()}
            ds.add_frame({**frame, "observation.state": np.array([1, i], np.float32), "task": "pick"})
        stopped = [psutil.Process(pid).status() == psutil.STATUS_STOPPED for pid in pids]
        assert all(stopped), "so no encoder can have answered the episode's start"
        assert all(h.queued == 30 for h in sl.encoder_of(ds).recorder.health().values())
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    ds.save_episode()
    ds.finalize()
    _check_dataset(root, cams, [20, 30])


def test_bad_frame_is_refused_before_lerobot_buffers_it(tmp_path):
    root = tmp_path / "ds"
    ds = sl.install(_create(root))
    cams = _cameras()
    good = {k: c.frame(0) for k, c in cams.items()}
    state = {"observation.state": np.zeros(2, np.float32), "task": "pick"}
    ds.add_frame({**good, **state})
    too_bright = good[KEYS[1]].astype(np.float32) / 100.0  # float, but not in [0, 1]
    with pytest.raises(FrameError, match=r"expected \[0, 1\]"):
        ds.add_frame({KEYS[0]: good[KEYS[0]], KEYS[1]: too_bright, **state})
    with pytest.raises(FrameError, match="dtype int32"):
        ds.add_frame({KEYS[0]: good[KEYS[0]].astype(np.int32), KEYS[1]: good[KEYS[1]], **state})
    for i in range(1, 30):  # the episode goes on, one frame per add_frame that succeeded
        ds.add_frame({**{k: c.frame(i) for k, c in cams.items()}, **state})
    ds.save_episode()
    ds.finalize()
    _check_dataset(root, cams, [30])


def test_a_lerobot_it_does_not_know_is_a_clear_error(monkeypatch, tmp_path):
    ds = _create(tmp_path / "ds")
    monkeypatch.setattr(sl.importlib.metadata, "version", lambda name: "0.7.0")
    with pytest.raises(ConfigError, match=r"lerobot 0\.7\.0 is not supported.*0\.4\.x, 0\.5\.x and 0\.6\.x"):
        sl.install(ds)
    monkeypatch.setenv(sl.UNTESTED_ENV, "1")  # the user asks to try: the seams decide
    assert isinstance(sl.encoder_of(sl.install(ds)), sl.StreamencVideoEncoder)
    sl.encoder_of(ds).close()
    monkeypatch.undo()

    class Hookless:  # a release whose hook moved again
        meta = ds.meta

    with pytest.raises(ConfigError, match=r"no streaming-encoder hook.*0\.4\.x, 0\.5\.x and 0\.6\.x"):
        sl.install(Hookless())


def test_install_rejects_what_it_cannot_record(tmp_path):
    with pytest.raises(ConfigError, match="LeRobotDataset"):
        sl.install(object())
    feats = {"observation.state": {"dtype": "float32", "shape": (2,), "names": ["a", "b"]}}
    ds = _create(tmp_path / "ds", feats)
    with pytest.raises(ConfigError, match="no video features"):
        sl.install(ds)
    ds = _create(tmp_path / "ds2")
    with pytest.raises(ConfigError, match="unknown encoder options"):
        sl.install(ds, crf_typo=3)


def _our_rings() -> list[str]:
    """The rings in /dev/shm this process produces."""
    return [e for e in os.listdir(SHM_DIR) if e.startswith(PREFIX) and (owner(e) or (0,))[0] == os.getpid()]


@pytest.mark.parametrize("path", ["png", "stream"])
@pytest.mark.parametrize("step", ["write_back", "wrap_save_episode", "without_image_writer"])
def test_an_install_that_fails_leaves_the_dataset_as_lerobot_made_it(tmp_path, monkeypatch, path, step):
    """A step after the encoder is made raises: install() raises that, with nothing of
    streamenc left (no encoder process, no ring, no hook), LeRobot's encoder and settings
    back at the hook, not closed, and the dataset records on LeRobot's own path."""
    root = tmp_path / "ds"
    ds = _create(root, vcodec="libsvtav1", streaming_encoding=path == "stream")
    holder = _owner(ds)
    theirs = sl.encoder_of(ds)
    assert (theirs is None) == (path == "png")
    configs = {n: getattr(holder, n, None) for n in ("_rgb_encoder", "_depth_encoder")}
    closed = []
    if theirs is not None:
        monkeypatch.setattr(theirs, "close", lambda: closed.append(True))

    def boom(*args, **kwargs):
        raise RuntimeError(f"{step} failed")

    if step == "write_back":
        monkeypatch.setattr(sl.Seams, step, boom)
    else:
        monkeypatch.setattr(sl.installer.hooks, step, boom)
    with pytest.raises(RuntimeError, match=f"{step} failed"):
        sl.install(ds)
    assert sl.encoder_of(ds) is theirs and not closed
    assert {n: getattr(holder, n, None) for n in configs} == configs
    replaced = [(ds, "add_frame"), (ds, "save_episode"), (ds, "start_image_writer"), (holder, "start_image_writer")]
    for obj, name in replaced:
        assert name not in vars(obj), f"{name} is still replaced"
    assert not [c for c in psutil.Process().children(recursive=True) if "resource_tracker" not in " ".join(c.cmdline())]
    assert not _our_rings()
    assert not (root / sl.WORK_DIR).exists()
    monkeypatch.undo()
    cams = _cameras()
    _record(ds, cams, 0, 12, lerobot_pngs=True)
    ds.finalize()
    _check_dataset(root, cams, [12])


def test_lerobot_auto_choice_of_an_unusable_nvenc_falls_back_to_the_probe(tmp_path, caplog):
    ds = _create(tmp_path / "ds", vcodec="auto")
    assert sl.Seams(ds).vcodec == "h264_nvenc"  # lerobot's auto, 0.4.4 and 0.6.1 alike: listed is enough
    usable = [r.name for r in sl.probe(sl.EncoderConfig()) if r.usable and r.name in AUTO_ORDER]
    sl.install(ds)
    rec = sl.encoder_of(ds).recorder
    assert rec.codec == usable[0]
    if "h264_nvenc" not in usable:
        assert "cannot encode here" in caplog.text
    sl.encoder_of(ds).close()


def _lerobot_record(root: Path, *flags: str) -> subprocess.CompletedProcess:
    """streamenc's lerobot-record, run as a user would, on a robot with no hardware."""
    boot = "import synthetic_robot; from streamenc.lerobot import main; main()"
    args = [
        sys.executable,
        "-c",
        boot,
        "--robot.type=streamenc_synth",
        "--teleop.type=streamenc_synth_teleop",
        f"--dataset.repo_id={REPO}",
        f"--dataset.root={root}",
        "--dataset.single_task=pick",
        "--dataset.episode_time_s=2",
        "--dataset.reset_time_s=0",
        "--dataset.push_to_hub=false",
        "--play_sounds=false",
        *flags,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(args, cwd=Path(__file__).parent, env=env, capture_output=True, text=True, timeout=300)


def test_lerobot_record_entry_point_records_and_resumes(tmp_path):
    root = tmp_path / "ds"
    first = _lerobot_record(root, "--dataset.num_episodes=2")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "streamenc: recording 2 cameras" in first.stderr
    second = _lerobot_record(root, "--dataset.num_episodes=1", "--resume=true")
    assert second.returncode == 0, second.stderr[-3000:]
    lengths = [r["length"] for r in _episode_rows(root)]
    assert len(lengths) == 3 and all(n > 0 for n in lengths)
    _check_dataset(root, _cameras(), lengths, any_start=True)


# Says on stdout when lerobot is first imported, then runs streamenc-lerobot-record.
HELP_BOOT = """
import sys
class Marker:
    def find_spec(self, name, path=None, target=None):
        if name == "lerobot":
            print("<<lerobot imported>>", flush=True)
            sys.meta_path.remove(self)
sys.meta_path.insert(0, Marker())
from streamenc.lerobot import main
main()
"""


def test_lerobot_record_help_leads_with_what_streamenc_changes_before_lerobot_is_imported():
    out = subprocess.run(
        [sys.executable, "-c", HELP_BOOT, "--help"],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert text.startswith("streamenc-lerobot-record: lerobot-record with streamenc"), text[:500]
    ours, marker = text.index("streamenc-lerobot-record:"), text.index("<<lerobot imported>>")
    section = text[ours:marker]
    for words in ("shared-memory ring", "no PNGs", "--dataset.streaming_encoding has no effect", "docs/lerobot.md"):
        assert words in " ".join(section.split()), words
    assert "--dataset.repo_id" in text[marker:]  # then LeRobot's own help, every flag


def test_the_contract_lerobots_own_encoder_tests_check(tmp_path):
    """From LeRobot's tests of its StreamingVideoEncoder: feed or finish before start raise
    RuntimeError with LeRobot's words ("No active episode"); close() is idempotent;
    cancel_episode() leaves no temporary files."""
    root = tmp_path / "ds"
    ds = sl.install(_create(root))
    enc = sl.encoder_of(ds)
    with pytest.raises(RuntimeError, match="No active episode"):
        enc.feed_frame(KEYS[0], np.zeros((H, W, 3), np.uint8))
    with pytest.raises(RuntimeError, match="No active episode"):
        enc.finish_episode()
    before = set(root.rglob("*"))
    enc.start_episode(video_keys=list(KEYS), temp_dir=root)
    for i in range(10):
        for key in KEYS:
            enc.feed_frame(key, np.full((H, W, 3), i, np.uint8))
    assert set(root.rglob("*")) - before, "the episode wrote nothing"
    enc.cancel_episode()
    assert set(root.rglob("*")) == before, "cancel_episode left files"
    enc.close()
    enc.close()
    assert enc.recorder is None and [p.name for p in (root / sl.WORK_DIR).iterdir()] == ["journal"]
    ds.finalize()
    assert not (root / sl.WORK_DIR).exists(), "finalize() ends the session's journal"


def test_the_datasets_encoder_settings_are_honoured_and_info_json_tells_what_was_used(tmp_path):
    root = tmp_path / "ds"
    if RGB_CONFIG:  # 0.6.x: every setting of the RGBEncoderConfig
        from lerobot.configs import RGBEncoderConfig

        rgb = RGBEncoderConfig(vcodec="h264", g=10, crf=28, preset="ultrafast", extra_options={"tune": "zerolatency"})
        ds = LeRobotDataset.create(REPO, FPS, _features(), root=root, rgb_encoder=rgb, encoder_threads=1)
    else:  # 0.4.x: the codec and the encoder threads
        ds = LeRobotDataset.create(REPO, FPS, _features(), root=root, vcodec="h264", encoder_threads=1)
    sl.install(ds)
    enc = sl.encoder_of(ds)
    assert enc.recorder.codec == "libx264" and enc.config.threads == 1
    if RGB_CONFIG:
        cfg = enc.config
        assert (cfg.g, cfg.crf, cfg.preset, cfg.extra) == (10, 28, "ultrafast", {"tune": "zerolatency"})
    cams = _cameras()
    _record(ds, cams, 0, 30)
    ds.finalize()
    _check_dataset(root, cams, [30])
    video = root / LeRobotDatasetMetadata(REPO, root=root).get_video_file_path(0, KEYS[0])
    with av.open(str(video)) as c:
        assert c.streams.video[0].codec_context.name in ("h264", "libx264")
        keyframes = [i for i, p in enumerate(c.demux(video=0)) if p.size and p.is_keyframe]
    if RGB_CONFIG:
        assert keyframes == [0, 10, 20], keyframes  # g=10
        info = json.loads((root / "meta" / "info.json").read_text())["features"][KEYS[0]]["info"]
        assert info["video.codec"] == "h264"
        assert (info["video.g"], info["video.crf"], info["video.preset"]) == (10, 28, "ultrafast")


@pytest.mark.skipif(not RGB_CONFIG, reason="lerobot 0.4.x writes no encoder settings into info.json")
def test_info_json_says_the_encoder_streamenc_chose_when_lerobots_auto_would_have_crashed(tmp_path):
    """LeRobot's auto picks h264_nvenc because FFmpeg lists it; with no working NVENC, our
    probe picks another encoder, and info.json must name that one and its settings."""
    root = tmp_path / "ds"
    ds = sl.install(_create(root, vcodec="auto"))
    chosen = sl.encoder_of(ds).recorder.codec
    _record(ds, _cameras(), 0, 20)
    ds.finalize()
    info = json.loads((root / "meta" / "info.json").read_text())["features"][KEYS[0]]["info"]
    with av.open(str(root / LeRobotDatasetMetadata(REPO, root=root).get_video_file_path(0, KEYS[0]))) as c:
        assert info["video.codec"] == c.streams.video[0].codec.canonical_name
    if chosen == "libsvtav1":
        assert info["video.codec"] == "av1" and info["video.preset"] == 12 and info["video.g"] == 2
        assert _owner(ds)._rgb_encoder.vcodec == "libsvtav1"


@pytest.mark.parametrize("path", ["png", "stream"])
def test_resuming_a_dataset_lerobot_recorded_itself_appends_episodes_that_read_back(tmp_path, path):
    root = tmp_path / "ds"
    cams = _cameras()
    ds = _create(root, vcodec="libsvtav1", streaming_encoding=path == "stream")
    _record(ds, cams, 0, 24, lerobot_pngs=True)  # LeRobot's own path: PNGs then an encode, or its threads
    ds.finalize()
    again = sl.install(_resume(root))
    assert isinstance(sl.encoder_of(again), sl.StreamencVideoEncoder)
    _record(again, cams, 1, 31)
    again.finalize()
    _check_dataset(root, cams, [24, 31])


DEPTH = "observation.images.depth"


def _depth_features() -> dict:
    feats = {k: v for k, v in _features().items() if k != KEYS[1]}
    feats[DEPTH] = {
        "dtype": "video",
        "shape": (H, W, 1),
        "names": ["height", "width", "channels"],
        "info": {"is_depth_map": True},
    }
    return feats


def _record_depth(ds, rgb, depth, episodes=((0, 30), (1, 20)), tensors: bool = False) -> None:
    import torch

    for ep, n in episodes:
        for i in range(n):
            d = depth.frame(i)[..., None]
            frame = {
                DEPTH: torch.from_numpy(d.copy()) if tensors and i % 3 == 0 else d,  # as robots hand them over
                "observation.state": np.array([ep, i], np.float32),
                "task": "pick",
            }
            if rgb is not None:
                frame[KEYS[0]] = rgb.frame(i)
            ds.add_frame(frame)
        ds.save_episode()
    ds.finalize()


def _depth_outcome(root: Path) -> tuple[dict, list, list]:
    """info.json's depth feature, its per-episode stats, and every frame's depth as
    LeRobotDataset.__getitem__ returns it."""
    info = json.loads((root / "meta" / "info.json").read_text())["features"][DEPTH]
    ds = LeRobotDataset(REPO, root=root)
    prefix = f"stats/{DEPTH}/"
    stats = []
    for f in sorted((root / "meta" / "episodes").rglob("*.parquet")):
        for ep in pq.read_table(f).to_pylist():
            stats.append({k[len(prefix) :]: np.array(v, dtype=float) for k, v in ep.items() if k.startswith(prefix)})
    assert stats and all("count" in s for s in stats)
    return info, stats, [ds[i][DEPTH] for i in range(len(ds))]


def _assert_same_depth_stats(ours: dict, theirs: dict) -> None:
    assert set(ours) == set(theirs)
    for key in ours:
        assert ours[key].shape == theirs[key].shape, key
    assert ours["count"].tolist() == theirs["count"].tolist()
    for key in ("min", "max", "mean", "std"):
        np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-6, err_msg=key)
    # LeRobot reads quantiles off a 5000-bin histogram over [min, max]; ours are exact
    # (uint16) or 2^-12 of the value: they agree to LeRobot's bin width
    width = float((theirs["max"] - theirs["min"]).max()) / 5000
    for q in ("q01", "q10", "q50", "q90", "q99"):
        np.testing.assert_allclose(ours[q], theirs[q], atol=width, rtol=2.0**-12, err_msg=q)


@pytest.mark.skipif(not RGB_CONFIG, reason="depth features arrived in lerobot 0.6.0")
def test_depth_records_as_lerobots_own_paths_do_uint16(tmp_path):
    """uint16 millimetres through streamenc, LeRobot's PNG/TIFF path and its stream encoder:
    the same info.json, the same stats, and __getitem__ equal to the bit (lossless codes)."""
    rgb, depth = SyntheticCamera(H, W, seed=1), SyntheticDepth(H, W, "uint16", seed=2)
    ds = sl.install(_create(tmp_path / "ours", _depth_features()))
    enc = sl.encoder_of(ds)
    assert enc.depth[DEPTH].dtype == "uint16"
    assert enc.recorder.health()["observation.images.depth"].pid > 0
    _record_depth(ds, rgb, depth)
    assert not list((tmp_path / "ours" / "images").rglob("*.tiff")), "a TIFF was written"
    _record_depth(_create(tmp_path / "png", _depth_features()), rgb, depth)
    _record_depth(_create(tmp_path / "stream", _depth_features(), streaming_encoding=True), rgb, depth)
    ours, png, stream = (_depth_outcome(tmp_path / d) for d in ("ours", "png", "stream"))
    assert ours[0]["info"].pop("video.preset") == "ultrafast"  # what we used (lossless at any preset)
    for theirs in (png, stream):
        assert theirs[0]["info"].pop("video.preset") is None  # LeRobot's: x265's own default
        assert ours[0] == theirs[0]
        assert len(ours[2]) == len(theirs[2]) == 50
        for a, b in zip(ours[2], theirs[2], strict=True):
            assert a.shape == (1, H, W) and torch_equal(a, b)
    assert ours[0]["info"]["depth_unit"] == "mm" and ours[0]["info"]["video.pix_fmt"] == "gray12le"
    for a, b in zip(ours[1], png[1], strict=True):  # LeRobot's stream path counts pixels, not frames
        _assert_same_depth_stats(a, b)


@pytest.mark.skipif(not RGB_CONFIG, reason="depth features arrived in lerobot 0.6.0")
def test_depth_records_as_lerobot_does_float32_then_resumes(tmp_path, caplog):
    """float32 metres: the rings were made for uint16 (the default), so the first frame
    makes them again, once, with a warning; a resumed dataset knows its unit at install."""
    import torch
    from lerobot.datasets.depth_utils import dequantize_depth, quantize_depth

    rgb, depth = SyntheticCamera(H, W, seed=1), SyntheticDepth(H, W, "float32", seed=2)
    ds = sl.install(_create(tmp_path / "ours", _depth_features()))
    with caplog.at_level("WARNING", logger="streamenc"):
        _record_depth(ds, rgb, depth, tensors=True)
    assert any("come as ['float32']" in r.message for r in caplog.records)
    _record_depth(_create(tmp_path / "png", _depth_features()), rgb, depth)
    ours, png = _depth_outcome(tmp_path / "ours"), _depth_outcome(tmp_path / "png")
    assert ours[0]["info"]["depth_unit"] == png[0]["info"]["depth_unit"] == "m"
    for a, b in zip(ours[2], png[2], strict=True):
        assert torch_equal(a, b)
    for a, b in zip(ours[1], png[1], strict=True):
        _assert_same_depth_stats(a, b)

    caplog.clear()
    again = sl.install(_resume(tmp_path / "ours"))
    assert sl.encoder_of(again).depth[DEPTH].dtype == "float32"
    with caplog.at_level("WARNING", logger="streamenc"):
        _record_depth(again, rgb, depth, episodes=((2, 15),))
    assert not any("come as" in r.message for r in caplog.records)
    _, _, frames = _depth_outcome(tmp_path / "ours")
    assert len(frames) == 65
    for i, got in enumerate(frames[50:]):
        codes = quantize_depth(depth.expected(i), video_backend=None)  # as the decoder hands them over:
        assert torch_equal(got, dequantize_depth(torch.from_numpy(codes)[None]))  # (1, H, W) uint16 tensor


@pytest.mark.skipif(not RGB_CONFIG, reason="depth features arrived in lerobot 0.6.0")
def test_a_dataset_whose_only_video_is_depth_records_as_lerobot_does(tmp_path):
    """No RGB camera: the recorder's codec is the depth codec, which must not be taken for
    the RGB one (LeRobot's RGB preset, 12, is no x265 preset). LeRobot's RGB settings are
    left as it made them, and the depth feature reads back as LeRobot's PNG path gives it."""
    depth = SyntheticDepth(H, W, "uint16", seed=2)
    feats = {k: v for k, v in _depth_features().items() if k != KEYS[0]}
    ds = sl.install(_create(tmp_path / "ours", feats))
    assert isinstance(sl.encoder_of(ds), sl.StreamencVideoEncoder)
    png = _create(tmp_path / "png", feats)
    assert _owner(ds)._rgb_encoder == _owner(png)._rgb_encoder  # unused, and untouched
    _record_depth(ds, None, depth)
    _record_depth(png, None, depth)
    ours, theirs = _depth_outcome(tmp_path / "ours"), _depth_outcome(tmp_path / "png")
    assert ours[0]["info"].pop("video.preset") == "ultrafast"
    assert theirs[0]["info"].pop("video.preset") is None
    assert ours[0] == theirs[0]
    assert len(ours[2]) == len(theirs[2]) == 50
    for a, b in zip(ours[2], theirs[2], strict=True):
        assert a.shape == (1, H, W) and torch_equal(a, b)
    for a, b in zip(ours[1], theirs[1], strict=True):
        _assert_same_depth_stats(a, b)


def torch_equal(a, b) -> bool:
    return a.shape == b.shape and bool((a == b).all())


def test_the_entry_points_open_installed_datasets_and_put_lerobot_back(tmp_path):
    """What streamenc-lerobot-record and -rollout do to the module that opens the dataset:
    create() and resume() return installed datasets, and the original comes back after."""
    import lerobot.scripts.lerobot_record as module

    original = module.LeRobotDataset
    with sl.installing(module) as installed:
        assert module.LeRobotDataset is installed
        ds = module.LeRobotDataset.create(REPO, FPS, _features(), root=tmp_path / "ds", streaming_encoding=True)
        assert isinstance(sl.encoder_of(ds), sl.StreamencVideoEncoder)  # LeRobot's own encoder replaced
        _record(ds, _cameras(), 0, 12)
        ds.finalize()
        again = (
            module.LeRobotDataset.resume(REPO, root=tmp_path / "ds")
            if RGB_CONFIG
            else module.LeRobotDataset(REPO, root=tmp_path / "ds")
        )
        assert isinstance(sl.encoder_of(again), sl.StreamencVideoEncoder)
        again.finalize()
    assert module.LeRobotDataset is original
    if RGB_CONFIG:  # lerobot-rollout (0.6.x) opens its dataset in lerobot.rollout.context
        import lerobot.rollout.context as rollout_context

        with sl.installing(rollout_context):
            ds = rollout_context.LeRobotDataset.create(
                "streamenc/rollout_test", FPS, _features(), root=tmp_path / "r", streaming_encoding=True
            )
            assert isinstance(sl.encoder_of(ds), sl.StreamencVideoEncoder)
            ds.finalize()
    else:
        with pytest.raises(ConfigError, match="lerobot-rollout arrived in lerobot 0.6.0"):
            sl.rollout([])


@pytest.mark.slow
def test_lerobot_record_after_a_power_cut_resumes_with_every_saved_episode(tmp_path):
    """streamenc-lerobot-record, run as a user would, loses power after its second save
    (its whole session is killed, the encoders with it); --resume then repairs the
    dataset before LeRobot opens it, and records on."""
    root = tmp_path / "ds"
    boot = "import synthetic_robot; from streamenc.lerobot import main; main()"
    flags = [
        "--robot.type=streamenc_synth",
        "--teleop.type=streamenc_synth_teleop",
        f"--dataset.repo_id={REPO}",
        f"--dataset.root={root}",
        "--dataset.single_task=pick",
        "--dataset.episode_time_s=2",
        "--dataset.reset_time_s=0",
        "--dataset.push_to_hub=false",
        "--play_sounds=false",
        "--dataset.num_episodes=6",
    ]
    child = subprocess.Popen(
        [sys.executable, "-c", boot, *flags],
        cwd=Path(__file__).parent,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while not (root / ".streamenc" / "journal" / "episode-000001.parquet").exists():
            assert child.poll() is None and time.monotonic() < deadline, "the recording ended before its 2nd save"
            time.sleep(0.05)
        time.sleep(random.Random(CRASH_SEED).uniform(0, 1.5))
    finally:
        session = [p for p in psutil.process_iter() if _session_of(p.pid) == child.pid]
        for p in session:  # a power cut: the recorder and its encoders at once
            with contextlib.suppress(psutil.Error):
                p.kill()
        child.wait(timeout=30)
    saved = len(list((root / ".streamenc" / "journal").glob("episode-*.parquet")))
    assert saved >= 2
    again = _lerobot_record(root, "--dataset.num_episodes=1", "--resume=true")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "streamenc: repaired after a crash" in again.stderr, again.stderr[-3000:]
    lengths = [r["length"] for r in _episode_rows(root)]
    assert len(lengths) == saved + 1 and all(n > 0 for n in lengths), (CRASH_SEED, lengths)
    _check_dataset(root, _cameras(), lengths, any_start=True)


def _session_of(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def test_a_one_episode_file_and_a_resumed_session_are_ordinary_mp4s_after_finalize(tmp_path):
    """The file of a one-episode session (the encoder's fragmented MP4, moved into place)
    and the files a resume starts are ordinary MP4s after finalize(), like LeRobot's."""
    root = tmp_path / "ds"
    cams = _cameras()
    ds = sl.install(_create(root, vcodec="libsvtav1"))
    _record(ds, cams, 0, 24)
    ds.finalize()
    for f in (root / "videos").rglob("*.mp4"):
        _assert_ordinary_like_lerobots(f, 24)
    again = sl.install(_resume(root))
    _record(again, cams, 1, 17)
    _record(again, cams, 2, 20)
    again.finalize()
    _check_dataset(root, cams, [24, 17, 20])
    files = sorted((root / "videos").rglob("*.mp4"))
    assert len(files) == 4, files  # a resume begins new files
    for f in files:
        _assert_ordinary_like_lerobots(f, 24 if f.name == "file-000.mp4" else 37)
