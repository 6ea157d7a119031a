"""FrameRing: order and content across processes, back-pressure, dead peers,
bad input, stale cleanup. Every test here uses real processes and real shm."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from peers import check_consumer, frame_for, idle_consumer, idle_producer
from streamenc import (
    FrameError,
    FrameRing,
    PeerDied,
    RingError,
    RingTimeout,
    ShmTooSmall,
    StateError,
    StreamencError,
    segments,
)

SPAWN = mp.get_context("spawn")
SMALL = (48, 64, 3)


@pytest.fixture
def ring():
    r = FrameRing.create(SMALL, "uint8", slots=4)
    yield r
    r.close()
    r.unlink()


def _start(target, *args):
    parent, child = SPAWN.Pipe()
    proc = SPAWN.Process(target=target, args=(*args, child), daemon=True)
    proc.start()
    return proc, parent


def _kill(proc) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(5)


# -- order and content ------------------------------------------------------------


@pytest.mark.parametrize("shape,count", [((120, 160, 3), 1200), ((480, 640, 3), 120)])
def test_frames_cross_a_process_in_order_byte_for_byte(shape, count):
    ring = FrameRing.create(shape, "uint8", slots=8)
    proc, conn = _start(check_consumer, ring.name, count)
    try:
        assert conn.poll(30) and conn.recv() == "attached"
        for i in range(count):
            frame = frame_for(i, shape)
            if i % 3 == 0:  # mix the copying and the zero-copy paths
                with ring.reserve(timeout=30, episode=7, frame_index=i) as buf:
                    buf[...] = frame
            else:
                assert ring.put(frame, timeout=30, episode=7, frame_index=i) == i
        assert conn.poll(60), "consumer did not report"
        ok, problem = conn.recv()
        assert problem is None
        assert ok == count
        proc.join(60)
        assert proc.exitcode == 0
    finally:
        ring.close()
        ring.unlink()


def test_frames_cross_threads_in_order_byte_for_byte():
    """A producer and a consumer thread of one process, with a 4-slot ring so that both
    block on each other; the copy runs without the GIL, so they really overlap."""
    count, shape = 600, (96, 128, 3)
    ring = FrameRing.create(shape, "uint8", slots=4)
    peer = FrameRing.attach(ring.name)
    problems: list[str] = []

    def consume() -> None:
        for i in range(count):
            with peer.get(timeout=30) as slot:
                if slot.seq != i or slot.frame_index != i or not np.array_equal(slot.array, frame_for(i, shape)):
                    problems.append(f"frame {i}: seq {slot.seq} index {slot.frame_index}")

    consumer = threading.Thread(target=consume)
    consumer.start()
    try:
        for i in range(count):
            ring.put(frame_for(i, shape), timeout=30, frame_index=i)
        consumer.join(60)
        assert not consumer.is_alive()
        assert problems == []
        assert ring.head == ring.tail == count
    finally:
        peer.close()
        ring.close()
        ring.unlink()


def test_slot_carries_timestamp_and_is_read_only(ring):
    peer = FrameRing.attach(ring.name)
    try:
        ring.put(frame_for(1, SMALL), timestamp_ns=123456789, episode=3, frame_index=42)
        ring.put(frame_for(2, SMALL))
        with peer.get(timeout=1) as slot:
            assert (slot.seq, slot.timestamp_ns, slot.episode, slot.frame_index) == (0, 123456789, 3, 42)
            with pytest.raises(ValueError):
                slot.array[0, 0, 0] = 1
        with peer.get(timeout=1) as slot:
            assert abs(slot.timestamp_ns - time.monotonic_ns()) < 5e9  # default: the monotonic clock
    finally:
        peer.close()


# -- back-pressure ----------------------------------------------------------------


def test_full_ring_times_out_and_corrupts_nothing(ring):
    peer = FrameRing.attach(ring.name)
    try:
        for i in range(4):
            ring.put(frame_for(i, SMALL), timeout=0)
        t0 = time.monotonic()
        with pytest.raises(RingTimeout) as info:
            ring.put(frame_for(99, SMALL), timeout=0.3)
        waited = time.monotonic() - t0
        assert 0.25 <= waited < 3, waited
        assert isinstance(info.value, TimeoutError)
        with pytest.raises(RingTimeout):
            with ring.reserve(timeout=0):
                pass
        assert ring.queued == 4
        # the four frames are intact, and the ring goes on after the timeouts
        for i in range(4):
            with peer.get(timeout=1) as slot:
                assert slot.seq == i and np.array_equal(slot.array, frame_for(i, SMALL))
        ring.put(frame_for(4, SMALL), timeout=0)
        with peer.get(timeout=1) as slot:
            assert slot.seq == 4 and np.array_equal(slot.array, frame_for(4, SMALL))
        with pytest.raises(RingTimeout):
            peer.get(timeout=0.05)
    finally:
        peer.close()


def test_held_slots_are_not_overwritten_and_free_in_seq_order(ring):
    peer = FrameRing.attach(ring.name)
    try:
        for i in range(4):
            ring.put(frame_for(i, SMALL))
        held = [peer.get(timeout=1) for _ in range(4)]
        held[2].release()
        held[1].release()  # slot 0 still held: nothing is free yet
        with pytest.raises(RingTimeout):
            ring.put(frame_for(4, SMALL), timeout=0.05)
        assert np.array_equal(held[0].array, frame_for(0, SMALL))
        held[0].release()  # frees 0, 1 and 2 together
        for i in range(4, 7):
            ring.put(frame_for(i, SMALL), timeout=0)
        assert np.array_equal(held[3].array, frame_for(3, SMALL))
        held[3].release()
        held[3].release()  # idempotent
        assert ring.queued == 3
    finally:
        peer.close()


def test_reserve_that_raises_commits_nothing(ring):
    peer = FrameRing.attach(ring.name)
    try:
        with pytest.raises(KeyError):
            with ring.reserve() as buf:
                buf[...] = 255
                raise KeyError("camera glitch")
        assert ring.queued == 0
        with pytest.raises(RingTimeout):
            peer.get(timeout=0.05)
        for i in range(4):  # the slot taken by the failed reserve is reused, not lost
            ring.put(frame_for(i, SMALL), timeout=0)
        for i in range(4):
            with peer.get(timeout=1) as slot:
                assert slot.seq == i and np.array_equal(slot.array, frame_for(i, SMALL))
    finally:
        peer.close()


# -- dead peers -------------------------------------------------------------------


def test_kill_9_of_consumer_wakes_a_blocked_producer_with_peer_died(ring):
    proc, conn = _start(idle_consumer, ring.name, 0, 0)
    assert conn.poll(30) and conn.recv() == "ready"
    for i in range(4):
        ring.put(frame_for(i, SMALL), timeout=1)
    t0 = time.monotonic()
    os.kill(proc.pid, signal.SIGKILL)  # not reaped yet: a zombie must count as dead
    with pytest.raises(PeerDied, match="died"):
        ring.put(frame_for(4, SMALL), timeout=20)
    assert time.monotonic() - t0 < 5
    proc.join(5)


def test_kill_9_of_producer_drains_then_gives_peer_died():
    proc, conn = _start(idle_producer, SMALL, 4, 3)
    assert conn.poll(30)
    name = conn.recv()
    peer = FrameRing.attach(name)
    try:
        _kill(proc)
        for i in range(3):  # what the dead producer put is still delivered
            with peer.get(timeout=1) as slot:
                assert slot.seq == i and np.array_equal(slot.array, frame_for(i, SMALL))
        t0 = time.monotonic()
        with pytest.raises(PeerDied, match="died"):
            peer.get(timeout=20)
        assert time.monotonic() - t0 < 5
    finally:
        peer.close()
        peer.unlink()


def test_closed_producer_gives_peer_died_after_the_last_frame(ring):
    peer = FrameRing.attach(ring.name)
    try:
        ring.put(frame_for(0, SMALL))
        ring.close()
        with peer.get(timeout=1) as slot:
            assert slot.seq == 0
        with pytest.raises(PeerDied, match="closed"):
            peer.get(timeout=5)
    finally:
        peer.close()


def test_replacement_consumer_resumes_at_first_unreleased_frame(ring):
    for i in range(4):
        ring.put(frame_for(i, SMALL), frame_index=i)
    proc, conn = _start(idle_consumer, ring.name, 3, 1)  # takes 0,1,2 and releases 0
    assert conn.poll(30) and conn.recv() == "ready"
    with pytest.raises(StreamencError, match="live consumer"):
        FrameRing.attach(ring.name)
    _kill(proc)
    peer = FrameRing.attach(ring.name)
    try:
        assert ring.queued == 3
        for i in (1, 2, 3):
            with peer.get(timeout=1) as slot:
                assert slot.seq == i and np.array_equal(slot.array, frame_for(i, SMALL))
        ring.put(frame_for(4, SMALL), timeout=0)
        with peer.get(timeout=1) as slot:
            assert slot.seq == 4
        assert ring.queued == 0
    finally:
        peer.close()


# -- bad input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad,what",
    [
        (np.zeros((64, 48, 3), np.uint8), "shape"),
        (np.zeros((3, 48, 64), np.uint8), "shape"),  # CHW
        (np.zeros((48, 64), np.uint8), "shape"),  # gray
        (np.zeros(SMALL, np.float32), "dtype"),  # float
        (np.zeros(SMALL, np.uint16), "dtype"),
        (np.zeros((48, 128, 3), np.uint8)[:, ::2], "contiguous"),
        (np.zeros(SMALL, np.uint8).tolist(), "numpy array"),
    ],
)
def test_bad_frames_are_rejected_and_the_ring_goes_on(ring, bad, what):
    peer = FrameRing.attach(ring.name)
    try:
        ring.put(frame_for(0, SMALL))
        with pytest.raises(FrameError, match=what) as info:
            ring.put(bad, timeout=0)
        assert isinstance(info.value, ValueError)
        assert ring.queued == 1
        ring.put(frame_for(1, SMALL), timeout=0)
        for i in range(2):
            with peer.get(timeout=1) as slot:
                assert slot.seq == i and np.array_equal(slot.array, frame_for(i, SMALL))
    finally:
        peer.close()


@pytest.mark.parametrize(
    "shape,dtype,slots", [((0, 4), "uint8", 4), ((4, 4), "O", 4), ((4, 4), "uint8", 0), ((1, 1, 1, 1, 1), "uint8", 2)]
)
def test_bad_geometry_is_refused_and_creates_nothing(shape, dtype, slots):
    before = set(os.listdir("/dev/shm"))
    with pytest.raises(StreamencError):
        FrameRing.create(shape, dtype, slots=slots)
    assert set(os.listdir("/dev/shm")) == before


def test_attach_refuses_missing_foreign_and_corrupt_segments(ring):
    with pytest.raises(StreamencError, match="no ring named"):
        FrameRing.attach("streamenc-00000000000000000000000000000000")
    with pytest.raises(StreamencError, match="not a streamenc ring name"):
        FrameRing.attach("someone-else")
    path = os.path.join("/dev/shm", ring.name)
    with open(path, "r+b") as f:
        f.seek(8)
        f.write((99).to_bytes(4, "little"))  # version
    with pytest.raises(StreamencError, match="version 99"):
        FrameRing.attach(ring.name)
    with open(path, "r+b") as f:
        f.write(b"NOTOURS!")  # magic
    with pytest.raises(StreamencError, match="bad magic"):
        FrameRing.attach(ring.name)


def test_producer_and_consumer_roles_are_enforced(ring):
    peer = FrameRing.attach(ring.name)
    try:
        with pytest.raises(StreamencError, match="consumer"):
            ring.get(timeout=0)
        with pytest.raises(StreamencError, match="producer"):
            peer.put(frame_for(0, SMALL))
    finally:
        peer.close()


def test_close_and_unlink_are_idempotent_and_final():
    ring = FrameRing.create(SMALL, slots=2)
    ring.close()
    ring.close()
    ring.unlink()
    ring.unlink()
    with pytest.raises(StateError, match="closed"):
        ring.put(frame_for(0, SMALL))
    with pytest.raises(RingError, match="no ring named"):
        FrameRing.attach(ring.name)


CLOSED = textwrap.dedent(
    """
    import mmap, sys
    import posix_ipc
    from streamenc import FrameRing, StateError, _ring
    ring = FrameRing.create((4, 4, 3), "uint8", slots=2)
    shm = posix_ipc.SharedMemory("/" + ring.name)
    core = _ring.RingCore(mmap.mmap(shm.fd, shm.size))  # a core over the same segment, released as close() does
    shm.close_fd()
    core.release()
    ring.close(); ring.unlink()
    for name in ("head", "tail", "queued", "unread", "available", "header"):
        try:
            attr = getattr(ring, name)
            attr() if callable(attr) else None
            sys.exit(f"ring.{name} did not raise")
        except StateError:
            pass
    for counters in (ring.producer_counters, ring.consumer_counters):
        try:
            counters[0]
            sys.exit("a closed ring's counters did not raise")
        except StateError:
            pass
    for call in ("core.head", "core.tail", "core.read", "core.producer", "core.consumer", "core.header()",
                 "core.meta(0)", "core.payload_offset(0)", "core.commit(0, 0, 0)", "core.set_tail(1)",
                 "core.counter(True, 0)", "core.set_counter(False, 0, 1)", "core.mark_closed(True)",
                 "core.set_consumer(1, 1)", "core.write(bytes(48), 0, 0, 0)"):
        try:
            eval(call)
            sys.exit(f"{call} did not raise")
        except RuntimeError:
            pass
    print("ok")
    """
)


def test_a_closed_ring_raises_and_never_reads_freed_memory():
    """Reading a closed ring used to dereference a NULL header (exit 139); run in a child so
    that a crash fails this test instead of the whole session."""
    out = subprocess.run([sys.executable, "-c", CLOSED], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
    assert out.stdout.strip() == "ok"


def test_each_side_stores_only_its_own_counters_and_reads_both(ring):
    peer = FrameRing.attach(ring.name)
    try:
        ring.producer_counters[2] = 7
        peer.consumer_counters[0] = 5
        peer.consumer_counters.add(0, 2)
        assert peer.producer_counters[2] == 7 and ring.consumer_counters[0] == 7
        with pytest.raises(StateError, match="cannot store"):
            ring.consumer_counters[0] = 1
        with pytest.raises(StateError, match="cannot store"):
            peer.producer_counters[2] = 1
        assert ring.consumer_counters[0] == 7 and peer.producer_counters[2] == 7  # refused stores changed nothing
        with pytest.raises(IndexError):
            ring.producer_counters[64]
    finally:
        peer.close()


def test_segment_and_semaphores_are_private(ring):
    for entry in (ring.name, f"sem.{ring.name}-free", f"sem.{ring.name}-filled"):
        mode = stat.S_IMODE(os.stat(os.path.join("/dev/shm", entry)).st_mode)
        assert mode == 0o600, (entry, oct(mode))


# -- /dev/shm space -----------------------------------------------------------------


def test_reported_shortage_raises_shm_too_small_with_numbers_before_mapping():
    before = set(os.listdir("/dev/shm"))
    need = segments.ring_bytes((480, 640, 3), "uint8", 64)
    with pytest.raises(ShmTooSmall) as info:
        FrameRing.create((480, 640, 3), slots=64, shm_free=10 * 2**20)
    assert info.value.needed == need and info.value.free == 10 * 2**20
    assert "10.0 MiB free" in str(info.value) and "--shm-size" in str(info.value)
    assert set(os.listdir("/dev/shm")) == before


def test_real_small_dev_shm_gives_shm_too_small_not_sigbus(private_mounts):
    """In a private mount namespace /dev/shm is an 8 MiB tmpfs, and the statvfs reading is
    bypassed, so only posix_fallocate stands between a 59 MiB ring and a SIGBUS."""
    script = textwrap.dedent(
        """
        import os
        from streamenc import FrameRing, ShmTooSmall
        try:
            FrameRing.create((480, 640, 3), slots=64, shm_free=1 << 40)
        except ShmTooSmall as e:
            print("SHMTOOSMALL", e.needed, os.listdir("/dev/shm"))
        r = FrameRing.create((480, 640, 3), slots=4)   # this one fits
        r.put(__import__("numpy").zeros((480, 640, 3), "uint8"))
        r.close(); r.unlink()
        print("LEFT", os.listdir("/dev/shm"))
        """
    )
    cmd = f"mount -t tmpfs -o size=8m tmpfs /dev/shm && {sys.executable} -c '{script}'"
    out = subprocess.run(["unshare", "--mount", "sh", "-c", cmd], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "SHMTOOSMALL" in out.stdout
    assert "LEFT []" in out.stdout


# -- stale cleanup ------------------------------------------------------------------


def test_clean_stale_removes_only_rings_of_dead_producers():
    live = FrameRing.create(SMALL, slots=2)
    proc, conn = _start(idle_producer, SMALL, 2, 1)
    try:
        assert conn.poll(30)
        name = conn.recv()
        _kill(proc)
        dead = {name, f"sem.{name}-free", f"sem.{name}-filled"}
        assert dead <= set(os.listdir("/dev/shm"))
        listed = segments.clean_stale(dry_run=True)
        assert dead <= set(listed) and live.name not in listed
        assert dead <= set(os.listdir("/dev/shm")), "dry run removed something"
        removed = segments.clean_stale()
        assert dead <= set(removed)
        assert not dead & set(os.listdir("/dev/shm"))
        assert live.name in os.listdir("/dev/shm")
    finally:
        live.close()
        live.unlink()
