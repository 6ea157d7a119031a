"""Turn the pytest-benchmark JSON of bench/test_ring_bench.py into a markdown table of
times and ratios against np.copyto measured in the same run."""

from __future__ import annotations

import json
import sys

LABELS = {
    "test_copyto_floor": "np.copyto (baseline)",
    "test_ring_put": "FrameRing.put",
    "test_ring_get_release": "FrameRing.get + release",
    "test_ring_round_trip": "FrameRing put + get + release",
    "test_mp_queue_round_trip": "multiprocessing.Queue put + get",
    "test_shared_memory_pipe_round_trip": "SharedMemory copy + Pipe send/recv",
}


def main(path: str) -> None:
    data = json.load(open(path))
    stats = {b["name"]: b["stats"] for b in data["benchmarks"]}
    base = stats["test_copyto_floor"]["median"]
    print(
        f"Machine: {data['machine_info'].get('cpu', {}).get('brand_raw', '?')}, "
        f"{data['machine_info'].get('cpu', {}).get('count', '?')} CPUs; one 640x480x3 uint8 frame\n"
    )
    print("| operation | median (µs) | IQR (µs) | × np.copyto |")
    print("|---|---|---|---|")
    for name, label in LABELS.items():
        if name in stats:
            s = stats[name]
            print(f"| {label} | {s['median'] * 1e6:.1f} | {s['iqr'] * 1e6:.1f} | {s['median'] / base:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench/out/ring.json")
