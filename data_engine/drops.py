"""The `drops` table: one row per document a stage removed, with the stage and the reason.

Clean (`clean`, `lid`), dedup (`url`, `exact`, `near`, `lines`) and quality (`quality`) all write
it, each replacing only its own `stage` partitions (see `lake`'s disjoint-partition commits).
"""

from __future__ import annotations

from typing import Any

DROPS_COLUMNS = ("doc_id", "stage", "lang", "reason", "dup_of", "cluster_id", "detail")
DROPS_SCHEMA = ("doc_id string, stage string, lang string, reason string, dup_of string, "
                "cluster_id string, detail string")


def drop_rows(df: Any, *, stage: Any, reason: Any, detail: Any) -> Any:
    """`df`'s documents as `drops` rows of a stage that removes documents on their own (no survivor,
    no cluster). `stage`, `reason`, `detail`: Columns, or strings taken as literals."""
    from pyspark.sql import Column
    from pyspark.sql import functions as F

    def col(value: Any) -> Any:
        return value if isinstance(value, Column) else F.lit(value)

    none = F.lit(None).cast("string")
    return df.select("doc_id", col(stage).alias("stage"), "lang", col(reason).alias("reason"),
                     none.alias("dup_of"), none.alias("cluster_id"), col(detail).alias("detail"))
