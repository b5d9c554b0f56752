"""Helpers for testing autoprune itself (fault injection)."""
