"""Appendable chunk files: episodes appended in place read back as one video (PyAV and
torchcodec, exact timestamps), earlier bytes are never rewritten, and a kill -9 at each
step of an append leaves every earlier episode readable, with the next append going on."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import av
import pytest

from streamenc import chunks, parts
from streamenc.synthetic import SyntheticCamera, read_index
from streamenc.verify import decode

H, W, FPS = 120, 160, 30


def _episode(path: Path, first: int, n: int, size: tuple[int, int] = (H, W), codec: str = "libx264") -> Path:
    """An episode file as streamenc's encoders write them (fragmented MP4, a fragment per
    frame), its frames stamped first, first + 1, ..."""
    cam = SyntheticCamera(*size)
    with av.open(str(path), "w", format="mp4", options=dict(parts.CONTAINER_OPTIONS)) as c:
        s = c.add_stream(codec, rate=FPS)
        s.width, s.height, s.pix_fmt = size[1], size[0], "yuv420p"
        s.time_base = Fraction(1, FPS)
        if codec == "libx264":
            s.options = {"g": "2", "bf": "0", "preset": "ultrafast", "crf": "20"}
        else:  # LeRobot's SVT-AV1 settings: its packets come out of a fragmented file with no duration
            s.options = {"g": "2", "crf": "30", "preset": "12"}
        for i in range(n):
            f = av.VideoFrame.from_ndarray(cam.frame(first + i), format="rgb24").reformat(format="yuv420p")
            f.pts = i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


def _read(path: Path) -> tuple[list[int], list[float]]:
    got = [(t, read_index(img)) for t, img in decode(path)]
    return [i for _, i in got], [t for t, _ in got]


def _expected(episodes: list[tuple[int, int]]) -> list[int]:
    return [first + i for first, n in episodes for i in range(n)]


EPISODES = [(0, 30), (1000, 45), (2000, 21), (3000, 33)]


def test_episodes_append_in_place_and_read_back_as_one_video(tmp_path):
    files = [_episode(tmp_path / f"ep{k}.mp4", *e) for k, e in enumerate(EPISODES)]
    chunk = tmp_path / "file-000.mp4"
    shutil.copy(files[0], chunk)  # LeRobot moves the first episode into place
    chunks.append(chunk, files[1])  # the first append converts the file, once
    inode = chunk.stat().st_ino
    body = chunk.read_bytes()[chunks.DATA_START :]
    for f in files[2:]:
        chunks.append(chunk, f)
        assert chunk.stat().st_ino == inode  # appended in place
        assert chunk.read_bytes()[chunks.DATA_START :].startswith(body)  # nothing before it rewritten
        body = chunk.read_bytes()[chunks.DATA_START :]
    indices, times = _read(chunk)
    assert indices == _expected(EPISODES)
    assert all(abs(t - k / FPS) < 1e-9 for k, t in enumerate(times))
    with av.open(str(chunk)) as c:
        s = c.streams.video[0]
        assert s.frames == len(indices) and float(s.duration * s.time_base) == pytest.approx(len(indices) / FPS)


@pytest.mark.lerobot  # torchcodec comes with LeRobot's stack, not with streamenc
def test_torchcodec_finds_every_frame_of_an_appended_chunk_by_timestamp(tmp_path):
    from torchcodec.decoders import VideoDecoder  # LeRobot's default reader

    files = [_episode(tmp_path / f"ep{k}.mp4", *e) for k, e in enumerate(EPISODES)]
    chunk = tmp_path / "file-000.mp4"
    shutil.copy(files[0], chunk)
    for f in files[1:]:
        chunks.append(chunk, f)
    want = _expected(EPISODES)
    d = VideoDecoder(str(chunk), seek_mode="approximate")
    assert d.metadata.num_frames == len(want)
    # by index, as LeRobot asks (round(t * fps)); by time at each frame's middle (exactly at
    # k / 30, float rounding puts one of these 129 a frame early, in LeRobot's faststart
    # files too)
    batch = d.get_frames_at(list(range(len(want))))
    assert [read_index(f.permute(1, 2, 0).numpy()) for f in batch.data] == want
    assert max(abs(float(t) - k / FPS) for k, t in enumerate(batch.pts_seconds)) < 1e-9
    mid = d.get_frames_played_at([(k + 0.5) / FPS for k in range(len(want))]).data
    assert [read_index(f.permute(1, 2, 0).numpy()) for f in mid] == want


def test_a_different_stream_is_declined(tmp_path):
    chunk = _episode(tmp_path / "c.mp4", 0, 10)
    other = _episode(tmp_path / "o.mp4", 10, 10, size=(H * 2, W * 2))
    with pytest.raises(chunks.Unsupported):
        chunks.append(chunk, other)
    assert _read(chunk)[0] == list(range(10))  # untouched


KILL_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from streamenc import chunks
    step, seen = int(sys.argv[3]), [0]
    sync = chunks.sync
    def stop_after(f):
        sync(f)
        seen[0] += 1
        if seen[0] == step:
            print("at", step, flush=True)
            time.sleep(60)
    chunks.sync = stop_after
    chunks.append(sys.argv[1], sys.argv[2])
    print("done", flush=True)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("step", [1, 2, 3])  # killed after: the packets, the moov written, the moov typed
def test_kill_9_mid_append_keeps_every_earlier_episode_and_the_next_append_goes_on(tmp_path, step):
    files = [_episode(tmp_path / f"ep{k}.mp4", *e) for k, e in enumerate(EPISODES)]
    chunk = tmp_path / "file-000.mp4"
    shutil.copy(files[0], chunk)
    chunks.append(chunk, files[1])
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(chunk), str(files[2]), str(step)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == f"at {step}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    indices, _ = _read(chunk)
    earlier = _expected(EPISODES[:2])
    assert indices in (earlier, _expected(EPISODES[:3]))  # whole episodes, in order
    # the dataset recorded two episodes: the next append drops what it never recorded
    chunks.append(chunk, files[3], keep_s=len(earlier) / FPS)
    assert _read(chunk)[0] == earlier + _expected(EPISODES[3:])


def test_trim_cuts_a_chunk_back_to_its_recorded_episodes_and_the_next_append_goes_on(tmp_path):
    """What a repair does with a chunk that holds an episode the dataset never recorded
    (a kill after the append, before the metadata): the index and the bytes go."""
    files = [_episode(tmp_path / f"ep{k}.mp4", *e) for k, e in enumerate(EPISODES)]
    chunk = tmp_path / "file-000.mp4"
    shutil.copy(files[0], chunk)
    for f in files[1:3]:
        chunks.append(chunk, f)
    size_before = chunk.stat().st_size
    kept_s = (EPISODES[0][1] + EPISODES[1][1]) / FPS
    assert chunks.trim(chunk, kept_s - 0.3 / FPS) == EPISODES[2][1], "a to_timestamp a little short keeps its episode"
    assert _read(chunk)[0] == _expected(EPISODES[:2])
    assert chunk.stat().st_size < size_before
    assert chunks.trim(chunk, kept_s) == 0, "a second trim finds nothing to cut"
    chunks.append(chunk, files[3])
    assert _read(chunk)[0] == _expected([*EPISODES[:2], EPISODES[3]])
    with pytest.raises(chunks.Unsupported):
        chunks.trim(files[0], 0.5)  # one episode as the encoder wrote it: not an appendable chunk


def test_finish_makes_ordinary_mp4s_of_every_layout_with_every_frame_and_timestamp(tmp_path):
    """The appendable layout and one episode as the encoder wrote it (fragmented; a join
    of parts, whose packets carry no duration), finished: ordinary, every frame, the same
    timestamps; a second finish leaves the file alone."""
    files = [_episode(tmp_path / f"ep{k}.mp4", *e) for k, e in enumerate(EPISODES)]
    chunk = tmp_path / "file-000.mp4"
    shutil.copy(files[0], chunk)
    for f in files[1:]:
        chunks.append(chunk, f)
    joined = tmp_path / "joined.mp4"
    parts.join([(0, _episode(tmp_path / "av1.mp4", 500, 12, codec="libsvtav1"))], joined, FPS)
    for path, episodes in ((chunk, EPISODES), (files[0], EPISODES[:1]), (joined, [(500, 12)])):
        before = _read(path)
        assert not chunks.ordinary(path)
        assert chunks.finish(path)
        assert chunks.ordinary(path) and _read(path) == before and before[0] == _expected(episodes), path
        data = path.read_bytes()
        ftyp = int.from_bytes(data[:4], "big")
        assert data[4:8] == b"ftyp" and data[ftyp + 4 : ftyp + 8] == b"moov", path  # the index first
        mtime = path.stat().st_mtime_ns
        assert not chunks.finish(path) and path.stat().st_mtime_ns == mtime
