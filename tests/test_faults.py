"""No frame lost: overload, killed processes, a full disk, a short /dev/shm, drop and block.

Every fault here is real: kill -9 of real processes, a ring really full, a tmpfs the
test mounts in a private mount namespace.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest
from helpers import wait_for

from streamenc import EncoderConfig, EncoderError, Recorder, pipeline, segments, testing
from streamenc import ring as ringmod
from streamenc import spill as spill_mod
from streamenc import videos as recmod
from streamenc.synthetic import SyntheticCamera
from streamenc.verify import check

pytestmark = pytest.mark.slow

FPS = 30


def _tree_rss(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.Error:
            pass
    return total


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_overload_spills_in_order_loses_nothing_and_memory_stays_flat(tmp_path):
    """2 cameras at 480p pushed at 4x real time: the encoders cannot keep up on this machine."""
    cams = {f"c{k}": SyntheticCamera(480, 640, seed=k) for k in range(2)}
    n = 600
    rss, max_spilled = [], 0
    with Recorder(tmp_path, fps=FPS, cameras={k: (480, 640) for k in cams}, slots=16) as rec:
        pids = [os.getpid()] + [h.pid for h in rec.health().values()]
        rec.start_episode()
        tick = time.perf_counter()
        for i in range(n):
            rec.add_frame({k: c.frame(i) for k, c in cams.items()})
            if i % 25 == 0:  # less the spill writers' buffer pools: bounded, filled as the disk lags
                pools = sum(testing.pipeline(rec, k).spill.pool_bytes for k in cams)
                rss.append(_tree_rss(pids) - pools)
                max_spilled = max(max_spilled, *(h.spilled for h in rec.health().values()))
            tick += 1 / (4 * FPS)
            time.sleep(max(0.0, tick - time.perf_counter()))
        videos = rec.end_episode()
        assert not list((tmp_path / ".spill").glob("*.spill"))  # drained, so deleted
    assert max_spilled > 0, "the overload never reached the spill"
    for video in videos.values():
        c = check(video.path)
        assert c.frames == n and c.in_order(n)
    # memory does not grow with the frame count: the second half peaks no higher than the first
    half = len(rss) // 2
    assert max(rss[half:]) <= max(rss[:half]) * 1.15 + 32 * 2**20, [r >> 20 for r in rss]


def test_kill_9_of_an_encoder_mid_episode_loses_no_frame(tmp_path):
    cams = {"a": SyntheticCamera(240, 320, seed=1), "b": SyntheticCamera(240, 320, seed=2)}
    n = 240
    with Recorder(tmp_path, fps=FPS, cameras={k: (240, 320) for k in cams}) as rec:
        rec.start_episode()
        victim = rec.health()["a"].pid
        for i in range(n):
            if i == 100:
                os.kill(victim, signal.SIGKILL)
            rec.add_frame({k: c.frame(i) for k, c in cams.items()})
            time.sleep(1 / (2 * FPS))
        health = rec.health()
        videos = rec.end_episode()
    assert health["a"].restarts == 1 and health["b"].restarts == 0
    assert health["a"].pid != victim
    assert not psutil.pid_exists(victim) or psutil.Process(victim).status() == psutil.STATUS_ZOMBIE
    for name, video in videos.items():
        c = check(video.path, cams[name])
        assert video.frames == n and c.frames == n
        assert c.in_order(n) and c.cfr(FPS)
        assert c.max_mean_abs_error < 8
    assert sorted(os.listdir(tmp_path / "videos" / "a")) == ["episode-000000.mp4"]  # parts joined, removed


@pytest.mark.parametrize("overflow", ["spill", "block"])
def test_a_ring_that_fills_before_the_new_encoder_attaches_restarts_it_once(tmp_path, overflow):
    """After a kill -9 the ring's header names the dead encoder until its replacement has
    started and attached (about a second of imports). A ring that fills meanwhile must
    not restart the replacement again: the frames wait (spill, or the loop blocks)."""
    cam = SyntheticCamera(240, 320)
    n = 120
    with Recorder(tmp_path, fps=FPS, cameras={"a": (240, 320)}, slots=16, overflow=overflow) as rec:
        rec.start_episode()
        for i in range(10):
            rec.add_frame({"a": cam.frame(i)})
        victim = rec.health()["a"].pid
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: _zombie(victim), what="the encoder dead")
        for i in range(10, n):  # as fast as the loop goes: the ring is full long before anyone attaches
            rec.add_frame({"a": cam.frame(i)})
        health = rec.health()["a"]
        video = rec.end_episode()["a"]
    assert health.restarts == 1 and health.pid != victim
    c = check(video.path, cam)
    assert video.frames == n and c.frames == n and c.in_order(n)


def test_kill_9_of_an_encoder_after_the_seal_loses_no_frame(tmp_path):
    """The encoder dies while it flushes a sealed episode: end_episode restarts it, and
    the new one resumes after the frames the dead one made durable."""
    cams = {"a": SyntheticCamera(240, 320, seed=1), "b": SyntheticCamera(240, 320, seed=2)}
    n = 90
    with Recorder(tmp_path, fps=FPS, cameras={k: (240, 320) for k in cams}) as rec:
        rec.start_episode()
        for i in range(n):
            rec.add_frame({k: c.frame(i) for k, c in cams.items()})
            time.sleep(1 / (2 * FPS))
        victim = rec.health()["a"].pid
        os.kill(victim, signal.SIGSTOP)  # so that it cannot finish the flush before it is killed
        rec.seal_episode()
        os.kill(victim, signal.SIGKILL)
        videos = rec.end_episode()
        health = rec.health()
    assert health["a"].restarts == 1 and health["a"].pid != victim
    for name, video in videos.items():
        c = check(video.path, cams[name])
        assert video.frames == n and c.frames == n
        assert c.in_order(n) and c.cfr(FPS)
        assert c.max_mean_abs_error < 8


FINISH_THEN_DIE = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from streamenc import EncoderConfig
    from streamenc.protocol import EncoderSpec
    from streamenc.synthetic import SyntheticCamera
    from streamenc.episode import EpisodeWriter
    final, n = Path(sys.argv[1]), int(sys.argv[2])
    spec = EncoderSpec("a", "-", "-", 30, "libx264", EncoderConfig(vcodec="libx264"), 1)
    ep = EpisodeWriter(spec, 0, final, (240, 320, 3), hold_limit=14)
    cam = SyntheticCamera(240, 320)
    for i in range(n):
        ep.take(i, cam.frame(i), lambda: None)
    rename = os.replace
    def rename_then_die(src, dst):
        rename(src, dst)
        if Path(dst) == final:  # the file is whole and in place; Ended was never sent
            os.kill(os.getpid(), signal.SIGKILL)
    os.replace = rename_then_die
    ep.end(n - 1)
    print(ep.close())
    """
)


def test_an_encoder_killed_after_it_renamed_the_finished_file_loses_no_frame(tmp_path):
    """The window between the finished file's rename and the Ended message: the new
    encoder resumes, meets frames the dead one never released, and keeps the file whole."""
    from streamenc.episode import EpisodeWriter
    from streamenc.protocol import EncoderSpec, Ended

    final, n = tmp_path / "episode-000000.mp4", 60
    died = subprocess.run([sys.executable, "-c", FINISH_THEN_DIE, str(final), str(n)], capture_output=True, text=True)
    assert died.returncode == -signal.SIGKILL and died.stdout == "", died.stderr
    assert final.exists() and check(final).frames == n
    spec = EncoderSpec("a", "-", "-", FPS, "libx264", EncoderConfig(vcodec="libx264"), 1)
    ep = EpisodeWriter(spec, 0, final, (240, 320, 3), hold_limit=14, resume=True)
    assert ep.start == n
    cam, released = SyntheticCamera(240, 320), []
    for i in range(n - 5, n):  # still held by the dead one: the ring gives them again
        ep.take(i, cam.frame(i), lambda i=i: released.append(i))
    assert released == list(range(n - 5, n)), "frames already in the file are let go"
    ep.end(n - 1)
    ended = ep.close()
    assert isinstance(ended, Ended) and ended.frames == n, ended
    c = check(final, cam)
    assert c.frames == n and c.in_order(n) and c.max_mean_abs_error < 8
    assert sorted(p.name for p in tmp_path.iterdir()) == [final.name], "parts left behind"


@pytest.mark.parametrize("overflow", ["spill", "block"])
def test_encoder_that_keeps_dying_fails_the_episode_and_keeps_what_is_durable(tmp_path, monkeypatch, overflow):
    """Given up after its second death: the loop goes on (the ring fills, frames go to
    the spill file, also with overflow="block"), and end_episode says why."""
    monkeypatch.setattr(pipeline, "RESTARTS_ALLOWED", 1)
    monkeypatch.setattr(pipeline, "RESTART_WINDOW_S", 3600.0)  # both deaths count, however slow the machine
    cam = SyntheticCamera(240, 320)
    with Recorder(tmp_path, fps=FPS, cameras={"a": (240, 320)}, slots=16, overflow=overflow) as rec:
        rec.start_episode()
        for i in range(200):
            if i in (60, 130):
                # every frame so far taken by the encoder (so the first 60 become durable), then kill it
                wait_for(lambda: rec.health()["a"].queued + rec.health()["a"].spilled == 0, what="encoder caught up")
                pid = rec.health()["a"].pid
                os.kill(pid, signal.SIGKILL)
                wait_for(lambda pid=pid: not psutil.pid_exists(pid) or _zombie(pid), what="the encoder dead")
            rec.add_frame({"a": cam.frame(i)})
            time.sleep(1 / (2 * FPS))
        assert rec.health()["a"].spilled >= 200 - 130 - 16, "frames after the given-up encoder's ring filled"
        with pytest.raises(EncoderError, match="died 2 times"):
            rec.end_episode()
    kept = list((tmp_path / "videos" / "a").glob("episode-000000.mp4*"))
    assert kept, "what was durable must stay on disk"
    assert sum(check(p).frames for p in kept) >= 60


RECORDER_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from streamenc import Recorder
    from streamenc.synthetic import SyntheticCamera

    cam = SyntheticCamera(240, 320)
    rec = Recorder(sys.argv[1], fps=30, cameras={"front": (240, 320)})
    print("pid", rec.health()["front"].pid, flush=True)
    rec.start_episode()
    for i in range(int(sys.argv[2])):
        rec.add_frame({"front": cam.frame(i)})
        time.sleep(1 / 60)
    print("added", flush=True)
    time.sleep(600)  # mid-episode, until the test kills it
    """
)


def test_kill_9_of_the_recorder_leaves_a_playable_file_and_no_orphans(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", RECORDER_SCRIPT, str(tmp_path), "200"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    encoder = int(proc.stdout.readline().split()[1])
    line = proc.stdout.readline()
    assert line == "added\n", proc.stderr.read()
    proc.kill()
    proc.wait(10)
    deadline = time.monotonic() + 20
    while psutil.pid_exists(encoder) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not psutil.pid_exists(encoder), "the encoder outlived its recorder"
    video = tmp_path / "videos" / "front" / "episode-000000.mp4"
    c = check(video, SyntheticCamera(240, 320))
    assert c.frames == 200  # it drained the ring and flushed: every frame put is there
    assert c.in_order()
    assert not list((tmp_path / ".spill").glob("*")) if (tmp_path / ".spill").exists() else True
    left = [e for e in os.listdir("/dev/shm") if e.startswith("streamenc-") and segments.owner(e)]
    assert not [e for e in left if segments.owner(e)[0] == proc.pid], "the encoder left its dead recorder's ring"
    out = subprocess.run([sys.executable, "-m", "streamenc", "clean"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    left = [e for e in os.listdir("/dev/shm") if e.startswith("streamenc-") and segments.owner(e)]
    assert not [e for e in left if segments.owner(e)[0] == proc.pid], "the dead recorder's ring is there"
    assert not [
        e for e in os.listdir("/dev/shm") if e.startswith("sem.streamenc-") and e[4:].rsplit("-", 1)[0] not in left
    ]


DISK_SCRIPT = textwrap.dedent(
    """
    import sys, time, numpy as np
    from streamenc import Recorder, DiskFull, EncoderConfig
    from streamenc.synthetic import stamp
    root, spill, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(8)]
    with Recorder(root, fps=30, cameras={"cam": (480, 640)}, slots=16, spill_dir=spill,
                  encoder=EncoderConfig(vcodec="libx264", crf=0)) as rec:
        rec.start_episode()
        i, t0 = 0, time.monotonic()
        try:
            for i in range(3000):
                rec.add_frame({"cam": stamp(noise[i % 8], i)})
                if mode == "video":
                    time.sleep(1 / 30)
            rec.end_episode()
            print("NO ERROR")
        except DiskFull as e:
            print("DISKFULL", i, round(time.monotonic() - t0, 1), e.path, e.needed, flush=True)
    """
)


@pytest.mark.parametrize("where", ["spill", "video"])
def test_full_disk_raises_disk_full_fast_and_keeps_what_was_written(tmp_path, where, private_mounts):
    small = tmp_path / "small"
    small.mkdir()
    root = small if where == "video" else tmp_path / "videos-here"
    spill = small / "spill" if where == "spill" else tmp_path / "spill-here"
    cmd = (
        f"mount -t tmpfs -o size=24m tmpfs {small} && "
        f"{sys.executable} -c '{DISK_SCRIPT}' {root} {spill} {where}; "
        f"rc=$?; ls -la {small}/videos/cam {spill} 2>&1; cp -r {small}/videos {tmp_path}/saved 2>/dev/null; exit $rc"
    )
    out = subprocess.run(["unshare", "--mount", "sh", "-c", cmd], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next((x for x in out.stdout.splitlines() if x.startswith(("DISKFULL", "NO ERROR"))), out.stdout)
    assert line.startswith("DISKFULL"), (line, out.stderr[-2000:])
    _, index, seconds, path, needed = line.split()
    # raised by add_frame while recording (24 MiB hold ~30 of these frames), not at the end
    assert int(index) < 1500 and int(needed) > 0, line
    assert path.startswith(str(small))
    if where == "video":  # what was written before stays playable
        saved = list((tmp_path / "saved" / "cam").glob("episode-000000.mp4*"))
        assert saved and check(saved[0]).frames > 0 and check(saved[0]).in_order()


def test_short_dev_shm_gives_fewer_slots_with_a_warning(tmp_path, monkeypatch, caplog):
    full = segments.ring_bytes((240, 320, 3), "uint8", recmod.default_slots((240, 320, 3)))
    monkeypatch.setattr(ringmod, "shm_free_bytes", lambda path=segments.SHM_DIR: full // 2)
    monkeypatch.setattr(recmod, "shm_free_bytes", lambda path=segments.SHM_DIR: full // 2)
    cam = SyntheticCamera(240, 320)
    with caplog.at_level(logging.WARNING, logger="streamenc"):
        with Recorder(tmp_path, fps=FPS, cameras={"a": (240, 320)}) as rec:
            slots = rec.health()["a"].slots
            rec.start_episode()
            for i in range(60):
                rec.add_frame({"a": cam.frame(i)})
            video = rec.end_episode()["a"]
    assert recmod.MIN_SLOTS <= slots < recmod.default_slots((240, 320, 3))
    assert "instead of" in caplog.text
    assert check(video.path).in_order(60)


def test_drop_policy_counts_exactly_what_it_dropped(tmp_path):
    cam = SyntheticCamera(120, 160)
    with Recorder(tmp_path, fps=FPS, cameras={"a": (120, 160)}, overflow="drop", slots=16) as rec:
        rec.start_episode()
        for i in range(20):
            rec.add_frame({"a": cam.frame(i)})
        wait_for(lambda: rec.health()["a"].queued == 0, what="the encoder took the first 20 frames")
        pid = rec.health()["a"].pid
        os.kill(pid, signal.SIGSTOP)  # a stalled encoder: the ring fills for real
        try:
            for i in range(20, 80):
                rec.add_frame({"a": cam.frame(i)})
        finally:
            os.kill(pid, signal.SIGCONT)
        wait_for(lambda: rec.health()["a"].queued == 0, what="the encoder caught up after SIGCONT")
        for i in range(80, 100):
            rec.add_frame({"a": cam.frame(i)})
        dropped = rec.dropped["a"]
        video = rec.end_episode()["a"]
    c = check(video.path)
    assert dropped > 0
    assert c.frames == video.frames == 100 - dropped
    assert c.indices == sorted(set(c.indices))  # order kept, gaps only
    assert len(set(range(100)) - set(c.indices)) == dropped


def test_block_policy_feeds_as_fast_as_the_encoder_takes_with_no_spill(tmp_path):
    cam = SyntheticCamera(120, 160)
    n = 2000
    with Recorder(
        tmp_path, fps=FPS, cameras={"a": (120, 160)}, overflow="block", slots=16, encoder=EncoderConfig(g=30)
    ) as rec:
        rec.start_episode()
        for i in range(n):
            rec.add_frame({"a": cam.frame(i)})
            assert i % 200 or rec.health()["a"].spilled == 0
        video = rec.end_episode()["a"]
    assert not (tmp_path / ".spill").exists() or not list((tmp_path / ".spill").iterdir())
    c = check(video.path)
    assert c.frames == n and c.in_order(n)


def test_a_crash_in_the_encoder_loop_reaches_the_user_with_its_whole_message(tmp_path):
    """A damaged spill record makes the encoder's serve loop raise; the recorder must report
    FFmpeg's or Python's whole text, not one character of it."""
    cam = SyntheticCamera(120, 160)
    with Recorder(tmp_path, fps=FPS, cameras={"a": (120, 160)}, slots=16) as rec:
        rec.start_episode()
        for i in range(10):
            rec.add_frame({"a": cam.frame(i)})
        wait_for(lambda: rec.health()["a"].queued == 0, what="the encoder took the first frames")
        pid = rec.health()["a"].pid
        os.kill(pid, signal.SIGSTOP)
        try:
            for i in range(10, 60):  # the ring fills; the rest goes to the spill file
                rec.add_frame({"a": cam.frame(i)})
            spill = testing.pipeline(rec, "a").spill
            wait_for(lambda: spill.head >= 20, what="spill records written")
            with open(spill.path, "r+b") as f:  # break the first record's header
                f.seek(spill_mod.FILE_HEADER)
                f.write(b"\0" * 8)
        finally:
            os.kill(pid, signal.SIGCONT)
        with pytest.raises(EncoderError) as err:
            rec.end_episode()
    text = str(err.value)
    assert "damaged" in text and "SpillError" in text and len(text) > 40, text
