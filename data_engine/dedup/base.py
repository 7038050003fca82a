"""What every dedup stage shares: its result shape and the keep rule (drops rows: `data_engine.drops`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from data_engine.spark import local_frame


@dataclass(frozen=True)
class StageResult:
    """The two sides of one stage, both lazily derived from one tagged frame (persisted where
    recomputing it would repeat a shuffle).

    `kept` has the input's columns; `dropped` has `DROPS_COLUMNS`.
    """

    kept: Any
    dropped: Any
    tagged: Any  # the frame both come from, with `lang` and a boolean `_drop`
    metrics: dict[str, float] = field(default_factory=dict)  # stage-specific figures for MLflow
    extra: dict[str, Any] = field(default_factory=dict)  # further tables the stage writes, by name
    cached: list[Any] = field(default_factory=list)  # other persisted frames `release` frees
    removed: Any = None
    """(doc_id) of the documents the stage drops, persisted, when it only drops (never rewrites):
    the next stage's input is then the run's input without them, not a plan built on this one."""

    def release(self) -> None:
        """Free what the stage persisted; call after its outputs are written."""
        for frame in [self.tagged, *self.cached]:
            frame.unpersist()


#: Groups with more members than this are joined to their survivor by broadcast, not by a shuffle
#: on the key: a hot URL or a page copied a million times would otherwise be one task's input.
#: At most (documents / HOT_KEY_DOCS) keys are ever broadcast.
HOT_KEY_DOCS = 2_000


def keep_rank_fields(df: Any) -> list[tuple[str, Any, str]]:
    """(name, column, SQL type) of the keep rule's fields before the doc id: what `keep_rank`
    orders by, as plain columns a Python pass can carry through (near dedup's signature pass
    hands them on, so its ranks need no second scan of the text)."""
    from pyspark.sql import functions as F

    fields = []
    if "quality_score" in df.columns:
        fields += [("q_null", F.col("quality_score").isNull(), "boolean"),
                   ("q", -F.col("quality_score").cast("double"), "double")]
    return [*fields, ("len", -F.length(F.coalesce("text", F.lit(""))), "int")]


def keep_rank(df: Any, fields: list[tuple[str, Any, str]] | None = None) -> Any:
    """The documented keep rule as one sortable struct: the smallest is the survivor.

    Highest `quality_score` when the column exists (nulls last), then the longest text, then the
    smallest `doc_id` — total and deterministic, so every run keeps the same documents.
    `fields`: the columns of `keep_rank_fields`, where they are already computed.
    """
    from pyspark.sql import functions as F

    given = fields if fields is not None else keep_rank_fields(df)
    return F.struct(*[column.alias(name) for name, column, _ in given], F.col("doc_id").alias("id"))


def tag_duplicates(df: Any, keys: Any, *, stage: str, reason: str, hot_docs: int = HOT_KEY_DOCS) -> StageResult:
    """Keep the best row (smallest `_rank`) of each `_key` group of `keys`; drop the rest with
    `dup_of` naming the survivor and `cluster_id` the key.

    `keys` is a narrow frame (doc_id, lang, _key, _rank) over the documents of `df`; rows with a
    null key are nobody's duplicate. Survivors are chosen by aggregation (combined on the map side,
    so a key held by half the table costs one row per map task), only the groups with two or more
    members are joined back to their members (hot ones by broadcast), and only the losers are
    joined to the documents: no step sorts or shuffles a whole group into one task.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    # Both persisted: the key (a pandas UDF over every text) and the groups feed three branches
    # each, which would otherwise recompute them.
    keyed = keys.where(F.col("_key").isNotNull()).persist(StorageLevel.MEMORY_AND_DISK)
    groups = (keyed.groupBy("_key").agg(F.min_by("doc_id", "_rank").alias("_survivor"),
                                        F.count(F.lit(1)).alias("_n"))
              .where(F.col("_n") > 1).persist(StorageLevel.MEMORY_AND_DISK))
    hot = groups.where(F.col("_n") > hot_docs).select("_key", "_survivor")
    cold = groups.where(F.col("_n") <= hot_docs).select("_key", "_survivor")
    members = keyed.select("doc_id", "lang", "_key")
    joined = (members.join(F.broadcast(hot), "_key")
              .unionByName(members.join(F.broadcast(hot.select("_key")), "_key", "left_anti").join(cold, "_key")))
    losers = (joined.where(F.col("doc_id") != F.col("_survivor"))
              .select("doc_id", "lang", F.col("_survivor").alias("_dup_of"),
                      F.col("_key").cast("string").alias("_cluster")))
    result = tag_losers(df, losers, stage=stage, reason=reason)
    return dataclasses.replace(result, cached=[*result.cached, keyed, groups])


#: Losers up to this many rows are brought to the driver (about 100 bytes each) and broadcast to
#: the join that tags them: the documents, text and all, are read where they lie instead of being
#: shuffled to meet a few thousand ids, and later plans hold the losers as a leaf.
BROADCAST_LOSERS = 200_000


def tag_losers(df: Any, losers: Any, *, stage: str, reason: str) -> StageResult:
    """Mark the documents of `df` listed in `losers` (doc_id, lang, _dup_of, _cluster) as dropped.

    One join on doc_id — evenly spread whatever the duplicates look like; every other row passes
    through untouched. The losers are counted first (a narrow frame): when few, they are broadcast
    and the documents are never shuffled. The drops rows are the losers themselves, language
    included: writing them reads no document again.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    # Few losers become local data, and stay a leaf (a local relation needs no cache): every later
    # plan (the next stages read the input less these) then holds a few lines, not this stage's
    # whole plan; nesting plans stage after stage made the driver spend minutes planning.
    # Many stay a persisted frame.
    head = losers.limit(BROADCAST_LOSERS + 1).collect()
    few = len(head) <= BROADCAST_LOSERS
    losers = (local_frame(df.sparkSession, head, losers.schema) if few
              else losers.persist(StorageLevel.MEMORY_AND_DISK))
    marks = losers.select("doc_id", "_dup_of", "_cluster")
    tagged = (df.join(F.broadcast(marks) if few else marks, "doc_id", "left")
              .withColumn("_drop", F.col("_dup_of").isNotNull()))
    if not few:  # a shuffle join is worth keeping; a broadcast one is cheaper to redo than caching the text
        tagged = tagged.persist(StorageLevel.MEMORY_AND_DISK)
    kept = tagged.filter(~F.col("_drop")).drop("_dup_of", "_cluster", "_drop")
    dropped = losers.select(
        "doc_id", F.lit(stage).alias("stage"), "lang", F.lit(reason).alias("reason"),
        F.col("_dup_of").alias("dup_of"), F.col("_cluster").alias("cluster_id"),
        F.lit(None).cast("string").alias("detail"))
    return StageResult(kept=kept, dropped=dropped, tagged=tagged, cached=[] if few else [losers],
                       removed=losers.select("doc_id"))
