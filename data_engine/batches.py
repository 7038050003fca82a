"""Python workers' batches bounded by characters, not only rows.

Arrow hands a pandas UDF `spark.sql.execution.arrow.maxRecordsPerBatch` rows at a time. Rows are
the wrong unit for web text: 2,000 pages of 5 MB each are 10 GB of text, and the numpy temporaries
built from them (code points as uint32, shingle hashes as uint64) are several times that. Each
Python step therefore cuts the batches it receives into pieces of at most `max_chars` characters
of text (one oversized document is a piece on its own), so its memory is set by configuration
whatever the documents look like.

The limit is the Spark setting `spark.sailyard.python.maxBatchChars` (the shipped
spark-defaults.conf sets it; `--conf` overrides it), read on the driver when a stage is planned and
captured in the function the workers run.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

CONF_KEY = "spark.sailyard.python.maxBatchChars"
DEFAULT_MAX_CHARS = 16_000_000  # ≈ 64 MB as UTF-32 code points, a few hundred MB of temporaries


def batch_chars(spark: Any) -> int:
    """The configured character budget of one Python batch (at least 1)."""
    value = spark.conf.get(CONF_KEY, str(DEFAULT_MAX_CHARS))
    try:
        limit = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{CONF_KEY} must be a whole number of characters, got {value!r}") from None
    if limit < 1:
        raise ValueError(f"{CONF_KEY} must be at least 1, got {limit}")
    return limit


def chunks(pdf: Any, max_chars: int, columns: tuple[str, ...] = ("text",)) -> Iterator[Any]:
    """Consecutive row slices of `pdf` whose `columns` hold at most `max_chars` characters in all
    (a single longer row is a slice by itself). Row order is kept."""
    import numpy as np

    n = len(pdf)
    if n == 0:
        return
    lengths = np.zeros(n, dtype=np.int64)
    for column in columns:
        lengths += pdf[column].str.len().fillna(0).to_numpy(dtype=np.int64)
    total = np.cumsum(lengths)
    if total[-1] <= max_chars:
        yield pdf
        return
    start = 0
    while start < n:
        before = total[start - 1] if start else 0
        end = max(int(np.searchsorted(total, before + max_chars, side="right")), start + 1)
        yield pdf.iloc[start:end]
        start = end


def rebatch(batches: Iterator[Any], max_chars: int, columns: tuple[str, ...] = ("text",)) -> Iterator[Any]:
    """`chunks` of every batch of a mapInPandas iterator; empty batches are skipped."""
    for pdf in batches:
        yield from chunks(pdf, max_chars, columns)
