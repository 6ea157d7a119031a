"""No encoder thread ever runs in a real-time class, and the encoders' scheduling settings hold.

SVT-AV1 moves its threads to SCHED_FIFO 99 where the process may (root, CAP_SYS_NICE,
RLIMIT_RTPRIO > 0), which is how CI runs. The checks that need that right say so and
skip elsewhere; every other check holds whatever the privileges.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from helpers import wait_for

from streamenc import ConfigError, EncoderConfig, Recorder, sched
from streamenc.synthetic import SyntheticCamera
from streamenc.verify import check

FPS = 30
PRIVILEGED = sched.realtime_allowed() is not None
needs_rt = pytest.mark.skipif(not PRIVILEGED, reason="this process may not use real-time scheduling at all")


def _python(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter: dropping capabilities or going real-time must
    not touch the test process."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def _wait_encoded(rec: Recorder, at_least: int) -> None:
    wait_for(lambda: all(h.encoded >= at_least for h in rec.health().values()), what=f"{at_least} frames encoded")


def _allowed(cfg: EncoderConfig) -> set[str]:
    """The classes an encoder may be in: its setting, or for "auto" where it starts and
    SCHED_OTHER, where the recorder moves it while it is behind or waited for."""
    return {sched.starting_policy(cfg.sched), "other"} if cfg.sched == "auto" else {cfg.sched}


def _assert_normal(pid: int, cfg: EncoderConfig) -> None:
    """Every thread of ``pid`` in one of the configured classes at the configured nice
    value, none real-time."""
    s = sched.observe(pid)
    assert s.threads >= 1, s
    assert s.realtime == 0, f"encoder {pid}: {s.realtime} of {s.threads} threads real-time ({s.policies})"
    assert len(s.policies) == 1 and set(s.policies) <= _allowed(cfg), s
    assert s.nices == (cfg.nice,), s


@needs_rt
def test_give_up_realtime_makes_fifo_impossible_even_as_root():
    """For this thread and for threads it starts afterwards (they inherit its credentials)."""
    out = _python(
        """
        import os, threading
        from streamenc import sched
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))  # allowed before
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        sched.give_up_realtime()
        assert sched.realtime_allowed() is None, sched.realtime_allowed()
        def attempt(out):
            try:
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
                out.append("allowed")
            except PermissionError:
                out.append("refused")
        results = []
        attempt(results)
        t = threading.Thread(target=attempt, args=(results,)); t.start(); t.join()
        print(*results)
        """
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["refused", "refused"]


@needs_rt
def test_enforce_puts_real_time_threads_back():
    out = _python(
        """
        import os, threading
        from streamenc import sched
        ready, done = threading.Event(), threading.Event()
        def worker():
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(50))
            ready.set(); done.wait()
        t = threading.Thread(target=worker, daemon=True); t.start(); ready.wait()
        before = sched.observe().realtime
        repaired = sched.enforce("other", 3)
        after = sched.observe()
        done.set(); t.join()
        print(before, repaired, after.realtime, after.policies, after.nices)
        """
    )
    assert out.returncode == 0, out.stderr
    before, repaired, after, *rest = out.stdout.split(maxsplit=3)
    assert (before, repaired, after) == ("1", "1", "0"), out.stdout
    assert "'other'" in rest[0] and "3" in rest[0], out.stdout


def test_the_probe_leaves_the_calling_thread_as_it_was():
    """Opening SVT-AV1 to probe it moves the opener to SCHED_FIFO 99 where allowed; the
    recording process's thread must come back out of it."""
    out = _python(
        """
        import os
        from streamenc import probe
        results = probe(refresh=True)
        svt = next(r for r in results if r.name == "libsvtav1")
        print(svt.usable, svt.realtime, os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0))
        """
    )
    assert out.returncode == 0, out.stderr
    usable, went_rt, policy, nice = out.stdout.split()
    assert usable == "True"
    assert went_rt == str(PRIVILEGED)  # SVT does go real-time where it may: the probe says so
    assert (int(policy), int(nice)) == (os.SCHED_OTHER, 0)


@pytest.mark.slow
@pytest.mark.parametrize("vcodec", ["libsvtav1", "libx264"])
def test_no_encoder_thread_is_real_time_at_start_new_episode_and_after_kill_9(tmp_path, vcodec):
    cfg = EncoderConfig(vcodec=vcodec)
    cams = {"a": SyntheticCamera(240, 320, seed=1), "b": SyntheticCamera(240, 320, seed=2)}
    with Recorder(tmp_path, fps=FPS, cameras={k: (240, 320) for k in cams}, encoder=cfg) as rec:
        assert sched.observe().realtime == 0, "the recording process went real-time (the probe?)"
        for ep in range(2):  # a new episode opens a new codec, with new threads
            rec.start_episode(ep)
            for i in range(40):
                rec.add_frame({k: c.frame(i) for k, c in cams.items()})
                time.sleep(1 / (3 * FPS))
            _wait_encoded(rec, 40 * (ep + 1))
            for h in rec.health().values():
                _assert_normal(h.pid, cfg)
                assert h.sched in {f"{p} nice {cfg.nice}" for p in _allowed(cfg)}, h.sched
            rec.end_episode()
        rec.start_episode(2)
        victim = rec.health()["a"].pid
        for i in range(80):
            if i == 20:
                os.kill(victim, signal.SIGKILL)
            rec.add_frame({k: c.frame(i) for k, c in cams.items()})
            time.sleep(1 / (3 * FPS))
        _wait_encoded(rec, 40 * 2 + 80)
        health = rec.health()
        assert health["a"].restarts == 1 and health["a"].pid != victim
        for h in health.values():  # the restarted encoder resumed the episode: a codec opened again
            _assert_normal(h.pid, cfg)
        videos = rec.end_episode()
    assert all(v.frames == 80 for v in videos.values())
    assert sched.observe().realtime == 0


def test_scheduling_settings_reach_every_encoder_thread(tmp_path):
    cpu = max(os.sched_getaffinity(0))
    cfg = EncoderConfig(sched="batch", nice=7, cpus=(cpu,))
    cam = SyntheticCamera(240, 320)
    with Recorder(tmp_path, fps=FPS, cameras={"a": (240, 320)}, encoder=cfg) as rec:
        rec.start_episode()
        for i in range(30):
            rec.add_frame({"a": cam.frame(i)})
        _wait_encoded(rec, 30)
        h = rec.health()["a"]
        _assert_normal(h.pid, cfg)
        assert h.sched == "batch nice 7"
        for tid in sched.threads(h.pid):
            with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
                assert os.sched_getaffinity(tid) == {cpu}
        video = rec.end_episode()["a"]
    assert video.frames == 30


@pytest.mark.parametrize(
    "bad", [{"sched": "fifo"}, {"sched": "rr"}, {"nice": -5}, {"nice": 20}, {"cpus": ()}, {"cpus": (4096,)}]
)
def test_bad_scheduling_settings_are_config_errors(bad):
    with pytest.raises(ConfigError):
        EncoderConfig(**bad)


def test_cli_probe_says_whether_encoders_would_have_gone_real_time():
    out = subprocess.run([sys.executable, "-m", "streamenc", "probe"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("real-time:"))
    if PRIVILEGED:
        assert "libsvtav1 moved its opening thread to real-time priority" in line
        assert "give up that right" in line
    else:
        assert "no thread here may enter a real-time class" in line


def _policy(pid: int) -> tuple[str, ...]:
    s = sched.observe(pid)
    assert s.realtime == 0, s
    return s.policies


@pytest.mark.skipif(not sched.has_sys_nice(), reason="steering the encoders needs CAP_SYS_NICE (CI runs as root)")
def test_auto_keeps_encoders_idle_while_they_keep_up_and_boosts_them_when_behind_or_waited_for(tmp_path):
    """sched="auto": SCHED_IDLE while recording and keeping up; SCHED_OTHER once an encoder
    falls behind (here it is stopped while the ring fills) and while the recorder waits for
    it (end_episode, and between episodes); SCHED_IDLE again at the next episode."""
    cam = SyntheticCamera(120, 160)
    cfg = EncoderConfig(vcodec="libx264", sched="auto")
    with Recorder(tmp_path, fps=FPS, cameras={"a": (120, 160)}, encoder=cfg, slots=64) as rec:
        pid = rec.health()["a"].pid
        rec.start_episode()
        for i in range(2 * FPS + 1):  # keeping up: the steers at frames 0, 30 and 60 see no backlog
            if i % FPS == 0:
                _wait_encoded(rec, i)
            rec.add_frame({"a": cam.frame(i)})
        _wait_encoded(rec, 2 * FPS + 1)
        assert _policy(pid) == ("idle",)
        os.kill(pid, signal.SIGSTOP)
        try:
            for i in range(2 * FPS + 1, 4 * FPS + 1):  # 60 frames behind: the steers at 90 and 120 see it
                rec.add_frame({"a": cam.frame(i)})
            assert _policy(pid) == ("other",), "behind: boosted"
        finally:
            os.kill(pid, signal.SIGCONT)
        _wait_encoded(rec, 4 * FPS + 1)
        for i in range(4 * FPS + 1, 6 * FPS + 1):  # caught up: the steer at frame 150 calms it
            if i % FPS == 0:
                _wait_encoded(rec, i)
            rec.add_frame({"a": cam.frame(i)})
        assert _policy(pid) == ("idle",), "caught up: idle again"
        first = rec.end_episode()["a"]
        assert _policy(pid) == ("other",), "waited for, and between episodes: boosted"
        rec.start_episode()
        rec.add_frame({"a": cam.frame(0)})
        assert _policy(pid) == ("idle",), "recording again, from its first frame"
        for i in range(1, FPS):
            rec.add_frame({"a": cam.frame(i)})
        second = rec.end_episode()["a"]
    for video, n in ((first, 6 * FPS + 1), (second, FPS)):
        c = check(video.path, cam)
        assert c.frames == n and c.in_order(n)


def test_auto_without_the_right_to_steer_runs_batch_and_records_everything(tmp_path):
    """Without CAP_SYS_NICE (an ordinary user) the recorder cannot bring an encoder back
    from SCHED_IDLE, so sched="auto" starts it as SCHED_BATCH, which still gets its share."""
    out = _python(
        f"""
        from streamenc import EncoderConfig, Recorder, sched
        from streamenc.synthetic import SyntheticCamera
        from streamenc.verify import check
        sched.give_up_realtime()  # as an ordinary user: no CAP_SYS_NICE
        cam = SyntheticCamera(120, 160)
        with Recorder({str(tmp_path)!r}, fps=30, cameras={{"a": (120, 160)}},
                      encoder=EncoderConfig(vcodec="libx264", sched="auto")) as rec:
            pid = rec.health()["a"].pid
            rec.start_episode()
            for i in range(45):
                rec.add_frame({{"a": cam.frame(i)}})
            policies = sched.observe(pid).policies
            video = rec.end_episode()["a"]
            after = sched.observe(pid).policies
        c = check(video.path, cam)
        print(policies, after, c.frames, c.in_order(45))
        """
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["('batch',)", "('batch',)", "45", "True"], out.stdout


@pytest.mark.skipif(not sched.has_sys_nice(), reason="steering the encoders needs CAP_SYS_NICE (CI runs as root)")
def test_auto_encoders_finish_an_episode_beside_busy_programs_in_the_recorders_session(tmp_path):
    """Two busy programs at nice 0 in the recorder's own session take both cores: SCHED_IDLE
    encoders there drained 0.2 frames/s. With sched="auto" the encoder is boosted while
    end_episode waits, so the episode finishes, every frame in it."""
    from streamenc.bench import load

    cam = SyntheticCamera(120, 160)
    cfg = EncoderConfig(vcodec="libx264", sched="auto")
    with Recorder(tmp_path, fps=FPS, cameras={"a": (120, 160)}, encoder=cfg, slots=64) as rec:
        pid = rec.health()["a"].pid
        rec.start_episode()
        os.kill(pid, signal.SIGSTOP)  # the whole episode waits for it, as behind busy programs
        busy = load.start(busy=2, own_session=True)
        try:
            for i in range(FPS):
                rec.add_frame({"a": cam.frame(i)})
            os.kill(pid, signal.SIGCONT)
            video = rec.end_episode()["a"]
            assert _policy(pid) == ("other",)
        finally:
            os.kill(pid, signal.SIGCONT)
            load.stop(busy)
    c = check(video.path, cam)
    assert c.frames == FPS and c.in_order(FPS)
