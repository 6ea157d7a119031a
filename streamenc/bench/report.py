"""The harness's report: markdown tables with same-run ratios, one verdict per
configuration, and matplotlib plots, from the JSON lines of a sweep."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import numpy as np

BUDGET_SHARE = 0.5  # an add_frame p99 above half the frame period leaves the loop no room
LATE_MAX_MS = 10.0  # a loop woken later than this has lost a third of a 30 fps tick


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def machine() -> str:
    cores = len(os.sched_getaffinity(0))
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln),
        platform.processor() or "unknown CPU",
    )
    return f"{cores} cores ({cpu}), {mem:.0f} GiB RAM, Linux {platform.release()}, Python {platform.python_version()}"


def verdict(line: dict) -> str:
    """Real-time or not, and how much headroom: the CPU left, and the frame-time left at p99."""
    if not line.get("ok"):
        return f"FAILED: {line.get('error', '?')}"
    period_ms = 1e3 / line["fps"]
    late_max = line.get("late_max_ms", 0.0)
    realtime = (
        line["missed"] == 0
        and line["lost"] == 0
        and line["add_p99_ms"] <= BUDGET_SHARE * period_ms
        and late_max <= LATE_MAX_MS
    )
    why = []
    if line["missed"]:
        why.append(f"{line['missed']} overruns")
    if late_max > LATE_MAX_MS:
        why.append(f"woke up to {late_max:.0f} ms late")
    if line["lost"]:
        why.append(f"{line['lost']} frames lost")
    if line["add_p99_ms"] > BUDGET_SHARE * period_ms:
        why.append(f"add_frame p99 {line['add_p99_ms']:.1f} ms")
    head = 1 / line["cpu_share"] if line["cpu_share"] > 0 else float("inf")
    state = "real-time" if realtime else "NOT real-time (" + ", ".join(why) + ")"
    return (
        f"{state}; CPU {line['cpu_share']:.0%} of the machine (headroom {head:.1f}x), "
        f"add_frame p99 {line['add_p99_ms']:.2f} ms of the {period_ms:.0f} ms frame"
    )


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}" if base else "-"


def markdown(lines: list[dict], plots: list[str]) -> str:
    out = ["# streamenc bench report", "", f"Machine: {machine()}", ""]
    configs = list(dict.fromkeys(ln["config"] for ln in lines))
    for config in configs:
        rows = [ln for ln in lines if ln["config"] == config]
        base = next((r for r in rows if r["pipeline"] == "png" and r.get("ok")), None)
        first = rows[0]
        out += [
            f"## {config}",
            "",
            f"{first['seconds']:g} s x {first['episodes']} episode(s) at {first['fps']} fps; "
            f"ratios (x png) against the png run of this configuration, measured in the same sweep; "
            "the copy floor is a bare np.copyto of the same frames into cold memory, timed in the "
            "same loop right after each add; loop late is how long after its scheduled time each tick "
            "began (wake-up lateness); an overrun is a tick whose work ended after its deadline; "
            "backlog is frames waiting to be encoded or written, per tick.",
            "",
            "| pipeline | impl | add p50 / p99 / max ms | p99 x copy floor | loop late p50 / p99 / max ms "
            "| overruns | backlog max / at stop | end of episode s (x png) "
            "| CPU s (x png) | CPU ms/frame | peak RSS / private MiB | peak shm MiB | peak temp disk MiB | lost "
            "| read back |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            if not r.get("ok"):
                out.append(f"| {r['pipeline']} | failed: {r.get('error', '?')} ||||||||||||||")
                continue
            end = float(np.mean(r["end_s"]))
            end_b = float(np.mean(base["end_s"])) if base else 0.0
            out.append(
                f"| {r['pipeline']} | {r['impl']} | {r['add_p50_ms']:.3f} / {r['add_p99_ms']:.3f} / "
                f"{r['add_max_ms']:.1f} | {_ratio(r['add_p99_ms'], r['copy_p99_ms'])} | "
                f"{r['late_p50_ms']:.2f} / {r['late_p99_ms']:.2f} / {r['late_max_ms']:.1f} | {r['missed']} | "
                f"{r['backlog_max']} / {r['backlog_at_stop']} | "
                f"{end:.2f} ({_ratio(end, end_b)}) | "
                f"{r['cpu_s']:.1f} ({_ratio(r['cpu_s'], base['cpu_s'] if base else 0)}) | "
                f"{r['cpu_ms_per_frame']:.2f} | {r['peak_rss_mib']:.0f} / {r['peak_private_mib']:.0f} | "
                f"{r['peak_shm_mib']:.0f} | {r['peak_disk_mib']:.0f} | {r['lost']} | {r['back']}/{r['sent']} |"
            )
        out.append("")
        out += [f"- **{r['pipeline']}**: {verdict(r)}" for r in rows]
        out.append("")
    if plots:
        out += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(out) + "\n"


def plot(lines: list[dict], out_dir: Path) -> list[str]:
    """Latency CDF and memory timeline of the heaviest configuration, CPU per frame against
    cameras, and the backlog (overload) timeline. Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [ln for ln in lines if ln.get("ok")]
    if not ok:
        return []
    heavy = max(ok, key=lambda ln: (ln["cameras"] * np.prod(_pixels(ln["size"])), -ln["pressure"]))["config"]
    colors = {"png": "tab:red", "stream": "tab:orange", "streamenc": "tab:blue"}
    written = []

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in (r for r in ok if r["config"] == heavy):
        ax.plot(
            r["latency_cdf"],
            np.linspace(0, 1, len(r["latency_cdf"])),
            label=r["pipeline"],
            color=colors.get(r["pipeline"]),
        )
    ax.set(xscale="log", xlabel="add_frame latency (ms)", ylabel="share of frames", title=f"latency CDF, {heavy}")
    ax.legend()
    written.append(_save(fig, out_dir / "latency_cdf.png"))

    written.append(_lateness_cdf(ok, out_dir, colors))

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in (r for r in ok if r["config"] == heavy):
        t = [s["t"] for s in r["memory"]]
        ax.plot(
            t, [s["rss"] / 2**20 for s in r["memory"]], label=f"{r['pipeline']} RSS", color=colors.get(r["pipeline"])
        )
        ax.plot(
            t,
            [(s["shm"] + s["disk"]) / 2**20 for s in r["memory"]],
            ls="--",
            color=colors.get(r["pipeline"]),
            label=f"{r['pipeline']} shm + temp disk",
        )
    ax.set(xlabel="s", ylabel="MiB", title=f"memory, {heavy}")
    ax.legend(fontsize=7)
    written.append(_save(fig, out_dir / "memory_timeline.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    for pipeline in colors:
        pts = sorted(
            (r["cameras"], r["cpu_ms_per_frame"])
            for r in ok
            if r["pipeline"] == pipeline
            and not r["pressure"]
            and r["size"] == ok[0]["size"]
            and r["codec"] == ok[0]["codec"]
        )
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", label=pipeline, color=colors[pipeline])
    ax.set_xticks(sorted({r["cameras"] for r in ok}))
    ax.set(xlabel="cameras", ylabel="CPU ms per frame", title=f"CPU per frame, {ok[0]['size']} {ok[0]['codec']}")
    ax.legend()
    written.append(_save(fig, out_dir / "cpu_per_frame.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in (r for r in ok if r["config"] == heavy):
        if r["backlog"]:
            t, b = zip(*r["backlog"], strict=True)
            ax.plot(t, b, label=r["pipeline"], color=colors.get(r["pipeline"]))
    ax.set(xlabel="s", ylabel="frames waiting to be encoded or written", title=f"backlog (overload), {heavy}")
    ax.legend()
    written.append(_save(fig, out_dir / "backlog_timeline.png"))
    return written


def _lateness_cdf(ok: list[dict], out_dir: Path, colors: dict[str, str]) -> str:
    """The record loop's wake-up lateness, one panel per configuration: where a curve ends
    on the right is the worst tick."""
    import matplotlib.pyplot as plt

    configs = list(dict.fromkeys(r["config"] for r in ok))
    cols = min(3, len(configs))
    rows = (len(configs) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.5 * rows), squeeze=False)
    for ax, config in zip(axes.flat, configs, strict=False):
        for r in (r for r in ok if r["config"] == config):
            cdf = np.maximum(np.array(r["late_cdf"]), 1e-3)  # log axis: a tick on time shows at 1 us
            ax.plot(cdf, np.linspace(0, 1, len(cdf)), label=r["pipeline"], color=colors.get(r["pipeline"]))
        ax.axvline(LATE_MAX_MS, color="grey", ls=":", lw=1)
        ax.set(xscale="log", xlabel="wake-up lateness (ms)", ylabel="share of ticks", title=config)
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(configs) :]:
        ax.set_visible(False)
    return _save(fig, out_dir / "lateness_cdf.png")


def _pixels(size: str) -> tuple[int, int]:
    from .runs import SIZES

    return SIZES[size]


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return str(path)
