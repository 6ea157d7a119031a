"""The benchmark harness works: every pipeline measured, every field there, every frame
read back, report and plots written. (How fast anything is, is not asserted here.)"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path

import psutil
import pytest
from helpers import encoder_pids, streamenc, wait_for

from streamenc.bench import harness, memory, pipelines, runs

FIELDS = {
    "pipeline", "cameras", "size", "codec", "pressure", "config", "ok", "impl",
    "add_p50_ms", "add_p99_ms", "add_max_ms", "copy_p50_ms", "copy_p99_ms",
    "missed", "end_s", "cpu_s", "cpu_ms_per_frame", "cpu_share",
    "peak_rss_mib", "peak_private_mib", "peak_shm_mib", "peak_disk_mib", "memory", "backlog",
    "sent", "dropped", "back", "lost", "latency_cdf",
    "late_p50_ms", "late_p99_ms", "late_max_ms", "late_cdf", "backlog_max", "backlog_at_stop",
    "close_s", "busy", "busy_own", "policy", "reset_s",
}  # fmt: skip


@pytest.mark.slow
def test_quick_bench_measures_every_pipeline_and_reads_every_frame_back(tmp_path):
    out = streamenc("bench", "--quick", "--out", str(tmp_path), timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [ln["pipeline"] for ln in lines] == ["png", "stream", "streamenc"]
    for ln in lines:
        assert FIELDS <= set(ln), FIELDS - set(ln)
        assert ln["ok"] and ln["sent"] == 60 and ln["back"] == ln["sent"] and ln["lost"] == 0, ln["pipeline"]
        assert ln["cpu_s"] > 0 and ln["peak_rss_mib"] > 0 and ln["memory"]
        assert 0 < ln["copy_p50_ms"] <= ln["copy_p99_ms"]
        assert 0 <= ln["late_p50_ms"] <= ln["late_p99_ms"] <= ln["late_max_ms"] == ln["late_cdf"][-1]
        assert len(ln["late_cdf"]) == 101 and ln["backlog_max"] >= ln["backlog_at_stop"] >= 0
    streamenc_line = lines[2]
    assert streamenc_line["peak_shm_mib"] > 0  # its rings were seen in /dev/shm
    report = (tmp_path / "report.md").read_text()
    assert "1x240p libsvtav1" in report and report.count("real-time") >= 3
    assert "loop late p50 / p99 / max ms" in report and "overruns" in report
    for plot in ("latency_cdf", "lateness_cdf", "memory_timeline", "cpu_per_frame", "backlog_timeline"):
        assert (tmp_path / f"{plot}.png").stat().st_size > 1000
        assert f"({plot}.png)" in report
    assert "streamenc" in out.stdout and "report:" in out.stdout


def _busy_programs() -> set[int]:
    from streamenc.bench import load

    out = set()
    for p in psutil.process_iter(["cmdline", "status"]):
        cmd = p.info["cmdline"] or []
        if p.info["status"] != psutil.STATUS_ZOMBIE and (load.BUSY in cmd or load.POLICY in cmd):
            out.add(p.pid)
    return out


@pytest.mark.slow
def test_competing_load_runs_beside_the_recording_and_is_ended_by_pid(tmp_path):
    """2 busy programs, one in the recorder's session, and a bursty policy, then a reset
    period: the run keeps every frame, its load processes are there while it records (in the
    sessions asked) and none is left after."""
    from streamenc.bench import load

    before = _busy_programs()
    run = runs.Run("streamenc", 1, "240p", seconds=2.0, busy=2, busy_own=1, policy=True, reset_s=1.0)
    seen: dict[int, int] = {}

    def watch() -> None:
        while not done:
            for pid in _busy_programs() - before:
                with contextlib.suppress(psutil.Error):
                    seen[pid] = os.getsid(pid)
            time.sleep(0.2)

    done = False
    t = threading.Thread(target=watch)
    t.start()
    try:
        line = harness.measure(run, tmp_path)
    finally:
        done = True
        t.join()
    assert line["ok"] and line["lost"] == 0 and line["back"] == 60, line.get("error")
    assert line["close_s"] >= 0 and len(line["end_s"]) == 1
    assert "busy 2 (1 own) policy reset 1s" in line["config"]
    assert len(seen) == 3, seen  # 2 busy programs and the policy
    assert len(set(seen.values())) == 2, "one busy program in a session of its own, two in the recorder's"
    assert not _busy_programs() - before, "load processes left behind"
    assert load.POLICY and runs.load("2own") == {"busy": 2, "busy_own": 1}
    with pytest.raises(ValueError, match="unknown load"):
        runs.load("3")


def test_plan_is_the_product_of_the_axes_given():
    todo = runs.plan(cameras=[1, 2], sizes=["480p", "720p"], pipelines=["streamenc"], seconds=3)
    assert [(r.cameras, r.size) for r in todo] == [(1, "480p"), (1, "720p"), (2, "480p"), (2, "720p")]
    assert all(r.seconds == 3 and r.codec == "libsvtav1" for r in todo)
    default = runs.plan()
    configs = {r.config for r in default}
    assert {"1x480p libsvtav1", "4x480p libsvtav1", "2x1080p libsvtav1", "2x480p libx264"} <= configs
    assert "2x480p libsvtav1 pressure 50%" in configs
    assert len(default) == 3 * len(configs)


def test_content_is_an_axis_and_a_scene_has_a_renderers_edges_and_texture_without_noise():
    todo = runs.plan(contents=["synthetic", "scene"], pipelines=["png", "streamenc"], seconds=3)
    assert [(r.config, r.pipeline) for r in todo] == [
        ("2x480p libsvtav1", "png"),
        ("2x480p libsvtav1", "streamenc"),
        ("2x480p libsvtav1 scene", "png"),
        ("2x480p libsvtav1 scene", "streamenc"),
    ]
    with pytest.raises(ValueError, match="unknown content 'photo'"):
        runs.plan(contents=["photo"])
    import numpy as np

    from streamenc.synthetic import read_index

    a, b = (pipelines.Source(runs.Run("png", size="240p", content="scene"), i) for i in (0, 1))
    smooth = pipelines.Source(runs.Run("png", size="240p"), 0)
    first, later = a.frame(3).copy(), a.frame(10).copy()
    assert first.shape == (240, 320, 3) and read_index(first) == 3 and read_index(later) == 10
    assert not np.array_equal(first[40:], later[40:]) and not np.array_equal(first, b.frame(3))  # it moves

    def structure(img):  # below the stamp, in 4 px blocks: edges and texture, not pixel noise
        g = img[40:232].astype(np.float64).reshape(48, 4, 80, 4, 3).mean(axis=(1, 3))
        return float(np.abs(np.diff(g, axis=0)).mean() + np.abs(np.diff(g, axis=1)).mean())

    def noise(img):  # what no neighbour predicts
        g = img[40:232].astype(np.float64)
        return float(np.abs(g[:, 1:-1] - (g[:, :-2] + g[:, 2:]) / 2).mean())

    synthetic = smooth.frame(3).copy()
    assert structure(first) > 1.2 * structure(synthetic) and noise(first) < noise(synthetic) / 2


def test_scheduling_settings_name_the_configuration_and_reach_the_encoders():
    run = runs.Run("streamenc", sched="batch", nice=5, cpus=(0,))
    assert run.config == "2x480p libsvtav1 sched batch nice 5 cpus 0"
    assert runs.scheduling(run) == {"sched": "batch", "nice": 5, "cpus": (0,)}
    assert runs.scheduling(runs.Run("streamenc")) == {}


def test_quick_takes_the_axes_given():
    todo = runs.plan(quick=True, codecs=["libx264"], pipelines=["png"])
    assert [(r.cameras, r.size, r.codec, r.seconds) for r in todo] == [(1, "240p", "libx264", 2.0)]


@pytest.mark.slow
def test_models_of_every_pipeline_read_every_frame_back(tmp_path):
    """Without LeRobot (x264 is a codec LeRobot's paths cannot use with our settings) the
    three pipelines are models; each must write every frame it was given."""
    for pipeline in runs.PIPELINES:
        run = runs.Run(pipeline, cameras=2, size="240p", codec="libx264", seconds=1)
        line = harness.measure(run, tmp_path)
        assert line["ok"], line.get("error")
        assert line["impl"] == "model" and line["sent"] == line["back"] == 60 and line["dropped"] == 0, pipeline


@pytest.mark.slow
def test_a_run_past_its_timeout_is_killed_with_everything_it_started(tmp_path):
    encoders_before = encoder_pids()
    run = runs.Run("streamenc", cameras=1, size="240p", codec="libx264", seconds=60)
    t0 = time.monotonic()
    line = harness.measure(run, tmp_path, timeout=6)
    assert time.monotonic() - t0 < 30
    assert line["ok"] is False and line["error"] == "timed out after 6 s: killed"
    wait_for(lambda: encoder_pids() <= encoders_before, 10, "the run's encoder processes to end")


@pytest.mark.slow
def test_memory_hog_holds_its_share_and_is_ended():
    want = psutil.virtual_memory().available * 0.02 * 0.9  # its share of what was available
    hog = memory.memory_hog(0.02)
    try:
        wait_for(lambda: psutil.Process(hog.pid).memory_info().rss >= want, 10, "the hog's memory resident")
    finally:
        hog.kill()
        hog.wait()


@pytest.mark.slow
def test_a_pipeline_that_cannot_run_gives_a_failed_line_not_a_crash(tmp_path):
    run = runs.Run("streamenc", cameras=1, size="240p", seconds=1, limit_as_mib=64)
    line = harness.measure(run, Path(tmp_path))
    assert line["ok"] is False and line["error"]
    assert line["config"] == "1x240p libsvtav1 AS<=64MiB"


def test_frames_from_a_user_video_are_resized_and_differ_per_camera(tmp_path):
    import av
    import numpy as np

    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.height, s.width, s.pix_fmt = 120, 160, "yuv420p"
        for i in range(5):
            img = np.full((120, 160, 3), 40 * i, np.uint8)
            img[:, : 10 * (i + 1)] = 255
            c.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        c.mux(s.encode(None))
    run = runs.Run("streamenc", size="240p", video=str(path))
    a, b = pipelines.Source(run, 0), pipelines.Source(run, 1)
    assert len(a.pool) == 5 and a.frame(0).shape == (240, 320, 3) and a.frame(0).dtype == np.uint8
    assert a.frame(7) is a.frame(2)  # the pool loops
    assert not np.array_equal(a.frame(0), b.frame(0))


@pytest.mark.slow
def test_memory_cgroup_limit_is_applied_or_refused_clearly(tmp_path):
    try:
        group = memory.MemoryCgroup(64)
    except OSError as e:  # no writable cgroup here: the CLI says so in one line
        assert "cgroup" in str(e)
        out = streamenc("bench", "--quick", "--memory-limit", "64", "--out", str(tmp_path))
        assert out.returncode == 2 and "cgroup" in out.stderr and "Traceback" not in out.stderr
        return
    group.remove()
    encoders_before = encoder_pids()
    starved = harness.measure(runs.Run("streamenc", cameras=1, size="240p", seconds=1, memory_limit_mib=40), tmp_path)
    assert starved["ok"] is False and "cgroup<=40MiB" in starved["config"]
    wait_for(lambda: encoder_pids() <= encoders_before, 10, "the killed recorder's orphaned encoders to end")
    roomy = harness.measure(runs.Run("streamenc", cameras=1, size="240p", seconds=1, memory_limit_mib=4096), tmp_path)
    assert roomy["ok"] and roomy["back"] == roomy["sent"] == 30
    assert not list(Path(group.path.parent).glob("streamenc-bench-*"))  # every cgroup removed
