"""Ring micro-benchmarks (pytest-benchmark). Run with `make bench`; nothing here asserts speed.

Each hand-off moves one 640x480x3 frame. np.copyto into as many rotating buffers as the
ring has slots is the floor; multiprocessing.Queue and SharedMemory + Pipe show what
the usual alternatives cost in the same run.
"""

from __future__ import annotations

import multiprocessing as mp
from multiprocessing import shared_memory

import numpy as np
import pytest

from streamenc import FrameRing

SHAPE = (480, 640, 3)
SLOTS = 8
ROUNDS = 300


@pytest.fixture(scope="module")
def frame():
    return np.random.default_rng(0).integers(0, 256, SHAPE, dtype=np.uint8)


@pytest.fixture
def rings():
    ring = FrameRing.create(SHAPE, "uint8", slots=SLOTS)
    peer = FrameRing.attach(ring.name)
    yield ring, peer
    peer.close()
    ring.close()
    ring.unlink()


def test_copyto_floor(benchmark, frame):
    dst = [np.zeros(SHAPE, np.uint8) for _ in range(SLOTS)]
    i = iter(range(10**9))
    benchmark.pedantic(lambda: np.copyto(dst[next(i) % SLOTS], frame), rounds=ROUNDS, warmup_rounds=20)


def test_ring_put(benchmark, frame, rings):
    ring, peer = rings

    def make_room():
        if ring.queued:
            peer.get(timeout=0).release()

    benchmark.pedantic(ring.put, args=(frame,), setup=make_room, rounds=ROUNDS, warmup_rounds=20)


def test_ring_get_release(benchmark, frame, rings):
    ring, peer = rings

    def fill():
        ring.put(frame)

    benchmark.pedantic(lambda: peer.get(timeout=0).release(), setup=fill, rounds=ROUNDS, warmup_rounds=20)


def test_ring_round_trip(benchmark, frame, rings):
    ring, peer = rings

    def trip():
        ring.put(frame)
        peer.get(timeout=0).release()

    benchmark.pedantic(trip, rounds=ROUNDS, warmup_rounds=20)


def test_mp_queue_round_trip(benchmark, frame):
    q = mp.get_context("spawn").Queue(maxsize=SLOTS)

    def trip():
        q.put(frame)
        q.get()

    benchmark.pedantic(trip, rounds=ROUNDS, warmup_rounds=20)
    q.close()
    q.join_thread()


def test_shared_memory_pipe_round_trip(benchmark, frame):
    shm = shared_memory.SharedMemory(create=True, size=frame.nbytes * SLOTS)
    a, b = mp.Pipe()
    views = [np.ndarray(SHAPE, np.uint8, shm.buf, offset=k * frame.nbytes) for k in range(SLOTS)]
    i = iter(range(10**9))

    def trip():
        k = next(i) % SLOTS
        np.copyto(views[k], frame)
        a.send(k)
        assert views[b.recv()] is not None  # the consumer's hand-off is the view itself

    benchmark.pedantic(trip, rounds=ROUNDS, warmup_rounds=20)
    views.clear()
    shm.close()
    shm.unlink()
