"""Backends know *what* a candidate's artifact is: how to build it and how to time it.

``create(name)`` returns a backend; where the timing happens is a runner's business.
"""

from __future__ import annotations

from autoprune.backends._base import Backend, BuildResult, create

__all__ = ["Backend", "BuildResult", "create"]
