"""The pair-log and label schemas (version 1): the one place that defines them.

Every other module imports column names and types from here. A pair log is Parquet, one row per
request, with both models' scores side by side; labels arrive later in their own Parquet files.

References
----------
.. [1] Apache Parquet format, key-value metadata:
       https://parquet.apache.org/docs/file-format/metadata/
"""

from __future__ import annotations

from typing import Final

import polars as pl
import pyarrow as pa

__all__ = [
    "AUDIT",
    "AUDIT_RATE",
    "CANDIDATE",
    "CANDIDATE_ERROR",
    "CANDIDATE_LATENCY",
    "CANDIDATE_MODEL",
    "CANDIDATE_SCORE",
    "LABEL",
    "LABEL_SCHEMA",
    "LABEL_SOURCES",
    "LABEL_TS",
    "METADATA_KEY",
    "PAIR_SCHEMA",
    "PRIMARY",
    "PRIMARY_ERROR",
    "PRIMARY_LATENCY",
    "PRIMARY_MODEL",
    "PRIMARY_SCORE",
    "REQUEST_ID",
    "SCHEMA_VERSION",
    "SERVED",
    "SOURCE",
    "TRAFFIC_PCT",
    "TS",
    "arrow_label_schema",
    "arrow_pair_schema",
    "score_column",
]

SCHEMA_VERSION: Final = 1
"""Version of the pair-log schema, stored in each Parquet file's key-value metadata."""

METADATA_KEY: Final = b"shadowlab.schema_version"
"""Parquet key-value metadata key that holds :data:`SCHEMA_VERSION`."""

PRIMARY: Final = "primary"
CANDIDATE: Final = "candidate"

# Pair-log columns.
TS: Final = "ts"
REQUEST_ID: Final = "request_id"
PRIMARY_MODEL: Final = "primary_model"
CANDIDATE_MODEL: Final = "candidate_model"
SERVED: Final = "served"
TRAFFIC_PCT: Final = "traffic_pct"
PRIMARY_SCORE: Final = "primary_score"
CANDIDATE_SCORE: Final = "candidate_score"
PRIMARY_ERROR: Final = "primary_error"
CANDIDATE_ERROR: Final = "candidate_error"
PRIMARY_LATENCY: Final = "primary_latency_ms"
CANDIDATE_LATENCY: Final = "candidate_latency_ms"
AUDIT: Final = "audit"
AUDIT_RATE: Final = "audit_rate"

# Label columns.
LABEL: Final = "label"
LABEL_TS: Final = "label_ts"
SOURCE: Final = "source"
LABEL_SOURCES: Final = ("review", "chargeback", "audit")

_UTC_US = pl.Datetime("us", "UTC")

PAIR_SCHEMA: Final[dict[str, pl.DataType]] = {
    TS: _UTC_US,
    REQUEST_ID: pl.String(),
    PRIMARY_MODEL: pl.String(),
    CANDIDATE_MODEL: pl.String(),
    SERVED: pl.String(),
    TRAFFIC_PCT: pl.Float64(),
    PRIMARY_SCORE: pl.Float64(),
    CANDIDATE_SCORE: pl.Float64(),
    PRIMARY_ERROR: pl.String(),
    CANDIDATE_ERROR: pl.String(),
    PRIMARY_LATENCY: pl.Float64(),
    CANDIDATE_LATENCY: pl.Float64(),
    AUDIT: pl.Boolean(),
    AUDIT_RATE: pl.Float64(),
}
"""Required pair-log columns and their polars types. Further columns are caller context."""

LABEL_SCHEMA: Final[dict[str, pl.DataType]] = {
    REQUEST_ID: pl.String(),
    LABEL: pl.Int8(),
    LABEL_TS: _UTC_US,
    SOURCE: pl.String(),
}
"""Label-file columns and their polars types."""


def score_column(model: str) -> str:
    """Return the score column of ``model`` (``"primary"`` or ``"candidate"``)."""
    if model == PRIMARY:
        return PRIMARY_SCORE
    if model == CANDIDATE:
        return CANDIDATE_SCORE
    raise ValueError(
        f"The 'model' parameter must be 'primary' or 'candidate'. Got {model!r} instead."
    )


def _arrow(schema: dict[str, pl.DataType]) -> pa.Schema:
    return pl.DataFrame(schema=schema).to_arrow().schema


def arrow_pair_schema(context: dict[str, pa.DataType] | None = None) -> pa.Schema:
    """Arrow schema of a pair log, with optional context columns appended, version in metadata."""
    schema = _arrow(PAIR_SCHEMA)
    for name, dtype in (context or {}).items():
        schema = schema.append(pa.field(name, dtype))
    return schema.with_metadata({METADATA_KEY: str(SCHEMA_VERSION).encode()})


def arrow_label_schema() -> pa.Schema:
    """Arrow schema of a label file, version in metadata."""
    return _arrow(LABEL_SCHEMA).with_metadata({METADATA_KEY: str(SCHEMA_VERSION).encode()})
