"""shadowlab: decide, from shadow-stage pair logs, whether a candidate model may go to canary."""

from __future__ import annotations

from shadowlab.schema import LABEL_SCHEMA, PAIR_SCHEMA, SCHEMA_VERSION

__version__ = "0.1.0"

__all__ = [
    "LABEL_SCHEMA",
    "PAIR_SCHEMA",
    "SCHEMA_VERSION",
    "__version__",
]
