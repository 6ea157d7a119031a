"""The benchmark harness behind ``streamenc bench`` and bench/: not part of recording.

It needs the ``bench`` extra (psutil, matplotlib); importing it without them raises
``MissingExtra`` with one message saying what to install, which the CLI prints as one line.
"""

from __future__ import annotations

import importlib.util

from ..errors import StreamencError

NEEDS = ("psutil", "matplotlib", "tqdm")


class MissingExtra(StreamencError, ImportError):
    """An optional dependency of the benchmark harness is not installed."""


def _missing() -> list[str]:
    """The optional dependencies not installed, found without importing them (matplotlib
    would weigh on every benchmark run's memory)."""
    out = []
    for name in NEEDS:
        try:
            if importlib.util.find_spec(name) is None:
                out.append(name)
        except ImportError:
            out.append(name)
    return out


_absent = _missing()
if _absent:
    raise MissingExtra(
        f"the benchmark harness needs {', '.join(_absent)}: pip install 'streamenc[bench]' (from a checkout: make venv)"
    )
