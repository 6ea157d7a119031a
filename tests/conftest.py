"""Shared fixtures. The autouse guard fails any test that leaves shared memory
or a child process behind, and cleans up after it so one leak does not cascade."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess

import psutil
import pytest

import streamenc
from streamenc import sched
from streamenc.segments import unlink

if os.environ.get("STREAMENC_TEST_INSTALLED") and "site-packages" not in streamenc.__file__:
    raise RuntimeError(f"testing the installed package, but streamenc was imported from {streamenc.__file__}")


def pytest_report_header(config) -> str:
    from helpers import CRASH_SEED

    return f"crash tests' kill points: STREAMENC_CRASH_SEED={CRASH_SEED}"


def _ours(child: psutil.Process) -> bool:
    """A child a test started, not multiprocessing's own long-lived resource tracker."""
    try:
        return child.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(child.cmdline())
    except psutil.Error:
        return False


def _shm_entries() -> set[str]:
    return {os.path.basename(p) for p in glob.glob("/dev/shm/*streamenc*")}


@pytest.fixture(autouse=True)
def no_leaks():
    before = _shm_entries()
    with sched.kept_schedule():  # a test that opens SVT-AV1 itself must not leave this process real-time
        yield
    me = psutil.Process()
    children = [c for c in me.children(recursive=True) if _ours(c)]
    for c in children:
        with contextlib.suppress(psutil.Error):
            c.send_signal(signal.SIGKILL)
    psutil.wait_procs(children, timeout=5)
    leaked = sorted(_shm_entries() - before)
    for entry in leaked:
        if not entry.startswith("sem."):
            unlink(entry)
    leaked_now = sorted(_shm_entries() - before)
    for entry in leaked_now:  # lone semaphores
        with contextlib.suppress(OSError):
            os.unlink(os.path.join("/dev/shm", entry))
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
