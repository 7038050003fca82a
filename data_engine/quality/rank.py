"""Where a document stands in its language by quality score: one ranking for selection and accounting.

Score's keep rule (the top p% of a language), token accounting's quality bands and the export of a
stricter high-quality selection all use these two functions, so "top 10% of tha" names the same
documents everywhere: rank 1 is the best score, ties by smallest doc_id, unscored documents last;
the top p% of n documents are the ranks ≤ ⌈p·n/100⌉.
"""

from __future__ import annotations

import math
from typing import Any


def keep_count(n: int, percent: float) -> int:
    """⌈percent · n / 100⌉, exactly: 64.4 % of 250 is 161, not the 162 float arithmetic gives."""
    from fractions import Fraction

    return math.ceil(Fraction(str(percent)) * n / 100)


def ranks_within_language(spark: Any, scored: Any) -> Any:
    """(doc_id, _rank): 1 for the best-scoring document of its language, ties by doc_id, unscored last.

    A window over each language would sort a whole language — text included — in one task. Instead
    a narrow (lang, score, doc_id) projection is range-partitioned and sorted across all tasks;
    each row's position in its sorted partition is `monotonically_increasing_id` minus the
    partition's first id, and the per-partition, per-language counts (partitions × languages rows,
    the only thing collected) give every partition's offset within each language.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    score = F.coalesce(F.col("quality_score"), F.lit(-1.0))  # unscored after every score in [0, 1]
    ordered = (scored.select("lang", "doc_id", score.alias("_score"))
               .orderBy("lang", F.col("_score").desc(), "doc_id")
               .select("lang", "doc_id", F.spark_partition_id().alias("_part"),
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
             .select("doc_id", (F.col("_pos") + F.col("_offset") + 1).alias("_rank"))
             .persist(StorageLevel.MEMORY_AND_DISK))
    ranks.count()
    ordered.unpersist()
    return ranks




def band_column(rank: Any, n: Any, width: int = 1) -> Any:
    """The quality band of a rank among n: the smallest multiple k of `width` (in percent, up to
    100) with rank ≤ ⌈k·n/100⌉, so bands ≤ q are exactly the top q% for every multiple q of width."""
    from pyspark.sql import functions as F

    scaled = (rank - 1) * 100  # integer arithmetic: floor(scaled / n) + 1 is the smallest such k
    percentile = ((scaled - scaled % n) / n).cast("long") + 1
    return F.least(F.ceil(percentile / F.lit(width)) * width, F.lit(100)).cast("int")
