"""What every dedup stage shares: its result shape and the keep rule (drops rows: `data_engine.drops`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class StageResult:
    """The two sides of one stage, both lazily derived from one tagged (and persisted) frame.

    `kept` has the input's columns; `dropped` has `DROPS_COLUMNS`.
    """

    kept: Any
    dropped: Any
    tagged: Any  # the persisted frame both come from, with `lang` and a boolean `_drop`
    metrics: dict[str, float] = field(default_factory=dict)  # stage-specific figures for MLflow
    extra: dict[str, Any] = field(default_factory=dict)  # further tables the stage writes, by name
    cached: list[Any] = field(default_factory=list)  # other persisted frames `release` frees

    def release(self) -> None:
        """Free what the stage persisted; call after its outputs are written."""
        for frame in [self.tagged, *self.cached]:
            frame.unpersist()


def keep_order(df: Any) -> list[Any]:
    """The documented keep rule, as sort columns: the first row of a group is the survivor.

    Highest `quality_score` when the column exists, then the longest text, then the smallest
    `doc_id` — total and deterministic, so every run keeps the same documents.
    """
    from pyspark.sql import functions as F

    order = []
    if "quality_score" in df.columns:
        order.append(F.col("quality_score").desc_nulls_last())
    order += [F.length("text").desc(), F.col("doc_id").asc()]
    return order


def tag_duplicates(df: Any, group_col: str, *, stage: str, reason: str,
                   order: list[Any] | None = None) -> StageResult:
    """Keep the first row of each `group_col` group by `order` (default `keep_order`); drop the
    rest with `dup_of` naming the survivor. Rows whose group is null are all kept."""
    from pyspark import StorageLevel
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    window = Window.partitionBy(group_col).orderBy(*(order or keep_order(df)))
    survivor = F.first("doc_id").over(window)
    tagged = (df.withColumn("_survivor", F.when(F.col(group_col).isNotNull(), survivor))
              .withColumn("_dup_of", F.when(F.col("_survivor") != F.col("doc_id"), F.col("_survivor")))
              .withColumn("_drop", F.col("_dup_of").isNotNull())
              .drop("_survivor")
              .persist(StorageLevel.MEMORY_AND_DISK))
    kept = tagged.filter(~F.col("_drop")).drop("_dup_of", "_drop", group_col)
    dropped = tagged.filter(F.col("_drop")).select(
        "doc_id", F.lit(stage).alias("stage"), "lang", F.lit(reason).alias("reason"),
        F.col("_dup_of").alias("dup_of"), F.col(group_col).cast("string").alias("cluster_id"),
        F.lit(None).cast("string").alias("detail"))
    return StageResult(kept=kept, dropped=dropped, tagged=tagged)
