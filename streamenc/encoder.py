"""The recorder's handle on one camera's encoder process (what runs inside it: worker.py).

Started as a fresh interpreter rather than through multiprocessing's spawn, which would
re-import the user's main script (and fail without an ``if __name__ == "__main__"``
guard). A socketpair carries the pickled messages of protocol.py.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path

from .errors import EncoderError
from .protocol import EncoderSpec, Failed, Ready, Stop, Stopped

READY_TIMEOUT_S = 120.0
# SIGINT is ignored before anything else: Ctrl-C is the recorder's to handle (it finalizes)
BOOT = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "from streamenc.worker import main; sys.exit(main(sys.argv[1:]))"
)
# A process group of its own, so a Ctrl-C at the terminal reaches only the recorder; but the
# recorder's session, hence its scheduler autogroup: a new session would put the encoder in an
# autogroup of its own, which the scheduler weighs like the record loop's whole group, and its
# SCHED_IDLE or nice value would then count only inside that group (measured: the loop woken
# up to 12 ms late behind SCHED_IDLE encoders in their own sessions, 0.4 ms in the same one).
_GROUP = {"process_group": 0} if sys.version_info >= (3, 11) else {}
_PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)


class EncoderProcess:
    """One encoder process: start it, send it commands, read its replies, end it by pid."""

    def __init__(self, spec: EncoderSpec) -> None:
        self.spec = spec
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_PARENT, env.get("PYTHONPATH")]))
        # no BLAS thread pool: the encoder uses none, and the process should have one thread
        # when it gives up real-time scheduling (capabilities are per thread)
        env.update(OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", OMP_NUM_THREADS="1")
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", BOOT, str(theirs.fileno())],
                env=env,
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                **_GROUP,
            )
        finally:
            theirs.close()
        self.pid: int = self._proc.pid
        self._conn = Connection(ours.detach())
        self._ready = select.poll()  # a poll object made once: Connection.poll(0) costs ~50 us per call
        self._ready.register(self._conn.fileno(), select.POLLIN)
        self._conn.send(spec)

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        msg = self.expect((Ready,), timeout, "start")
        if not isinstance(msg, Ready):
            raise EncoderError(f"encoder for {self.spec.camera} did not start: {msg.text}")

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    @property
    def exit_code(self) -> int | None:
        """None while it runs; a negative number is the signal that ended it."""
        return self._proc.poll()

    def send(self, msg: object) -> None:
        try:
            self._conn.send(msg)
        except (OSError, EOFError) as e:
            raise EncoderError(f"encoder for {self.spec.camera} (pid {self.pid}) is gone: {e}") from None

    def poll(self) -> object | None:
        """The next message if one is there; EncoderError if the process has died."""
        try:
            if self._ready.poll(0):
                return self._conn.recv()
        except (EOFError, OSError):
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(5)
        if self._proc.poll() is not None:
            raise EncoderError(
                f"encoder for {self.spec.camera} (pid {self.pid}) died (exit code {self._proc.returncode})"
            )
        return None

    def expect(self, kinds: tuple[type, ...], timeout: float | None, what: str) -> object:
        """Wait for a reply of one of ``kinds``, or a final Failed, passing over what a
        restarted process sends first (Ready, Started) and mid-episode failure notes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            msg = self.poll()
            if msg is not None:
                if isinstance(msg, kinds) or (isinstance(msg, Failed) and msg.final):
                    return msg
                continue
            if deadline is not None and time.monotonic() > deadline:
                raise EncoderError(f"encoder for {self.spec.camera} did not answer {what} in {timeout} s")
            with contextlib.suppress(OSError, EOFError):
                self._conn.poll(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask it to exit, then make sure it has, by pid."""
        if self.alive:
            with contextlib.suppress(EncoderError, OSError):
                self.send(Stop())
                self.expect((Stopped,), timeout, "stop")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout)
        if self.alive:
            self._proc.kill()
            self._proc.wait(5)
        self._conn.close()
