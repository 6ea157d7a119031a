"""Code that runs in spawned peer processes for the multi-process tests.

Kept in its own module so that ``multiprocessing``'s spawn start method can import it."""

from __future__ import annotations

import time

import numpy as np

from streamenc import FrameRing


def frame_for(i: int, shape: tuple[int, ...]) -> np.ndarray:
    """A frame that differs in every byte pattern from its neighbours, reproducible from i."""
    return np.random.default_rng(i).integers(0, 256, size=shape, dtype=np.uint8)


def check_consumer(name: str, count: int, conn) -> None:
    """Attach, read ``count`` frames and report (frames ok, first problem or None)."""
    ring = FrameRing.attach(name)
    conn.send("attached")
    problem = None
    ok = 0
    try:
        for i in range(count):
            with ring.get(timeout=30) as slot:
                if slot.seq != i or slot.frame_index != i or slot.episode != 7:
                    problem = problem or f"frame {i}: seq {slot.seq} index {slot.frame_index} ep {slot.episode}"
                elif not np.array_equal(slot.array, frame_for(i, ring.shape)):
                    problem = problem or f"frame {i}: bytes differ"
                else:
                    ok += 1
    finally:
        ring.close()
    conn.send((ok, problem))


def idle_consumer(name: str, take: int, release: int, conn) -> None:
    """Attach, take ``take`` frames, release the first ``release`` of them, then wait to be killed."""
    ring = FrameRing.attach(name)
    held = [ring.get(timeout=10) for _ in range(take)]
    for slot in held[:release]:
        slot.release()
    conn.send("ready")
    time.sleep(600)


def idle_producer(shape: tuple[int, ...], slots: int, frames: int, conn) -> None:
    """Create a ring, put ``frames`` frames, send its name, then wait to be killed."""
    ring = FrameRing.create(shape, "uint8", slots=slots)
    for i in range(frames):
        ring.put(frame_for(i, shape), frame_index=i, episode=7)
    conn.send(ring.name)
    time.sleep(600)
