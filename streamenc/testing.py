"""The one door a fault test has into a Recorder's parts.

The public API hides the backends: users see frames, episodes and ``health()``. A fault
test must sometimes reach further, to make a camera's spill disk fail or to read what its
spill writer holds, while still killing real processes. Every such reach goes through
this module, so that what the tests depend on is named in one place, and changing it
shows here first. Nothing in streamenc itself imports this.
"""

from __future__ import annotations

from .backend import Backend
from .errors import StateError
from .pipeline import CameraPipeline
from .recorder import Recorder
from .videos import VideoBackend


def backend(rec: Recorder) -> Backend:
    """What records ``rec``'s frames: a ``videos.VideoBackend`` or a ``png.PngBackend``
    (whose ``write(path, data)`` is where a test injects a failing disk)."""
    return rec._backend


def pipeline(rec: Recorder, camera: str) -> CameraPipeline:
    """One camera's ring, spill writer (``.spill``, whose ``write`` is os.pwritev by
    default) and encoder process, when ``rec`` records video."""
    found = backend(rec)
    if not isinstance(found, VideoBackend):
        raise StateError(f"the recorder writes {found.codec}, not video: it has no pipelines")
    return found.pipelines[camera]
