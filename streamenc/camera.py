"""A camera as the Recorder and its backends see it: declared once, checked once.

Whether a camera is RGB or depth, its ring's frame shape and dtype, and the frame contract
it enforces all follow from one ``Camera`` value, built by the Recorder from what the user
declared. The backends take these values and ask them, instead of keeping a parallel
dict of depth cameras.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from . import frames as framelib
from .depth import Depth
from .depth import view as depth_view
from .errors import ConfigError

_NAME = re.compile(r"[\w.\-]+")


@dataclass(frozen=True)
class Camera:
    """One camera: its name, frame size, and for a depth camera its ``Depth`` settings."""

    name: str
    height: int
    width: int
    depth: Depth | None = None

    @classmethod
    def declare(cls, name: str, spec: tuple[int, ...] | Depth | Camera) -> Camera:
        """What a user declares, checked: (height, width) or (height, width, 3) for RGB, a
        ``Depth`` for depth; even sizes of at least 16 px (what the encoders take)."""
        if isinstance(spec, Camera):
            return spec
        if not name or not _NAME.fullmatch(name):
            raise ConfigError(f"camera name {name!r} must be letters, digits, '_', '.' or '-'")
        dims = (*spec.shape, 3) if isinstance(spec, Depth) else tuple(int(d) for d in spec)
        if len(dims) == 2:
            dims = (*dims, 3)
        if len(dims) != 3 or dims[2] != 3 or dims[0] < 16 or dims[1] < 16 or dims[0] % 2 or dims[1] % 2:
            raise ConfigError(
                f"camera {name!r}: shape must be (height, width) or (height, width, 3), "
                f"even and at least 16 px, got {spec}"
            )
        return cls(name, dims[0], dims[1], spec if isinstance(spec, Depth) else None)

    @property
    def is_depth(self) -> bool:
        return self.depth is not None

    @property
    def shape(self) -> tuple[int, ...]:
        """A ring slot's shape: (H, W, 3) RGB, or (H, W) depth."""
        return (self.height, self.width) if self.depth else (self.height, self.width, 3)

    @property
    def dtype(self) -> str:
        """A ring slot's dtype: uint8 RGB, or the depth camera's (uint16 mm, float32 m)."""
        return self.depth.dtype if self.depth else "uint8"

    def frame(self, frame: object, strict: bool = True) -> np.ndarray:
        """The view of ``frame`` a backend takes, or FrameError. ``strict``: HWC uint8 only
        (the Recorder's own contract); else LeRobot's (CHW, float in [0, 1], PIL). A
        depth camera takes (H, W), (H, W, 1) or (1, H, W) in its dtype either way."""
        if self.depth is not None:
            return depth_view(self.name, frame, self.depth)
        check = framelib.strict if strict else framelib.lenient
        return check(self.name, frame, (self.height, self.width, 3))
