"""The spill writer: the record loop queues frames, a thread writes them, nothing is lost.

The disk is made slow or full for real at the one place the writer touches it
(``SpillWriter.write``, an injected writer fault), so these run anywhere.
"""

from __future__ import annotations

import errno
import os
import threading

import numpy as np
import pytest
from helpers import wait_for

from streamenc import DiskFull, FrameRing
from streamenc.errors import RingTimeout
from streamenc.protocol import EncoderCounter, RecorderCounter
from streamenc.spill import SpillReader, SpillWriter, read_records
from streamenc.worker import Input

SHAPE = (32, 48, 3)


def _frame(i: int) -> np.ndarray:
    return np.full(SHAPE, i % 251, np.uint8)


@pytest.fixture
def ring():
    r = FrameRing.create(SHAPE, "uint8", slots=4)
    yield r
    r.close()
    r.unlink()


def _gated(writer: SpillWriter) -> threading.Event:
    """Make the writer's disk hang until the returned event is set."""
    gate = threading.Event()
    real = writer.write

    def slow(fd, buffers, offset):
        gate.wait()
        return real(fd, buffers, offset)

    writer.write = slow
    return gate


def _records(path) -> list[tuple[int, int]]:
    return [(ep, index) for ep, index, _, frame in read_records(path) if frame[0, 0, 0] == index % 251]


def test_append_returns_while_the_disk_hangs_and_everything_lands_in_order(tmp_path, ring):
    w = SpillWriter(tmp_path / "a.spill", ring, memory_bytes=20 * ring.frame_bytes)
    gate = _gated(w)
    for i in range(20):  # the whole pool, with the disk stuck: append must not wait for it
        w.append(_frame(i), 3, i, i)
    assert ring.producer_counters[RecorderCounter.SPILL_HEAD] == 0
    assert w.backlog == 20 and not w.caught_up()
    gate.set()
    wait_for(lambda: ring.producer_counters[RecorderCounter.SPILL_HEAD] == 20)
    assert _records(w.path) == [(3, i) for i in range(20)]
    w.close()
    assert not w.path.exists()


def test_a_used_up_pool_makes_append_wait_for_the_disk_then_go_on(tmp_path, ring):
    w = SpillWriter(tmp_path / "a.spill", ring, memory_bytes=4 * ring.frame_bytes)
    gate = _gated(w)
    for i in range(4):
        w.append(_frame(i), 0, i, i)
    fifth = threading.Thread(target=w.append, args=(_frame(4), 0, 4, 4))
    fifth.start()
    fifth.join(0.5)
    assert fifth.is_alive(), "append took a fifth buffer beyond the pool"
    gate.set()
    fifth.join(10)
    assert not fifth.is_alive()
    wait_for(lambda: ring.producer_counters[RecorderCounter.SPILL_HEAD] == 5)
    assert _records(w.path) == [(0, i) for i in range(5)]
    w.close()


def test_a_full_disk_is_raised_by_the_next_append_and_held_frames_are_rescued_in_order(tmp_path, ring):
    """The writer stops at ENOSPC; the frames it holds go to the ring once the encoder has
    read the file, and the spill indices stay gapless for what is spilled next."""
    w = SpillWriter(tmp_path / "a.spill", ring, memory_bytes=16 * ring.frame_bytes)
    real, full, queued = w.write, threading.Event(), threading.Event()

    def disk(fd, buffers, offset):
        if full.is_set():
            queued.wait(10)  # fail only once 3, 4 and 5 are all queued: the writer holds three
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, buffers, offset)

    w.write = disk
    for i in range(3):
        w.append(_frame(i), 1, i, i)
    wait_for(lambda: ring.producer_counters[RecorderCounter.SPILL_HEAD] == 3)
    full.set()
    for i in range(3, 6):
        w.append(_frame(i), 1, i, i)
    queued.set()
    wait_for(lambda: w.error is not None)
    with pytest.raises(DiskFull) as err:
        w.append(_frame(6), 1, 6, 6)
    assert err.value.path == str(w.path) and err.value.needed == w.rec
    assert ring.producer_counters[RecorderCounter.SPILL_HEAD] == 3 and w.backlog == 6

    consumer = FrameRing.attach(ring.name)
    rescued = []

    def put(frame, ts, episode, index):
        if len(rescued) == 2:
            return False  # a full ring: the rest waits
        ring.put(frame, ts, 0, episode=episode, frame_index=index)
        rescued.append(index)
        return True

    w.rescue(put)
    assert rescued == [], "frames went to the ring before the encoder had read the file"
    consumer.consumer_counters[EncoderCounter.SPILL_READ] = 3  # the encoder has read the three records
    w.rescue(put)
    assert rescued == [3, 4] and w.error is not None
    for _ in range(2):
        with consumer.get(timeout=1) as slot:
            assert slot.frame_index == rescued.pop(0) and slot.array[0, 0, 0] == slot.frame_index
    w.rescue(lambda *a: ring.put(a[0], a[1], 0, episode=a[2], frame_index=a[3]) or True)
    assert w.error is None and w.backlog == 0
    full.clear()
    w.append(_frame(6), 1, 6, 6)  # the disk again, as record 3: no gap
    wait_for(lambda: ring.producer_counters[RecorderCounter.SPILL_HEAD] == 4)
    assert _records(w.path)[-1] == (1, 6)
    w.close(keep=True)
    consumer.close()


def test_float_and_strided_frames_are_converted_into_the_record(tmp_path, ring):
    w = SpillWriter(tmp_path / "a.spill", ring)
    img = np.random.default_rng(1).integers(0, 256, SHAPE, dtype=np.uint8)
    w.append(img.transpose(2, 0, 1).copy().transpose(1, 2, 0), 0, 0, 0)  # HWC view of CHW memory
    w.append(img.astype(np.float32) / 255.0, 0, 1, 0)
    wait_for(lambda: ring.producer_counters[RecorderCounter.SPILL_HEAD] == 2)
    frames = [frame for _, _, _, frame in read_records(w.path)]
    assert np.array_equal(frames[0], img) and np.array_equal(frames[1], img)
    w.close()


def test_the_encoders_merge_keeps_ring_frames_that_came_while_its_wait_ran_out(tmp_path, ring):
    """An encoder stopped or starved inside its ring wait: by the time it runs again the
    recorder has filled the ring and spilled the next frame. The ring's frames still come
    first (the merge once took the spilled frame, then failed on the ring's: out of order)."""
    consumer = FrameRing.attach(ring.name)
    writer = SpillWriter(tmp_path / "a.spill", ring)
    reader = SpillReader(writer.path, consumer)
    frames = Input(consumer, reader)
    real_get, ran_out = consumer.get, []

    def get(timeout=None):
        try:
            return real_get(timeout=timeout)
        except RingTimeout:
            if not ran_out:  # the wait has just run out; the recorder goes on meanwhile
                ran_out.append(timeout)
                for i in range(ring.slots):
                    ring.put(_frame(i), i, 0, episode=0, frame_index=i)
                writer.append(_frame(ring.slots), 0, ring.slots, ring.slots)
                wait_for(lambda: ring.producer_counters[RecorderCounter.SPILL_HEAD] == 1)
            raise

    consumer.get = get
    got = []
    try:
        for _ in range(50):
            item = frames.next(0.01)
            if item is not None:
                _, index, array, release = item
                assert array[0, 0, 0] == index % 251
                got.append(index)
                release()
            if len(got) == ring.slots + 1:
                break
        assert ran_out == [0.01]
        assert got == list(range(ring.slots + 1))
    finally:
        reader.close()
        writer.close()
        consumer.close()
