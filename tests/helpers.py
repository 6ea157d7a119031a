"""Helpers the test modules share (test modules never import each other)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

# The seed of the crash tests' random kill points: STREAMENC_CRASH_SEED reproduces a run
# (pytest's header prints it, and every failure says it).
CRASH_SEED = int(os.environ.get("STREAMENC_CRASH_SEED") or random.SystemRandom().randrange(2**31))


def encoder_pids() -> set[int]:
    """Live streamenc encoder processes of this test run, found by their command line, which
    ``streamenc.encoder`` builds, in this process's session: an orphan is no child of ours
    but keeps its recorder's session, and a recorder running beside the suite (another
    program, another test run) is in a session of its own, so its encoders do not count."""
    import psutil

    from streamenc.encoder import BOOT

    out = set()
    session = os.getsid(0)
    for p in psutil.process_iter(["cmdline", "status"]):
        if p.info["status"] != psutil.STATUS_ZOMBIE and BOOT in (p.info["cmdline"] or []):
            try:
                if os.getsid(p.pid) == session:
                    out.add(p.pid)
            except OSError:  # gone meanwhile
                continue
    return out


def wait_for(condition, timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``condition`` until it holds: the way tests wait on other processes and threads,
    instead of sleeping a guessed time."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.005)


def streamenc(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """The ``streamenc`` command as a user runs it."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "streamenc", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env
    )


def one_line_error(result: subprocess.CompletedProcess, code: int, text: str) -> None:
    """A user error: the exit code, one line on stderr, no traceback."""
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    assert text in result.stderr, result.stderr
