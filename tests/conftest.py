"""Shared fixtures. The autouse guard fails any test that leaves shared memory
or a child process behind, and cleans up after it so one leak does not cascade. It
judges only the rings the test's own processes produced: a recorder running beside the
suite keeps its rings, and fails no test."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import time

import psutil
import pytest

import streamenc
from streamenc import liveness, sched, segments

if os.environ.get("STREAMENC_TEST_INSTALLED") and "site-packages" not in streamenc.__file__:
    raise RuntimeError(f"testing the installed package, but streamenc was imported from {streamenc.__file__}")


def pytest_report_header(config) -> str:
    from helpers import CRASH_SEED

    return f"crash tests' kill points: STREAMENC_CRASH_SEED={CRASH_SEED}"


def _shm_entries() -> set[str]:
    return {os.path.basename(p) for p in glob.glob("/dev/shm/*streamenc*")}


def _now_ticks() -> int:
    """Now, in the clock /proc gives process start times in (ticks since boot)."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * os.sysconf("SC_CLK_TCK")) - 1


def _tree() -> dict[int, int]:
    """This process and its descendants (zombies too): pid -> start time."""
    me = psutil.Process()
    return {p.pid: liveness.start_time(p.pid) for p in (me, *me.children(recursive=True))}


def _ours(entries: set[str], tree: dict[int, int], since: int) -> list[str]:
    """Of the /dev/shm entries that appeared during a test, those of rings the test's own
    process tree produced (the producer named in the segment's header, pid and start
    time). A producer in the tree as the test ended is the test's. So is a dead one born
    during the test: a descendant that died before the end (a killed recorder) is gone
    from the tree by then, and a dead producer's ring is stale, so removing it harms no
    one (another program's recorder that started and crashed within one test would be
    counted too). A live producer outside the tree is another program, a recorder running
    beside the suite: its ring is never the test's, and never removed. A segment with no
    producer in its header is not judged. Semaphores go with their ring's segment; those
    whose segment is gone are stale, and the test's."""
    rings: dict[str, bool] = {}
    for entry in entries:
        ring = segments.ring_of(entry)
        if ring is None or ring in rings:
            continue
        found = segments.owner(ring)
        if found is None:  # no segment, or no producer in it: only lone semaphores are judged
            rings[ring] = _lone_semaphores(ring)
            continue
        pid, start = found
        if tree.get(pid) == start:
            rings[ring] = True
        else:
            rings[ring] = not liveness.alive(pid, start) and start >= since
    return sorted(e for e in entries if rings.get(segments.ring_of(e) or ""))


def _lone_semaphores(ring: str) -> bool:
    """Semaphores whose segment is gone. In that order: a ring is closed semaphores first,
    so a segment gone and a semaphore still there is no other program's ring mid-close."""
    if os.path.exists(os.path.join(segments.SHM_DIR, ring)):
        return False
    return any(os.path.exists(os.path.join(segments.SHM_DIR, "sem." + s[1:])) for s in segments.sem_names(ring))


def _our_child(child: psutil.Process) -> bool:
    """A child a test started, not multiprocessing's own long-lived resource tracker."""
    try:
        return child.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(child.cmdline())
    except psutil.Error:
        return False


@pytest.fixture(autouse=True)
def no_leaks():
    before, since = _shm_entries(), _now_ticks()
    with sched.kept_schedule():  # a test that opens SVT-AV1 itself must not leave this process real-time
        yield
    tree = _tree()
    children = [c for c in psutil.Process().children(recursive=True) if _our_child(c)]
    for c in children:
        with contextlib.suppress(psutil.Error):
            c.send_signal(signal.SIGKILL)
    psutil.wait_procs(children, timeout=5)
    leaked = _ours(_shm_entries() - before, tree, since)
    for ring in sorted({segments.ring_of(e) for e in leaked}):
        segments.unlink(ring)  # the segment and whichever semaphores it has
    if leaked or children:
        pytest.fail(f"test leaked shm entries {leaked} and child processes {[c.pid for c in children]}")


@pytest.fixture
def private_mounts() -> None:
    """Skip, saying why, where the test cannot mount a tmpfs in a private mount namespace
    (it needs root and util-linux's unshare; CI runs as root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    if not shutil.which("unshare"):
        pytest.skip("util-linux unshare is not installed")
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
    if probe.returncode:
        pytest.skip(f"cannot make a mount namespace: {probe.stderr.decode().strip()}")
