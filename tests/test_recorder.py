"""Recorder end to end: frames in, MP4s out, decoded and checked frame by frame."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import psutil
import pytest
from helpers import encoder_pids, wait_for

from streamenc import EncoderConfig, EncoderError, FrameError, Recorder, StreamencError, sched, testing, videos
from streamenc.protocol import End, Start
from streamenc.synthetic import SyntheticCamera
from streamenc.verify import check

H, W = 240, 320
FPS = 30


@pytest.fixture(scope="module")
def cams():
    return {"left": SyntheticCamera(H, W, seed=1), "right": SyntheticCamera(H, W, seed=2)}


def _record(rec: Recorder, cams: dict, start: int, n: int) -> None:
    for i in range(start, start + n):
        rec.add_frame({name: cam.frame(i) for name, cam in cams.items()})


def _assert_video(path, cam, n, max_error=8.0):
    c = check(path, cam)
    assert c.frames == n
    assert c.in_order(n), c.indices[:20]
    assert c.cfr(FPS), c.times[:5]
    assert c.fps == FPS
    assert c.max_mean_abs_error < max_error  # lossy, but the picture is the one we sent
    return c


@pytest.mark.parametrize("vcodec", ["libsvtav1", "libx264"])
def test_two_cameras_encode_and_decode_frame_for_frame(tmp_path, cams, vcodec):
    n = 160
    with Recorder(
        tmp_path, fps=FPS, cameras={"left": (H, W), "right": (H, W)}, encoder=EncoderConfig(vcodec=vcodec)
    ) as rec:
        assert rec.codec == vcodec
        rec.start_episode()
        _record(rec, cams, 0, n)
        videos = rec.end_episode()
    assert set(videos) == {"left", "right"}
    for name, video in videos.items():
        assert video.path == tmp_path / "videos" / name / "episode-000000.mp4"
        assert (video.frames, video.codec) == (n, vcodec)
        assert video.stats["mean"].shape == (3, 1, 1)
        _assert_video(video.path, cams[name], n)


def test_episodes_reuse_encoder_processes_and_cancel_leaves_nothing(tmp_path, cams):
    cameras = {"left": (H, W), "right": (H, W)}
    with Recorder(tmp_path, fps=FPS, cameras=cameras) as rec:
        pids = {c: h.pid for c, h in rec.health().items()}
        counts = {0: 40, 1: 55, 2: 31}
        for ep in range(3):
            rec.start_episode()
            if ep == 1:  # a cancelled take; the re-record gets the same episode index
                _record(rec, cams, 0, 25)
                rec.cancel_episode()
                rec.start_episode()
            _record(rec, cams, 0, counts[ep])
            videos = rec.end_episode()
            assert {v.frames for v in videos.values()} == {counts[ep]}
        assert {c: h.pid for c, h in rec.health().items()} == pids  # same processes throughout
        assert all(h.encoded == sum(counts.values()) + 25 for h in rec.health().values())
    for name in cameras:
        files = sorted(os.listdir(tmp_path / "videos" / name))
        assert files == ["episode-000000.mp4", "episode-000001.mp4", "episode-000002.mp4"]
        for ep, n in counts.items():
            _assert_video(tmp_path / "videos" / name / f"episode-{ep:06d}.mp4", cams[name], n)


def test_sealed_episode_refuses_frames_then_ends_or_cancels_cleanly(tmp_path, cams):
    cameras = {"left": (H, W), "right": (H, W)}
    with Recorder(tmp_path, fps=FPS, cameras=cameras) as rec:
        rec.start_episode()
        _record(rec, cams, 0, 45)
        rec.seal_episode()
        rec.seal_episode()  # a second seal changes nothing
        with pytest.raises(StreamencError, match="sealed"):
            rec.add_frame({name: cam.frame(45) for name, cam in cams.items()})
        with pytest.raises(StreamencError, match="sealed"):
            rec.add_camera_frame("left", cams["left"].frame(45))
        videos = rec.end_episode()
        assert {v.frames for v in videos.values()} == {45}

        rec.start_episode()  # a take sealed, then thrown away: its index is reused
        _record(rec, cams, 0, 20)
        rec.seal_episode()
        sealed = [tmp_path / "videos" / name / "episode-000001.mp4" for name in cameras]
        wait_for(lambda: all(p.exists() for p in sealed))  # the encoders finished it: a paced loop's case
        rec.cancel_episode()
        for name in cameras:
            assert sorted(os.listdir(tmp_path / "videos" / name)) == ["episode-000000.mp4"]
        rec.start_episode()
        _record(rec, cams, 0, 33)
        assert {v.frames for v in rec.end_episode().values()} == {33}
    for name in cameras:
        _assert_video(tmp_path / "videos" / name / "episode-000000.mp4", cams[name], 45)
        _assert_video(tmp_path / "videos" / name / "episode-000001.mp4", cams[name], 33)


@pytest.mark.parametrize(
    "bad,what",
    [
        (lambda f: {"left": f.transpose(2, 0, 1).copy(), "right": f}, "CHW"),
        (lambda f: {"left": f.astype(np.float32) / 255, "right": f}, "float"),
        (lambda f: {"left": f[..., 0].copy(), "right": f}, "shape"),
        (lambda f: {"left": f[:100], "right": f}, "shape"),
        (lambda f: {"left": f.astype(np.uint16), "right": f}, "uint8"),
        (lambda f: {"left": f}, "missing"),
        (lambda f: {"left": f, "right": f, "top": f}, "unknown"),
        (lambda f: {"left": f.tolist(), "right": f}, "numpy"),
        (lambda f: [f, f], "dict"),
    ],
)
def test_bad_frames_raise_frame_error_and_the_episode_goes_on(tmp_path, cams, bad, what):
    with Recorder(tmp_path, fps=FPS, cameras={"left": (H, W), "right": (H, W)}) as rec:
        rec.start_episode()
        _record(rec, cams, 0, 10)
        with pytest.raises(FrameError, match=what):
            rec.add_frame(bad(cams["left"].expected(10)))
        _record(rec, cams, 10, 10)
        videos = rec.end_episode()
    for name, video in videos.items():  # exactly 20, in order: the bad call recorded nothing for any camera
        _assert_video(video.path, cams[name], 20)


def test_non_contiguous_frames_are_accepted(tmp_path, cams):
    with Recorder(tmp_path, fps=FPS, cameras={"left": (H, W)}) as rec:
        rec.start_episode()
        for i in range(12):
            padded = np.zeros((H, W + 8, 3), np.uint8)
            padded[:, :W] = cams["left"].frame(i)
            rec.add_frame({"left": padded[:, :W]})
        video = rec.end_episode()["left"]
    _assert_video(video.path, cams["left"], 12)


def test_misuse_gives_clear_errors(tmp_path, cams):
    with Recorder(tmp_path, fps=FPS, cameras={"left": (H, W)}) as rec:
        with pytest.raises(StreamencError, match="start_episode"):
            rec.add_frame({"left": cams["left"].frame(0)})
        rec.start_episode(5)
        with pytest.raises(StreamencError, match="still open"):
            rec.start_episode()
        _record(rec, {"left": cams["left"]}, 0, 3)
        rec.end_episode()
        with pytest.raises(StreamencError, match="already exists"):
            rec.start_episode(5)
    with pytest.raises(StreamencError, match="closed"):
        rec.start_episode()
    with pytest.raises(StreamencError, match="shape"):
        Recorder(tmp_path, cameras={"odd": (241, 320)})
    with pytest.raises(StreamencError, match="camera name"):
        Recorder(tmp_path, cameras={"a/b": (H, W)})


def test_start_episode_and_add_frame_never_wait_for_the_encoder(tmp_path, cams):
    """An encoder that gets no CPU when the episode starts (here stopped with SIGSTOP, as a
    starved one is): start_episode and the first frames return anyway, without its answer;
    the frames wait in the ring, and once it runs again every one is encoded."""
    cam = cams["left"]
    with Recorder(tmp_path, fps=FPS, cameras={"left": (H, W)}, slots=64) as rec:
        pid = rec.health()["left"].pid
        os.kill(pid, signal.SIGSTOP)
        try:
            wait_for(lambda: psutil.Process(pid).status() == psutil.STATUS_STOPPED, what="the encoder stopped")
            rec.start_episode()
            _record(rec, {"left": cam}, 0, 30)
            assert psutil.Process(pid).status() == psutil.STATUS_STOPPED, "so it cannot have answered"
            assert rec.health()["left"].queued == 30
        finally:
            os.kill(pid, signal.SIGCONT)
        video = rec.end_episode()["left"]
    _assert_video(video.path, cam, 30)


def test_a_camera_behind_says_how_far_what_cpu_it_got_what_helps_and_how_long_the_save_waits(tmp_path, cams, caplog):
    """A stalled encoder: health() gives the backlog in seconds and the CPU it got; the
    warning says so in words a user can act on; end_episode says how long it will wait."""
    cam = cams["left"]
    cfg = EncoderConfig(vcodec="libsvtav1", sched="idle")
    with Recorder(tmp_path, fps=FPS, cameras={"left": (H, W)}, encoder=cfg, warn_behind_s=1.0, slots=64) as rec:
        pipe = testing.pipeline(rec, "left")
        rec.start_episode()
        ended: list = []
        waiter = threading.Thread(target=lambda: ended.append(rec.end_episode()))
        with caplog.at_level("WARNING", logger="streamenc"):
            n = 0  # paced, until the encoder has taken frames: a rate to estimate from (a busy
            while n < 2 * FPS or not pipe.rate:  # machine starves a SCHED_IDLE encoder for a while)
                assert n < 60 * FPS, "the encoder took no frame in a minute"
                rec.add_frame({"left": cam.frame(n)})
                n += 1
                time.sleep(1 / FPS)
            pid = rec.health()["left"].pid
            os.kill(pid, signal.SIGSTOP)
            try:
                for _ in range(2 * FPS + 1):
                    rec.add_frame({"left": cam.frame(n)})
                    n += 1
                h = rec.health()["left"]
                assert h.behind_s == pytest.approx((h.queued + h.spilled) / FPS) and h.behind_s > 1.0
                assert 0 <= h.cpu < len(os.sched_getaffinity(0)) + 0.5
                behind = [r.message for r in caplog.records if "behind" in r.message]
                assert len(behind) == 1, behind
                text = behind[0]
                assert "of a core" in text and "frames/s" in text and "What helps" in text, text
                assert 'vcodec="h264"' in text and 'sched="auto"' in text and "more CPU cores" in text, text
                caplog.clear()

                def estimates() -> list[str]:
                    return [r.message for r in caplog.records if "end_episode waits for" in r.message]

                with caplog.at_level("INFO", logger="streamenc"):
                    waiter.start()  # still stopped: end_episode must say how long before it waits
                    wait_for(estimates, what="the estimate")
                estimate = estimates()[0]
                waiting = int(estimate.split("waits for ")[1].split()[0])
                assert waiting >= 2 * FPS + 1 and " s at the " in estimate, estimate  # all it was given since
            finally:
                os.kill(pid, signal.SIGCONT)
                if sched.has_sys_nice():  # SCHED_IDLE gets next to nothing beside busy programs: the
                    sched.set_process(pid, "other", 0)  # save's wait is not what this test is about
                if waiter.is_alive():  # before the recorder closes, whatever failed above
                    waiter.join(300)
                    assert not waiter.is_alive(), "end_episode still waits after 300 s"
        video = ended[0]["left"]
    _assert_video(video.path, cam, n)


def test_a_command_the_encoder_does_not_expect_is_an_error_the_user_sees(tmp_path, cams):
    """A Start while an episode is open, and an End with none open, are protocol errors:
    the encoder says so, and the recorder raises it instead of the encoder dropping it."""
    cam = cams["left"]
    with Recorder(tmp_path, fps=FPS, cameras={"left": (H, W)}, encoder=EncoderConfig(vcodec="libx264")) as rec:
        rec.start_episode()
        _record(rec, {"left": cam}, 0, 5)
        encoder = testing.pipeline(rec, "left").enc
        encoder.send(Start(7, str(tmp_path / "stray.mp4")))
        taken = 5
        with pytest.raises(EncoderError, match="got Start while episode 0 is open"):
            for i in range(5, 5 + 30 * FPS):  # the reply comes within a few frames
                rec.add_frame({"left": cam.frame(i)})
                taken += 1
                time.sleep(1 / FPS)
        video = rec.end_episode()["left"]  # the episode went on: every frame it took is there
        _assert_video(video.path, cam, taken)
        assert not (tmp_path / "stray.mp4").exists()
        encoder.send(End(None))
        rec.start_episode()  # without waiting for the encoder: its answer to End comes with the frames
        with pytest.raises(EncoderError, match="got End with no episode open"):
            for i in range(30 * FPS):
                rec.add_frame({"left": cam.frame(i)})
                time.sleep(1 / FPS)


def test_a_spill_leaves_no_empty_spill_folder_behind(tmp_path, cams):
    """Frames that waited on disk go into the video and their file is deleted; the folder
    the recorder made for them goes at close. A folder that was there before stays."""
    mine = tmp_path / "mine"
    mine.mkdir()
    for root, spill_dir in ((tmp_path / "a", None), (tmp_path / "b", mine)):
        with Recorder(root, fps=FPS, cameras={"left": (H, W)}, slots=16, spill_dir=spill_dir) as rec:
            rec.start_episode()
            pid = rec.health()["left"].pid
            os.kill(pid, signal.SIGSTOP)  # a stalled encoder: its ring fills, the rest spills
            try:
                _record(rec, {"left": cams["left"]}, 0, 40)
                wait_for(lambda: any(rec.spill_dir.glob("*.spill")), what="a spill file")
            finally:
                os.kill(pid, signal.SIGCONT)
            video = rec.end_episode()["left"]
            assert not any(rec.spill_dir.glob("*")), "the drained spill file is still there"
        _assert_video(video.path, cams["left"], 40)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["videos"]
    assert mine.is_dir() and not any(mine.iterdir())


def test_close_ends_processes_and_segments_even_when_the_body_raises(tmp_path, cams):
    before = {e for e in os.listdir("/dev/shm") if "streamenc" in e}
    with pytest.raises(RuntimeError, match="robot fell over"):
        with Recorder(tmp_path, fps=FPS, cameras={"left": (H, W), "right": (H, W)}) as rec:
            pids = [h.pid for h in rec.health().values()]
            rec.start_episode()
            _record(rec, cams, 0, 15)
            raise RuntimeError("robot fell over")
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert {e for e in os.listdir("/dev/shm") if "streamenc" in e} == before
    for name in ("left", "right"):  # the open episode was finalized, not lost
        _assert_video(tmp_path / "videos" / name / "episode-000000.mp4", cams[name], 15)
    rec.close()  # twice is fine


SIGINT_SCRIPT = textwrap.dedent(
    """
    import signal, sys, time
    from streamenc import Recorder
    from streamenc.synthetic import SyntheticCamera

    # Ctrl-C as a terminal delivers it, also where the test runs as a background job
    # (which starts with SIGINT ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    cam = SyntheticCamera(240, 320)
    rec = Recorder(sys.argv[1], fps=30, cameras={"front": (240, 320)})
    if sys.argv[2] == "with":
        rec.__enter__()
    rec.start_episode()
    i = 0
    try:
        while True:
            rec.add_frame({"front": cam.frame(i)})
            i += 1
            print(i, flush=True)
            time.sleep(1 / 30)
    finally:
        if sys.argv[2] == "with":
            rec.__exit__(None, None, None)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("style", ["with", "atexit"])
def test_ctrl_c_finalizes_the_open_episode(tmp_path, style):
    before = encoder_pids()
    proc = subprocess.Popen(
        [sys.executable, "-c", SIGINT_SCRIPT, str(tmp_path), style],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    added = 0
    deadline = time.monotonic() + 60
    while added < 45 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        added = int(line)
    assert added >= 45, proc.stderr.read()
    assert encoder_pids() - before, "the recorder's encoder is not found by its command line"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert "KeyboardInterrupt" in err
    added = max([added, *map(int, out.split())])  # it may have gone on while we read
    c = check(tmp_path / "videos" / "front" / "episode-000000.mp4", SyntheticCamera(240, 320))
    assert added <= c.frames <= added + 1  # every frame put is there; at most one was put but not yet printed
    assert c.in_order() and c.cfr(30)
    assert not encoder_pids() - before, "the recorder's encoder outlived it"


@pytest.mark.slow
@pytest.mark.parametrize("tty", [True, False])
def test_end_episode_progress_counts_the_frames_still_waiting_down_to_100_percent(
    tmp_path, cams, capfd, monkeypatch, caplog, tty
):
    """The bar appears when end_episode waits more than a second. Its total is the frames
    still waiting for their encoders at that moment, not the episode's length, so it
    ends at 100%. When stderr is no terminal (a log file) there is no bar, as tqdm has it,
    and one line is logged when the wait is over."""
    if tty:
        monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    cam = cams["left"]
    with Recorder(tmp_path, fps=FPS, cameras={"left": (H, W)}, slots=64) as rec:
        rec.start_episode()
        _record(rec, {"left": cam}, 0, 100)
        wait_for(lambda: rec.health()["left"].queued + rec.health()["left"].spilled == 0)  # not in the bar
        pid = rec.health()["left"].pid
        os.kill(pid, signal.SIGSTOP)  # a stalled encoder: the next 40 frames wait in the ring
        try:
            _record(rec, {"left": cam}, 100, 40)
            h = rec.health()["left"]
            assert h.queued + h.spilled == 40

            class Resuming(videos.Countdown):  # the encoder goes on once the bar has its total
                def __init__(self, *args) -> None:
                    super().__init__(*args)
                    os.kill(pid, signal.SIGCONT)

            monkeypatch.setattr(videos, "Countdown", Resuming)
            capfd.readouterr()
            with caplog.at_level("INFO", logger="streamenc"):
                video = rec.end_episode()["left"]
        finally:
            os.kill(pid, signal.SIGCONT)
    err = capfd.readouterr().err
    if tty:
        assert "streamenc: encoding backlog: 100%" in err, err[-500:]
        assert "40/40" in err and "/140" not in err, err[-500:]
    else:
        assert "\r" not in err and "encoding backlog" not in err, err[-500:]
        assert any(r.getMessage().startswith("streamenc: encoding backlog: 40 frames in") for r in caplog.records)
    _assert_video(video.path, cam, 140)
