"""Ring demo: a producer process hands 480p frames to a consumer process through a FrameRing.

Prints throughput and per-put latency, next to a bare np.copyto of the same frames
timed in the same run (the floor a put cannot beat).
"""

from __future__ import annotations

import multiprocessing as mp
import time

import numpy as np

from streamenc import FrameRing

SHAPE = (480, 640, 3)
FRAMES = 2000
SLOTS = 32


def consume(name: str, count: int, conn) -> None:
    ring = FrameRing.attach(name)
    bad = 0
    for i in range(count):
        with ring.get(timeout=30) as slot:
            bad += slot.seq != i or int(slot.array[0, 0, 0]) != i % 256
    ring.close()
    conn.send(bad)


def pct(a: np.ndarray, q: float) -> float:
    return float(np.percentile(a, q)) * 1e3


def main() -> None:
    frames = [np.full(SHAPE, i, np.uint8) for i in range(256)]
    ring = FrameRing.create(SHAPE, "uint8", slots=SLOTS)
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=consume, args=(ring.name, FRAMES, child))
    proc.start()
    try:
        put_ms = np.empty(FRAMES)
        t0 = time.perf_counter()
        for i in range(FRAMES):
            t = time.perf_counter()
            ring.put(frames[i % 256], timeout=30)
            put_ms[i] = time.perf_counter() - t
        bad = parent.recv()
        wall = time.perf_counter() - t0
        proc.join(10)
    finally:
        if proc.is_alive():
            proc.kill()
        ring.close()
        ring.unlink()

    dst = [np.empty(SHAPE, np.uint8) for _ in range(SLOTS)]
    for d in dst:
        d.fill(0)
    copy_ms = np.empty(FRAMES)
    for i in range(FRAMES):
        t = time.perf_counter()
        np.copyto(dst[i % SLOTS], frames[i % 256])
        copy_ms[i] = time.perf_counter() - t

    mb = FRAMES * frames[0].nbytes / 2**20
    print(f"FrameRing demo: {FRAMES} frames of {SHAPE[1]}x{SHAPE[0]} RGB, {SLOTS} slots, producer -> consumer process")
    print(f"  throughput      {FRAMES / wall:8.0f} frames/s   {mb / wall:8.0f} MiB/s   (30 fps needs 30)")
    print(
        f"  put latency     p50 {pct(put_ms, 50):.3f} ms   p99 {pct(put_ms, 99):.3f} ms"
        f"   max {put_ms.max() * 1e3:.3f} ms  (unpaced: a full ring makes put wait for the consumer)"
    )
    print(f"  np.copyto floor p50 {pct(copy_ms, 50):.3f} ms   p99 {pct(copy_ms, 99):.3f} ms   (same run)")
    print(f"  put / copyto    p50 {np.median(put_ms) / np.median(copy_ms):.2f}x")
    print(f"  frames out of order or corrupt: {bad}")
    if bad:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
