"""An episode's video as parts on disk, and joining them into one MP4.

An encoder writes an episode as ``<video>.part-SSSSSS``, ``S`` its first frame index. A
normal episode has one part, renamed to ``<video>`` at the end. A restarted encoder
begins a new part after the frames the dead one made durable, and the parts are remuxed
into one file (no re-encode). Both the resume and the join read the parts through
``whole_packets``, so they agree on which frames a part holds.
"""

from __future__ import annotations

import contextlib
import os
from fractions import Fraction
from pathlib import Path

import av

# a fragment per frame: a frame is in the file as soon as the next packet is muxed, whatever
# the keyframe interval (with frag_keyframe and g=30 a killed writer loses up to 30 frames)
MOVFLAGS = "frag_every_frame+empty_moov+default_base_moof"
# without flush_packets a killed writer leaves only the ftyp box on disk
CONTAINER_OPTIONS = {"movflags": MOVFLAGS, "flush_packets": "1"}


def part_path(final: Path, start: int) -> Path:
    """A piece of an episode's video that begins at frame ``start``."""
    return final.with_name(f"{final.name}.part-{start:06d}")


def existing_parts(final: Path) -> list[tuple[int, Path]]:
    """(first frame, path) of the parts of ``final`` on disk, in order."""
    prefix = final.name + ".part-"
    found = [
        (int(p.name[len(prefix) :]), p) for p in final.parent.glob(prefix + "*") if p.name[len(prefix) :].isdigit()
    ]
    return sorted(found)


def remove_parts(final: Path) -> None:
    """Every part of the episode's video (a cancelled episode's)."""
    for _, part in existing_parts(final):
        part.unlink(missing_ok=True)


def remove(final: Path) -> None:
    """The episode's video and every part of it."""
    remove_parts(final)
    final.unlink(missing_ok=True)


def resume_point(final: Path, fps: int, adopt_final: bool = False) -> int:
    """The first frame an encoder (re)starting this episode writes: the one after the
    frames the parts on disk hold whole.

    ``adopt_final``, for a resume: an encoder killed after renaming the finished file, but
    before saying so, left ``final`` whole (only ever a fsynced file renamed into place;
    start_episode refuses an episode already on disk, and any parts beside it are in it
    too). It becomes the first part, so that nothing in it is lost."""
    if adopt_final and final.exists():
        remove_parts(final)
        os.replace(final, part_path(final, 0))
    start = 0
    for first, part in existing_parts(final):
        frames = durable_frames(part, first, fps)
        start = frames[-1] + 1 if frames else first
    return start


def assemble(final: Path, fps: int, last_part: Path, last_frames: int) -> int:
    """The finished parts as ``final``, durable; returns its frame count. One part (the
    usual case: ``last_part``, with ``last_frames``) is renamed; several are joined."""
    written = existing_parts(final)
    if len(written) == 1 and written[0][1] == last_part:
        os.replace(last_part, final)
        frames = last_frames
    else:
        tmp = final.with_name(final.name + ".joining")
        frames = join(written, tmp, fps)
        fsync(tmp)
        os.replace(tmp, final)
        for _, p in written:
            p.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        fsync(final.parent)
    return frames


def keep_durable(final: Path) -> None:
    """After a failure (a full disk): a single part, durable as far as it goes, becomes the file."""
    written = existing_parts(final)
    if len(written) == 1:
        with contextlib.suppress(OSError):
            os.replace(written[0][1], final)


def whole_packets(container, start: int, fps: int):
    """(frame index, packet) for each packet of a part that is whole; a crash can cut the
    tail. The one place that maps a part's pts to frame indices."""
    stream = container.streams.video[0]
    for packet in container.demux(stream):
        if not packet.size:
            continue
        if packet.is_corrupt or packet.pts is None:
            return
        yield start + int(round(packet.pts * stream.time_base * fps)), packet


def durable_frames(part: Path, start: int, fps: int) -> list[int]:
    """Frame indices whose packets are whole in ``part``."""
    out: list[int] = []
    try:
        with av.open(str(part)) as c:
            out.extend(index for index, _ in whole_packets(c, start, fps))
    except (av.error.FFmpegError, OSError, IndexError):
        pass  # keep what was read before the damage
    return out


def join(parts: list[tuple[int, Path]], out: Path, fps: int) -> int:
    """Remux the parts into one MP4, no re-encode; each part up to where the next begins."""
    n = 0
    with av.open(str(out), "w", format="mp4", options=dict(CONTAINER_OPTIONS)) as dst:
        ostream = None
        for k, (start, part) in enumerate(parts):
            stop = parts[k + 1][0] if k + 1 < len(parts) else None
            with av.open(str(part)) as src:
                if ostream is None:
                    ostream = dst.add_stream_from_template(template=src.streams.video[0], opaque=True)
                    ostream.time_base = Fraction(1, fps)
                for index, packet in whole_packets(src, start, fps):
                    if stop is not None and index >= stop:
                        break
                    packet.pts = packet.dts = index
                    packet.time_base = Fraction(1, fps)
                    packet.stream = ostream
                    dst.mux(packet)
                    n += 1
    return n


def fsync(path: Path) -> None:
    """Make a file, or a directory's entries, durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
