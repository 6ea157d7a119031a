"""Competing load for a benchmark run: the other programs of a robot computer.

A robot computer is never idle: a policy, a teleoperation UI, a viewer and ROS nodes run
beside the recorder. A run can have, beside its recording process,

- busy programs: ``while True: pass`` at nice 0, each a process of its own, in a session
  of its own (another program) or in the recording process's session (so in its scheduler
  autogroup, as a policy in the recording process would be);
- a bursty policy: 20 ms of numpy work every 33 ms, in the recording process's session.

Every process started here is ended by pid (``stop``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

BUSY = "while True: pass"
POLICY = """
import time, numpy as np
a = np.random.default_rng(0).random((256, 256), np.float32)
tick = time.perf_counter()
while True:
    end = tick + 0.020
    while time.perf_counter() < end:
        a = np.tanh(a @ a.T * 1e-3) + 1e-3
    tick += 0.033
    time.sleep(max(0.0, tick - time.perf_counter()))
"""


def start(busy: int = 0, policy: bool = False, own_session: bool = True) -> list[subprocess.Popen]:
    """``busy`` busy programs and, if asked, a bursty policy, in this process's session or
    each in a session of its own."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = []
    try:
        for code in [BUSY] * busy + [POLICY] * bool(policy):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", code],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    start_new_session=not own_session,
                )
            )
    except BaseException:
        stop(procs)
        raise
    return procs


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGKILL)
    for p in procs:
        p.wait()
