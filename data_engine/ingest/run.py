"""Ingest orchestration: plan on the driver, parse on the executors, commit three tables.

Idempotence: every file is known by the SHA-256 of its bytes. Files already in `ingest_log` are
skipped, so ingesting the same files twice adds nothing the second time (a renamed copy
included). The batch id is a hash of the new files' digests and is stored as a Delta app
transaction on each commit, so a re-run after a crash between two commits finishes the missing
ones without duplicating the committed ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from data_engine import lake
from data_engine.config import IngestConfig
from data_engine.ingest import plan
from data_engine.ingest.records import COLUMNS, Limits, Split, count_newlines, read_split
from data_engine.tables import DOCS_RAW, INGEST_LOG, QUARANTINE

PARSED_SCHEMA = ("kind string, source_file string, record_no long, text string, url string, "
                 "lang string, id string, meta string, payload string, payload_size long, "
                 "payload_truncated boolean, reason string")
SPLIT_SCHEMA = "path string, format string, start long, end long, newlines_before long"
DOCS_RAW_COLUMNS = ("doc_id", "lang", "source", "batch_id", "url", "id", "text", "meta",
                    "source_file", "record_no")
QUARANTINE_COLUMNS = ("source", "batch_id", "source_file", "record_no", "reason", "payload",
                      "payload_size", "payload_truncated")
_CHUNK_ROWS = 2000
_CHUNK_CHARS = 32 * 1024 * 1024
_ID_HEX = 32  # 128 bits of SHA-256: no collision at any corpus size we will see


@dataclass
class IngestResult:
    records: int = 0
    docs: int = 0
    quarantined: int = 0
    files: int = 0
    skipped_files: int = 0
    ignored_files: int = 0
    batch_id: str | None = None
    source: str = ""
    per_lang: dict[str, int] = dataclasses.field(default_factory=dict)
    per_reason: dict[str, int] = dataclasses.field(default_factory=dict)
    tables: dict[str, int] = dataclasses.field(default_factory=dict)


def _parse_partitions(limits: Limits) -> Any:
    def parse(batches: Iterator[Any]) -> Iterator[Any]:
        import pandas as pd

        rows: list[dict[str, Any]] = []
        chars = 0
        for pdf in batches:
            for split in pdf.itertuples(index=False):
                for row in read_split(Split(split.path, split.format, int(split.start), int(split.end),
                                            int(split.newlines_before)), limits):
                    rows.append(row)
                    chars += len(row["text"] or "") + len(row["payload"] or "")
                    if len(rows) >= _CHUNK_ROWS or chars >= _CHUNK_CHARS:
                        yield pd.DataFrame(rows, columns=list(COLUMNS))
                        rows, chars = [], 0
        if rows:
            yield pd.DataFrame(rows, columns=list(COLUMNS))

    return parse


def _digest_partitions(batches: Iterator[Any]) -> Iterator[Any]:
    for pdf in batches:
        pdf = pdf.copy()
        pdf["digest"] = [plan.sha256_file(p) for p in pdf["path"]]
        yield pdf


def _newline_partitions(batches: Iterator[Any]) -> Iterator[Any]:
    for pdf in batches:
        pdf = pdf.copy()
        pdf["newlines"] = [count_newlines(p, int(s), int(e)) for p, s, e in
                           zip(pdf["path"], pdf["start"], pdf["end"], strict=True)]
        yield pdf


def _spread(spark: Any, rows: list[tuple[Any, ...]], schema: str) -> Any:
    """A small driver-side list as a DataFrame with one row per task, so files read in parallel."""
    return spark.createDataFrame(spark.sparkContext.parallelize(rows, max(1, len(rows))), schema)


def _digests(spark: Any, files: list[plan.InputFile]) -> dict[str, str]:
    df = _spread(spark, [(f.path,) for f in files], "path string")
    rows = df.mapInPandas(_digest_partitions, "path string, digest string").collect()
    return {r.path: r.digest for r in rows}


def _already_ingested(lake_dir: str, digests: set[str]) -> set[str]:
    if not lake.exists(lake_dir, INGEST_LOG):
        return set()
    known = lake.read_arrow(lake_dir, INGEST_LOG, columns=["file_digest"]).column("file_digest")
    return digests & set(known.to_pylist())


def _plan_splits(spark: Any, files: list[plan.InputFile], split_bytes: int) -> list[Split]:
    splits = [s for f in files for s in plan.splits_for(f, split_bytes)]
    cut = [s for s in splits if s.start > 0 or s.end >= 0]
    if not cut:
        return splits
    size = {f.path: f.size for f in files}
    df = _spread(spark, [(s.path, s.start, s.end if s.end >= 0 else size[s.path]) for s in cut],
                 "path string, start long, end long")
    counts = {(r.path, r.start): r.newlines for r in
              df.mapInPandas(_newline_partitions, "path string, start long, end long, newlines long")
              .collect()}
    out: list[Split] = []
    running: dict[str, int] = {}
    for s in splits:
        before = running.get(s.path, 0)
        out.append(dataclasses.replace(s, newlines_before=before))
        if (s.path, s.start) in counts:
            running[s.path] = before + counts[(s.path, s.start)]
    return out


def _with_doc_ids(docs: Any, lake_dir: str) -> Any:
    """doc_id = hash(source, url, text); the n-th repeat of the same triple gets a `-n` suffix.

    Repeats are numbered after those already in `docs_raw`, in (file, line) order, so ids are
    unique in the table and the same on every re-run of the same history.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    base = F.substring(F.sha2(F.concat_ws("\u001f", "source", F.coalesce("url", F.lit("")), "text"),
                              256), 1, _ID_HEX)
    docs = docs.withColumn("_base", base).withColumn(
        "_rn", F.row_number().over(Window.partitionBy("_base").orderBy("source_file", "record_no")))
    if lake.exists(lake_dir, DOCS_RAW):
        prior = (lake.read_table(docs.sparkSession, lake_dir, DOCS_RAW).df
                 .select(F.substring("doc_id", 1, _ID_HEX).alias("_base"))
                 .groupBy("_base").agg(F.count(F.lit(1)).alias("_prior")))
        docs = docs.join(prior, "_base", "left")
    else:
        docs = docs.withColumn("_prior", F.lit(0))
    occurrence = F.coalesce("_prior", F.lit(0)) + F.col("_rn") - 1
    doc_id = F.when(occurrence == 0, F.col("_base")).otherwise(
        F.concat("_base", F.lit("-"), occurrence.cast("string")))
    return docs.withColumn("doc_id", doc_id).drop("_base", "_rn", "_prior")


def ingest(spark: Any, lake_dir: str, inputs: list[str], *, source: str | None = None,
           cfg: IngestConfig = IngestConfig(), run: Any = None) -> IngestResult:
    """Read `inputs` into `docs_raw` and `quarantine`; returns the reconciled counts."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    files, ignored = plan.discover(inputs)
    result = IngestResult(source=source or plan.default_source(inputs), ignored_files=len(ignored))
    digests = _digests(spark, files)
    done = _already_ingested(lake_dir, set(digests.values()))
    fresh: dict[str, plan.InputFile] = {}
    for f in files:  # first path wins among byte-identical copies
        d = digests[f.path]
        if d not in done and d not in fresh:
            fresh[d] = f
    result.skipped_files = len(files) - len(fresh)
    if not fresh:
        return result
    result.files = len(fresh)
    result.batch_id = batch = plan.batch_id(list(fresh))
    splits = _plan_splits(spark, list(fresh.values()), cfg.split_bytes)
    limits = Limits(cfg.max_record_bytes, cfg.max_payload_bytes)
    parsed = (_spread(spark, [(s.path, s.format, s.start, s.end, s.newlines_before) for s in splits],
                      SPLIT_SCHEMA)
              .mapInPandas(_parse_partitions(limits), PARSED_SCHEMA)
              .withColumn("source", F.lit(result.source)).withColumn("batch_id", F.lit(batch))
              .persist(StorageLevel.MEMORY_AND_DISK))
    try:
        code = F.split("reason", ":").getItem(0).alias("reason")
        by_file = parsed.groupBy("source_file", "kind", "lang", code).count().collect()
        for r in by_file:
            result.records += r["count"]
            if r.kind == "doc":
                result.docs += r["count"]
                result.per_lang[r.lang] = result.per_lang.get(r.lang, 0) + r["count"]
            else:
                result.quarantined += r["count"]
                result.per_reason[r.reason] = result.per_reason.get(r.reason, 0) + r["count"]
        app = f"sailyard.ingest.{batch}"
        meta = {"job": "ingest", "batch_id": batch, "mlflow_run_id": getattr(run, "run_id", "")}
        docs = _with_doc_ids(parsed.filter("kind = 'doc'"), lake_dir).select(*DOCS_RAW_COLUMNS)
        written = lake.write_table(docs, lake_dir, DOCS_RAW, mode="append", sort_by=("doc_id",),
                                   app_id=app, app_version=0, metadata=meta)
        result.tables[DOCS_RAW] = written.version
        bad = parsed.filter("kind = 'bad'").select(*QUARANTINE_COLUMNS)
        written = lake.write_table(bad, lake_dir, QUARANTINE, mode="append", partition_by=(),
                                   sort_by=("source_file", "record_no"), app_id=app, app_version=0,
                                   metadata=meta)
        result.tables[QUARANTINE] = written.version
        log_rows = _log_rows(fresh, by_file, batch, result.source)
        log_df = spark.createDataFrame(log_rows, "file_digest string, path string, format string, "
                                       "size long, batch_id string, source string, records long, "
                                       "docs long, quarantined long")
        written = lake.write_table(log_df, lake_dir, INGEST_LOG, mode="append", partition_by=(),
                                   app_id=app, app_version=0, metadata=meta)
        result.tables[INGEST_LOG] = written.version
    finally:
        parsed.unpersist()
    if result.records != result.docs + result.quarantined:  # pragma: no cover - a bug if it fires
        raise AssertionError(f"ingest counts do not reconcile: {result}")
    return result


def _log_rows(fresh: dict[str, plan.InputFile], by_file: list[Any],
              batch: str, source: str) -> list[tuple[Any, ...]]:
    per_file: dict[str, list[int]] = {}
    for r in by_file:
        counts = per_file.setdefault(r.source_file, [0, 0])
        counts[0 if r.kind == "doc" else 1] += r["count"]
    rows = []
    for digest, f in sorted(fresh.items(), key=lambda kv: kv[1].path):
        docs, bad = per_file.get(f.path, [0, 0])
        rows.append((digest, f.path, f.format, f.size, batch, source, docs + bad, docs, bad))
    return rows
