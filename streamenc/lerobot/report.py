"""``Report``: what a repair found and did, as one log line, text or JSON."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class Report:
    """What a repair found and did (or, dry, would do)."""

    root: str
    state: str = "clean"  # clean | repaired | would repair | damaged
    episodes: int = 0  # saved episodes in the dataset afterwards
    restored: list[int] = dataclasses.field(default_factory=list)  # from this session's journal
    dropped: list[str] = dataclasses.field(default_factory=list)
    written: list[str] = dataclasses.field(default_factory=list)
    removed: list[str] = dataclasses.field(default_factory=list)
    kept: str = ""  # keep_partial: the interrupted episode, kept
    readable: list[str] = dataclasses.field(default_factory=list)  # damaged datasets: what still reads
    problems: list[str] = dataclasses.field(default_factory=list)  # what could not be restored

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        """The one log line: what was restored and what was dropped."""
        if self.state == "clean":
            return f"{self.root}: clean, {self.episodes} episodes; nothing to do"
        if self.state == "damaged":
            return f"{self.root}: cannot be restored: {'; '.join(self.problems)}"
        verb = "restored" if self.state == "repaired" else "would restore"
        saved = _span(self.restored) if self.restored else "none"
        text = f"{self.root}: {verb} the session's saved episodes {saved} ({self.episodes} episodes in all)"
        text += f"; kept the interrupted {self.kept}" if self.kept else ""
        text += f"; dropped: {'; '.join(self.dropped)}" if self.dropped else "; nothing dropped"
        if self.problems:
            text += f"; NOT restored: {'; '.join(self.problems)}"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "ok": self.ok}


def _span(indices: list[int]) -> str:
    return f"{indices[0]}-{indices[-1]}" if len(indices) > 1 else str(indices[0])
