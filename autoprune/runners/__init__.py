"""Runners know *where* timing happens: ``local`` runs it in an isolated subprocess."""

from __future__ import annotations

from autoprune.runners._base import Runner, RunnerResult, create

__all__ = ["Runner", "RunnerResult", "create"]
