"""The package version, in a module of its own: every module may read it without importing
the package's public face (``autoprune/__init__.py``), which names every stage."""

__version__ = "0.1.0"
