"""Memory, measured and constrained: a process tree's RSS read without disturbing it, a
memory cgroup around a run, and a process that holds a share of the RAM."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

CGROUP_ENV = "STREAMENC_BENCH_CGROUP_PROCS"  # a run's memory cgroup, joined by the run's process


def process_tree(pid: int):
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def snapshot(pid: int, scratch: Path, skip: int | None = None) -> dict:
    """RSS and private bytes of ``pid``'s tree (less ``skip``, a sampler in it), the bytes of
    streamenc's segments in /dev/shm, and the PNG and spill bytes under ``scratch``.

    Private is RSS less the resident shared pages (files, shared memory), both from
    /proc/<pid>/statm, which takes no lock of the process: reading smaps (USS, PSS) takes
    its memory-map lock, and sampling that once a second stalled a measured record loop
    for up to 1.3 s."""
    rss = private = 0
    for p in process_tree(pid):
        if p.pid == skip:
            continue
        with contextlib.suppress(psutil.NoSuchProcess):  # a child that ended meanwhile
            info = p.memory_info()
            rss, private = rss + info.rss, private + info.rss - info.shared
    shm = 0
    for f in Path("/dev/shm").glob("*streamenc*"):
        with contextlib.suppress(OSError):
            shm += f.stat().st_size
    disk = 0
    # os.walk, not rglob: the run deletes directories (an episode's PNGs after its save)
    # while this walks, and a vanished directory is skipped instead of ending the sweep
    for dirpath, _, names in os.walk(scratch):
        for name in names:
            if name.endswith((".png", ".spill")):
                with contextlib.suppress(OSError):
                    disk += os.stat(os.path.join(dirpath, name)).st_size
    return {"rss": rss, "private": private, "shm": shm, "disk": disk}


class MemoryCgroup:
    """A memory cgroup (v2, or v1's memory controller) holding a run's process tree, as a
    container limit would: its rings, page cache and encoders are charged to it. It is
    made inside this process's own cgroup, so it stays under any limit already set on us.
    Needs a writable cgroup file system (root, or a delegated subtree)."""

    def __init__(self, limit_mib: int) -> None:
        own = {}  # controller (v1) or "" (v2) -> this process's cgroup path
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                own[c] = path.lstrip("/")
        v1 = Path("/sys/fs/cgroup/memory")
        if (v1 / "memory.limit_in_bytes").exists() and "memory" in own:
            base, limit_file = v1 / own["memory"], "memory.limit_in_bytes"
        elif Path("/sys/fs/cgroup/cgroup.controllers").exists() and "" in own:
            base, limit_file = Path("/sys/fs/cgroup") / own[""], "memory.max"
        else:
            raise OSError("no cgroup memory controller at /sys/fs/cgroup")
        self.path = base / f"streamenc-bench-{os.getpid()}-{time.monotonic_ns()}"
        try:
            self.path.mkdir()
            (self.path / limit_file).write_text(str(limit_mib * 2**20))
        except OSError as e:
            self.remove()
            raise OSError(f"cannot make a memory cgroup in {base} ({e.strerror}); run as root or drop the limit") from e
        self.procs = self.path / "cgroup.procs"

    def remove(self) -> None:
        """End whatever is left in the group (an OOM-killed recorder's orphaned encoders),
        by pid, then remove it: a cgroup with live members cannot be removed."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                pids = [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
            except OSError:
                return  # never made, or already gone
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                self.path.rmdir()
                return
            time.sleep(0.05)


def memory_hog(share: float) -> subprocess.Popen | None:
    """A process holding ``share`` of the available RAM (touched, so it is resident)."""
    if share <= 0:
        return None
    nbytes = int(psutil.virtual_memory().available * share)
    code = (
        "import sys, time, numpy as np\n"
        f"a = np.ones({nbytes}, np.uint8)\n"
        "sys.stdout.write('ready\\n'); sys.stdout.flush()\n"
        "time.sleep(3600)\n"
    )
    hog = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    hog.stdout.readline()
    return hog
