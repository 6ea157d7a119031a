"""The ``streamenc`` command as a user runs it: a subprocess, its exit code and output."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import one_line_error, streamenc

from streamenc.verify import check


def test_probe_lists_encoders_and_shm():
    out = streamenc("probe")
    assert out.returncode == 0, out.stderr
    assert "libsvtav1" in out.stdout and "/dev/shm:" in out.stdout and "gpu" in out.stdout
    data = json.loads(streamenc("probe", "--json").stdout)
    assert {e["name"] for e in data["encoders"]} >= {"libsvtav1", "libx264", "h264_nvenc"}
    assert data["shm_free_bytes"] > 0 and data["gpus"]


def test_probe_bad_argument():
    one_line_error(streamenc("probe", "--bogus"), 2, "unrecognized arguments: --bogus")


def test_record_synthetic_writes_a_checked_video(tmp_path):
    out = streamenc(
        "record", "--synthetic", "--cameras", "2", "--size", "160x120", "--seconds", "1", "--out", str(tmp_path)
    )
    assert out.returncode == 0, out.stderr
    assert "fps | cam0 q" in out.stderr  # the live status line
    assert "missed deadlines" in out.stdout
    for cam in ("cam0", "cam1"):
        assert f"{cam}: 30 frames" in out.stdout
        result = check(tmp_path / "videos" / cam / "episode-000000.mp4")
        assert result.frames == 30 and result.in_order()


def test_record_synthetic_with_a_depth_camera_checks_its_codes(tmp_path):
    out = streamenc(
        "record", "--synthetic", "--cameras", "1", "--size", "160x120", "--seconds", "1", "--depth", "float32",
        "--out", str(tmp_path),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "depth: 30 frames" in out.stdout and "(libx265; 12-bit codes identical to the frames sent)" in out.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["record", "--cameras", "1"], "add --synthetic"),
        (["record", "--synthetic", "--size", "640by480"], "--size must be WIDTHxHEIGHT"),
        (["record", "--synthetic", "--size", "641x480", "--seconds", "1"], "even and at least 16 px"),
        (["record", "--synthetic", "--seconds", "-1"], "must be positive"),
        (["record", "--synthetic", "--codec", "h265"], "vcodec 'h265' is not one of"),
        (["bench", "--pipelines", "png,gst"], "unknown pipelines ['gst']"),
        (["bench", "--sizes", "4k"], "unknown size '4k'"),
        (["bench", "--content", "scene,photo"], "unknown content 'photo'"),
        (["bench", "--cameras", "two"], "not a comma-separated list of int"),
        (["bench", "--video", "/nonexistent.mp4"], "no such file"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(args, message, tmp_path):
    one_line_error(streamenc(*args, cwd=tmp_path), 2, message)


PLANT = textwrap.dedent(
    """
    import os, signal, sys, time
    import numpy as np
    from pathlib import Path
    from streamenc.ring import FrameRing
    from streamenc.spill import SpillWriter
    ring = FrameRing.create((32, 32, 3), "uint8", slots=4)
    spill_dir = Path(sys.argv[1]) / ".spill"
    spill_dir.mkdir(parents=True)
    spill = SpillWriter(spill_dir / f"front-{ring.name}.spill", ring)
    for i in range(3):
        spill.append(np.full((32, 32, 3), i, np.uint8), 0, i, i)
    while spill.head < 3:  # written by the spill's thread
        time.sleep(0.01)
    print(ring.name, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # a recorder that died: its segment and spill stay
    """
)


def test_clean_lists_then_removes_a_planted_stale_segment_and_spill_file(tmp_path):
    planted = subprocess.run([sys.executable, "-c", PLANT, str(tmp_path)], capture_output=True, text=True)
    assert planted.returncode == -signal.SIGKILL
    name = planted.stdout.strip()
    segment = Path("/dev/shm") / name
    spill = tmp_path / ".spill" / f"front-{name}.spill"
    assert segment.exists() and spill.exists()

    dry = streamenc("clean", "--dry-run", str(tmp_path))
    assert dry.returncode == 0, dry.stderr
    assert f"would remove /dev/shm/{name}" in dry.stdout
    assert f"would remove {spill} (3 frames)" in dry.stdout
    assert segment.exists() and spill.exists()

    done = streamenc("clean", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert f"removed /dev/shm/{name}" in done.stdout and f"removed {spill}" in done.stdout
    assert not segment.exists() and not spill.exists()
    again = json.loads(streamenc("clean", "--json", str(tmp_path)).stdout)
    assert name not in again["entries"] and again["spill_files"] == []


WITHOUT_BENCH_EXTRA = textwrap.dedent(
    """
    import sys
    class NotInstalled:  # as if the bench extra (matplotlib, psutil) had not been installed
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("matplotlib", "psutil"):
                raise ModuleNotFoundError(f"No module named {name!r}")
    sys.meta_path.insert(0, NotInstalled())
    from streamenc.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def test_bench_without_the_bench_extra_says_what_to_install_in_one_line(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", WITHOUT_BENCH_EXTRA, "bench", "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    one_line_error(out, 2, "the benchmark harness needs psutil, matplotlib: pip install 'streamenc[bench]'")
    assert len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "results.jsonl").exists()


def test_clean_bad_argument():
    one_line_error(streamenc("clean", "--force"), 2, "unrecognized arguments: --force")


@pytest.mark.slow
def test_demo_reports_every_frame_and_exact_depth_codes(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "streamenc.demo", "--seconds", "1", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "encoders: libsvtav1, libx265" in out.stdout
    assert out.stdout.count("12-bit codes round-trip exactly: True (largest code error 0)") == 2
    assert out.stdout.count("in order: True") == 4 and "every frame is there" in out.stdout
