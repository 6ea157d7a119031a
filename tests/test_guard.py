"""The suite's own leak guard (conftest.py), run on small test files in a pytest of its
own: it fails a test for the rings the test's processes leave, live or dead, and leaves
another program's live ring alone, neither counted nor removed. And the helper that finds
encoder processes counts this run's only."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
from helpers import encoder_pids, wait_for

from streamenc import liveness, segments
from streamenc.encoder import BOOT

# A recorder beside the suite: a process in a session of its own, no descendant of the
# test (its parent exits at once), that makes a ring and keeps it.
INNER = textwrap.dedent(
    """
    import os, subprocess, sys, time
    from pathlib import Path

    import psutil

    OUT = Path(os.environ["GUARD_OUT"])
    PRODUCER = (
        "import sys, time; from streamenc.ring import FrameRing; "
        "import os; r = FrameRing.create((8, 8, 3), 'uint8', slots=2); print(r.name, os.getpid(), flush=True); "
        "time.sleep(600)"
    )
    DIE = (
        "import os, signal; from streamenc.ring import FrameRing; "
        "r = FrameRing.create((8, 8, 3), 'uint8', slots=2); print(r.name, flush=True); "
        "os.kill(os.getpid(), signal.SIGKILL)"
    )


    def test_beside_another_recorder():
        spawn = (
            "import subprocess, sys; "
            f"subprocess.Popen([sys.executable, '-c', {PRODUCER!r}], start_new_session=True, "
            f"stdout=open({str(OUT / 'name')!r}, 'w'), stderr=subprocess.DEVNULL); "
        )
        subprocess.run([sys.executable, "-c", spawn], check=True, timeout=60)
        deadline = time.monotonic() + 60
        while not (OUT / "name").read_text().strip():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        name = (OUT / "name").read_text().split()[0]
        while not os.path.exists(f"/dev/shm/{name}"):
            time.sleep(0.01)
        assert not psutil.Process().children(recursive=True)  # not ours


    def test_leaks_its_own_ring():
        from streamenc.ring import FrameRing

        ring = FrameRing.create((8, 8, 3), "uint8", slots=2)
        (OUT / "own").write_text(ring.name)
        FrameRing._kept = ring


    def test_a_child_of_it_dies_leaving_a_ring():
        out = subprocess.run([sys.executable, "-c", DIE], capture_output=True, text=True, timeout=60)
        assert out.returncode == -9
        (OUT / "child").write_text(out.stdout.strip())
    """
)


def _inner_pytest(tmp_path: Path) -> subprocess.CompletedProcess:
    shutil.copy(Path(__file__).parent / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_inner.py").write_text(INNER)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {**os.environ, "GUARD_OUT": str(tmp_path)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA", "test_inner.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_leak_guard_judges_only_the_rings_of_the_tests_own_processes(tmp_path):
    (tmp_path / "name").write_text("")
    run = _inner_pytest(tmp_path)
    name, pid = (tmp_path / "name").read_text().split()
    try:
        found = segments.owner(name)
        assert found is not None, f"the other recorder's ring {name!r} is gone\n{run.stdout[-3000:]}"
        assert found[0] == int(pid) and liveness.alive(*found)
        assert int(pid) not in {p.pid for p in psutil.Process().children(recursive=True)}  # another program
        report = run.stdout
        assert "PASSED test_inner.py::test_beside_another_recorder" in report, report[-3000:]
        assert name not in report  # not counted as anyone's leak
        own, child = (tmp_path / "own").read_text(), (tmp_path / "child").read_text()
        assert "ERROR at teardown of test_leaks_its_own_ring" in report, report[-3000:]
        assert "ERROR at teardown of test_a_child_of_it_dies_leaving_a_ring" in report, report[-3000:]
        for leak in (own, child):  # counted, and removed
            assert f"'{leak}'" in report and f"'sem.{leak}-free'" in report
            assert not os.path.exists(f"/dev/shm/{leak}") and not os.path.exists(f"/dev/shm/sem.{leak}-free")
    finally:
        os.kill(int(pid), signal.SIGKILL)
        wait_for(lambda: not psutil.pid_exists(int(pid)) or psutil.Process(int(pid)).status() == "zombie")
        segments.unlink(name)


def test_encoders_of_a_recorder_beside_the_suite_are_not_this_runs():
    """What encoder_pids() finds by command line: an encoder in this session (a child, or an
    orphan of a recorder the test killed) counts; one in another session does not."""
    idle = [sys.executable, "-c", "import time; time.sleep(60)", BOOT]  # an encoder's command line
    ours = subprocess.Popen(idle)
    other = subprocess.Popen(idle, start_new_session=True)
    try:
        found = encoder_pids()
        assert ours.pid in found and other.pid not in found
    finally:
        for p in (ours, other):
            p.kill()
            p.wait()
