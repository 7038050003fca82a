"""Where a document stands in its language by quality score: one ranking for selection and accounting.

Score's keep rule (the top p% of a language), token accounting's quality bands and the export of a
stricter high-quality selection all use these two functions, so "top 10% of tha" names the same
documents everywhere: rank 1 is the best score, ties by smallest doc_id, unscored documents last;
the top p% of n documents are the ranks ≤ ⌈p·n/100⌉.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def keep_count(n: int, percent: float) -> int:
    """⌈percent · n / 100⌉, exactly: 64.4 % of 250 is 161, not the 162 float arithmetic gives."""
    from fractions import Fraction

    return math.ceil(Fraction(str(percent)) * n / 100)


def rank_score() -> Any:
    """The score documents are ranked by: unscored ones after every score in [0, 1]."""
    from pyspark.sql import functions as F

    return F.coalesce(F.col("quality_score"), F.lit(-1.0))


def ranks_within_language(spark: Any, scored: Any, carry: Sequence[str] = ()) -> Any:
    """(doc_id, _rank, *carry): 1 for the best-scoring document of its language, ties by doc_id,
    unscored last; `carry` names narrow columns of `scored` to keep beside the rank (persisted
    with it, so a caller needs no join back to `scored` for them).

    A window over each language would sort a whole language — text included — in one task. Instead
    a narrow (lang, score, doc_id) projection is range-partitioned and sorted across all tasks;
    each row's position in its sorted partition is `monotonically_increasing_id` minus the
    partition's first id, and the per-partition, per-language counts (partitions × languages rows,
    the only thing collected) give every partition's offset within each language.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    score = rank_score()
    extra = [c for c in carry if c not in ("lang", "doc_id")]
    ordered = (scored.select("lang", "doc_id", score.alias("_score"), *extra)
               .orderBy("lang", F.col("_score").desc(), "doc_id")
               .select("lang", "doc_id", *extra, F.spark_partition_id().alias("_part"),
                       F.monotonically_increasing_id().alias("_pos"))
               .persist(StorageLevel.MEMORY_AND_DISK))  # ids must not change between the two passes
    blocks = sorted((r._part, r.lang, r.n, r.first) for r in ordered.groupBy("_part", "lang").agg(
        F.count(F.lit(1)).alias("n"), F.min("_pos").alias("first")).collect())
    seen: dict[str, int] = {}
    offsets = []
    for part, lang, n, first in blocks:
        offsets.append((part, lang, seen.get(lang, 0) - first))
        seen[lang] = seen.get(lang, 0) + n
    offset_df = F.broadcast(spark.createDataFrame(offsets, "_part int, lang string, _offset long"))
    ranks = (ordered.join(offset_df, ["_part", "lang"])
             .select("doc_id", (F.col("_pos") + F.col("_offset") + 1).alias("_rank"),
                     *[c for c in carry if c != "doc_id"])
             .persist(StorageLevel.MEMORY_AND_DISK))
    ranks.count()
    ordered.unpersist()
    return ranks


def within_cuts(spark: Any, df: Any, cuts: Sequence[tuple[str, float, str]]) -> Any:
    """The rows of `df` ranked at or above their language's cut — (lang, rank score, doc_id) of the
    last document kept — i.e. rank ≤ keep, without joining `df` with its ranks: in the ranking's
    order that is (score, -doc_id) ≥ the cut's. A language without a cut keeps nothing."""
    from pyspark.sql import functions as F

    cut_df = F.broadcast(spark.createDataFrame(list(cuts), "lang string, _cut_score double, _cut_doc string"))
    score, cut_score = rank_score(), F.col("_cut_score")
    within = (score > cut_score) | ((score == cut_score) & (F.col("doc_id") <= F.col("_cut_doc")))
    return df.join(cut_df, "lang", "left").where(F.coalesce(within, F.lit(False))).select(*df.columns)


def band_column(rank: Any, n: Any, width: int = 1) -> Any:
    """The quality band of a rank among n: the smallest multiple k of `width` (in percent, up to
    100) with rank ≤ ⌈k·n/100⌉, so bands ≤ q are exactly the top q% for every multiple q of width."""
    from pyspark.sql import functions as F

    scaled = (rank - 1) * 100  # integer arithmetic: floor(scaled / n) + 1 is the smallest such k
    percentile = ((scaled - scaled % n) / n).cast("long") + 1
    return F.least(F.ceil(percentile / F.lit(width)) * width, F.lit(100)).cast("int")
