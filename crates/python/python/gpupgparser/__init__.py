"""gpupgparser: PostgreSQL tables as Arrow streams and files (see docs/python.md).

The functions and classes are the native extension's (``gpupgparser._native``,
built from crates/python/src); this package re-exports all of them, so
``gpupgparser.read_table`` and the rest are used as before. Python-only parts
live beside it: ``gpupgparser.dask`` (imported on its own: it needs dask).
"""

from . import _native
from ._native import *  # noqa: F401,F403 (every public name of the extension)
from ._native import __version__  # noqa: F401

__all__ = [name for name in dir(_native) if not name.startswith("_")]
