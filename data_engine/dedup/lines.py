"""Frequent-line removal: lines that occur in more than K documents are boilerplate, not content.

Sailor2 removed lines seen more than 5 times within buckets of 10M documents (about 5% of tokens:
navigation, cookie notices, share buttons, copyright footers). Here:

1. every document's distinct non-blank lines are hashed (NFC, whitespace collapsed, xxh3-64), and
   each document falls in a bucket of about `bucket_docs` documents (by doc_id hash);
2. per (bucket, line) the number of documents is counted. Each (document, line) pair occurs once,
   so this is a plain count that Spark pre-aggregates on the map side: the hottest line of a
   crawl costs one shuffled row per map task, never one task holding all its documents;
3. lines counted in more than `max_docs` documents are removed from every document of their
   bucket: a join of (document, line hash) with the frequent set gives each document the list of
   its own frequent lines (never a set collected on the driver: at Sailor2's 10M-document buckets
   that is 10⁸–10⁹ hashes), and only documents with such a list have their text rewritten;
4. documents left empty or shorter than `min_units` (words, or characters for text written
   without spaces) are dropped (`drops`, with the reason);
   `line_drops` gets per-document removed line and character counts (`kind = 'doc'`) and the
   most frequent removed lines per language with an example of their text (`kind = 'top_line'`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from data_engine.dedup.base import StageResult
from data_engine.dedup.config import LineDedupConfig
from data_engine.dedup.normalize import normalize_text
from data_engine.drops import drop_rows

STAGE = "lines"
REASON_EMPTY = "empty_after_line_removal"
REASON_SHORT = "too_short_after_line_removal"
LINE_DROPS_SCHEMA = ("kind string, doc_id string, lang string, lines_before long, lines_removed long, "
                     "chars_before long, chars_removed long, rank int, line_hash long, line string, "
                     "docs long")


def line_key(line: str) -> int:
    """Signed 64-bit hash of a line's normalised text (Spark's LongType)."""
    import xxhash

    return xxhash.xxh3_64_intdigest(normalize_text(line).encode("utf-8")) - (1 << 63)


def _bucket_expr(n_buckets: int) -> Any:
    from pyspark.sql import functions as F

    return F.pmod(F.xxhash64("doc_id"), F.lit(n_buckets)).cast("int")


def _line_partitions(batches: Iterator[Any]) -> Iterator[Any]:
    import pandas as pd

    for pdf in batches:
        docs, buckets, langs, keys = [], [], [], []
        for doc_id, bucket, lang, text in zip(pdf["doc_id"], pdf["bucket"], pdf["lang"], pdf["text"],
                                              strict=True):
            for key in {line_key(line) for line in text.split("\n") if line.strip()}:
                docs.append(doc_id)
                buckets.append(bucket)
                langs.append(lang)
                keys.append(key)
        if keys:  # an empty object-typed frame does not convert to the declared Arrow schema
            yield pd.DataFrame({"doc_id": docs, "bucket": buckets, "lang": langs, "line_hash": keys})


def _removal_partitions(cfg: LineDedupConfig, columns: list[str], max_chars: int) -> Any:
    def remove(batches: Iterator[Any]) -> Iterator[Any]:
        from data_engine.batches import rebatch
        from data_engine.dedup.shingles import text_units

        for pdf in rebatch(batches, max_chars):
            texts, stats = [], []
            for hot, text in zip(pdf["_hot"], pdf["text"], strict=True):
                lines = text.split("\n")
                if hot is None or len(hot) == 0:  # no frequent line: the text is not rewritten
                    texts.append(text)
                    stats.append((len(lines), 0, len(text), 0))
                    continue
                lines_hot = {int(h) for h in hot}
                kept = [ln for ln in lines if not ln.strip() or line_key(ln) not in lines_hot]
                new = "\n".join(kept).strip("\n")
                texts.append(new)
                stats.append((len(lines), len(lines) - len(kept), len(text), len(text) - len(new)))
            units = text_units(texts)
            reasons = [REASON_EMPTY if not t.strip() else REASON_SHORT if n < cfg.min_units else None
                       for t, n in zip(texts, units, strict=True)]
            out = pdf[columns].copy()
            out["text"] = texts
            out["_lines_before"] = [s[0] for s in stats]
            out["_lines_removed"] = [s[1] for s in stats]
            out["_chars_before"] = [s[2] for s in stats]
            out["_chars_removed"] = [s[3] for s in stats]
            out["_reason"] = reasons
            yield out

    return remove


def _top_per_lang(k: int) -> Any:
    """Each partition's k most frequent lines per language: the first half of a top-k that never
    gathers a whole language in one task."""
    def top(batches: Iterator[Any]) -> Iterator[Any]:
        import pandas as pd

        parts = [pdf for pdf in batches if not pdf.empty]
        if parts:
            pdf = pd.concat(parts).sort_values(["lang", "docs", "line_hash"], ascending=[True, False, True])
            yield pdf.groupby("lang", sort=False).head(k)

    return top


def _example_partitions(top: Any) -> Any:
    def examples(batches: Iterator[Any]) -> Iterator[Any]:
        import pandas as pd

        wanted = top.value
        for pdf in batches:
            found: dict[int, str] = {}
            for text in pdf["text"]:
                for line in text.split("\n"):
                    if line.strip():
                        key = line_key(line)
                        if key in wanted and key not in found:
                            found[key] = normalize_text(line)
            if found:
                yield pd.DataFrame({"line_hash": list(found), "line": list(found.values())})

    return examples


def dedup_lines(df: Any, cfg: LineDedupConfig = LineDedupConfig()) -> StageResult:
    """Remove frequent lines from every document; drop documents left too short."""
    from pyspark import StorageLevel
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from data_engine.batches import batch_chars

    spark = df.sparkSession
    max_chars = batch_chars(spark)
    total = df.count()
    n_buckets = max(1, -(-total // cfg.bucket_docs))
    bucketed = df.withColumn("bucket", _bucket_expr(n_buckets))
    lines = (bucketed.select("doc_id", "bucket", "lang", "text")
             .mapInPandas(_line_partitions, "doc_id string, bucket int, lang string, line_hash long")
             .persist(StorageLevel.MEMORY_AND_DISK))
    try:
        counts = lines.groupBy("bucket", "line_hash").agg(F.count(F.lit(1)).alias("docs"))
        frequent = counts.where(F.col("docs") > cfg.max_docs).persist(StorageLevel.MEMORY_AND_DISK)
        hits = lines.join(frequent.select("bucket", "line_hash"), ["bucket", "line_hash"])
        hot_of_doc = hits.groupBy("doc_id").agg(F.collect_list("line_hash").alias("_hot"))

        # The most frequent removed lines per language, with their text, for a person to check:
        # a top-k per partition, then per language over those few rows.
        per_lang = hits.groupBy("lang", "line_hash").agg(F.count(F.lit(1)).alias("docs"))
        local_top = per_lang.mapInPandas(_top_per_lang(cfg.top_lines), "lang string, line_hash long, docs long")
        ranked = (local_top.withColumn("rank", F.row_number().over(
            Window.partitionBy("lang").orderBy(F.col("docs").desc(), F.col("line_hash"))))
                  .where(F.col("rank") <= cfg.top_lines).persist(StorageLevel.MEMORY_AND_DISK))
        top_bc = spark.sparkContext.broadcast({int(r.line_hash) for r in ranked.select("line_hash").collect()})
        examples = (df.select("text").mapInPandas(_example_partitions(top_bc), "line_hash long, line string")
                    .groupBy("line_hash").agg(F.min("line").alias("line")))
        top_rows = ranked.join(examples, "line_hash", "left").select(
            F.lit("top_line").alias("kind"), F.lit(None).cast("string").alias("doc_id"), "lang",
            *[F.lit(None).cast("long").alias(c) for c in ("lines_before", "lines_removed", "chars_before",
                                                           "chars_removed")],
            F.col("rank").cast("int"), "line_hash", "line", F.col("docs").cast("long"))

        columns = [c for c in bucketed.columns if c != "text"]
        schema = (", ".join(f"{f.name} {f.dataType.simpleString()}" for f in bucketed.schema.fields
                            if f.name != "text")
                  + ", text string, _lines_before long, _lines_removed long, _chars_before long, "
                  "_chars_removed long, _reason string")
        tagged = (bucketed.join(hot_of_doc, "doc_id", "left")
                  .mapInPandas(_removal_partitions(cfg, columns, max_chars), schema)
                  .withColumn("_drop", F.col("_reason").isNotNull())
                  .persist(StorageLevel.MEMORY_AND_DISK))
        tagged.count()
        doc_rows = tagged.where(F.col("_lines_removed") > 0).select(
            F.lit("doc").alias("kind"), "doc_id", "lang",
            F.col("_lines_before").alias("lines_before"), F.col("_lines_removed").alias("lines_removed"),
            F.col("_chars_before").alias("chars_before"), F.col("_chars_removed").alias("chars_removed"),
            F.lit(None).cast("int").alias("rank"), F.lit(None).cast("long").alias("line_hash"),
            F.lit(None).cast("string").alias("line"), F.lit(None).cast("long").alias("docs"))
        line_drops = doc_rows.unionByName(top_rows)
        kept = tagged.where(~F.col("_drop")).select(*df.columns)
        dropped = drop_rows(tagged.where(F.col("_drop")), stage=STAGE, reason=F.col("_reason"),
                            detail=F.format_string("%d of %d lines removed", "_lines_removed", "_lines_before"))
        metrics = {"frequent_lines": float(frequent.count()), "buckets": float(n_buckets),
                   "docs_with_lines_removed": float(doc_rows.count())}
        return StageResult(kept=kept, dropped=dropped, tagged=tagged, metrics=metrics,
                           extra={"line_drops": line_drops}, cached=[frequent, ranked])
    finally:
        lines.unpersist()
