"""bioloop: train, run and score deep-learning models for biological imaging from one config file.

The public API is imported lazily so that `import bioloop` (and `bioloop --help`) stays fast.
"""

from bioloop._version import __version__

__all__ = ["__version__", "train", "predict", "evaluate", "process", "load_config"]


def __getattr__(name):
    if name in ("train", "predict", "evaluate", "process", "load_config"):
        from bioloop import api

        return getattr(api, name)
    raise AttributeError(f"module 'bioloop' has no attribute {name!r}")
