"""Config files: loading, schemas, overrides and run records.

Sections a config may nest, importable for users who prefer objects to dicts:
``from bioloop.config import EarlyStopping, Logger``.
"""

from bioloop.config.schema import EarlyStopping, Logger, TrainingConfig

__all__ = ["EarlyStopping", "Logger", "TrainingConfig"]
