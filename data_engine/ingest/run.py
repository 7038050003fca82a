"""Ingest orchestration: plan on the driver, parse on the executors, commit three tables.

Idempotence: every file is known by the SHA-256 of its bytes. Files already in `ingest_log` are
skipped, so ingesting the same files twice adds nothing the second time (a renamed copy
included) — a file logged as incomplete too: the same bytes would stop at the same place.

Incomplete files: a file-level problem that stopped reading early (a gzip stream cut short, a
Parquet page that does not decode) keeps the records read before it and logs the file with
`complete = false`. When that path later holds other bytes (the repaired file), it is read as a
continuation: a record whose (source_file, record_no) and content (source, url, text; for a
quarantine row: reason and payload) is already in `docs_raw`/`quarantine` from that path is
counted as `skipped_records` and not written again. An I/O error is not a file-level problem:
the task fails and Spark retries it (see `records`).

The batch id is a hash of the new files' digests and is stored as a Delta app transaction on
each commit, so a re-run after a crash between two commits finishes the missing ones without
duplicating the committed ones.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from data_engine import lake
from data_engine.errors import InputError, TableConflictError
from data_engine.ingest import plan
from data_engine.ingest import reasons as R
from data_engine.ingest.config import IngestConfig
from data_engine.ingest.records import COLUMNS, Limits, Split, count_newlines, read_split
from data_engine.stage import AlreadyCommitted, Counts, Output, StagePlan, commit_plan
from data_engine.tables import DOCS_RAW, INGEST_LOG, QUARANTINE

PARSED_SCHEMA = ("kind string, source_file string, record_no long, text string, url string, "
                 "lang string, id string, meta string, payload string, payload_size long, "
                 "payload_truncated boolean, reason string")
SPLIT_SCHEMA = "path string, format string, start long, end long, newlines_before long"
DOCS_RAW_COLUMNS = ("doc_id", "lang", "source", "batch_id", "url", "id", "text", "meta",
                    "source_file", "record_no")
QUARANTINE_COLUMNS = ("source", "batch_id", "source_file", "record_no", "reason", "payload",
                      "payload_size", "payload_truncated")
LOG_SCHEMA = ("file_digest string, path string, format string, size long, batch_id string, "
              "source string, records long, docs long, quarantined long, complete boolean, "
              "records_read long")
"""`records`/`docs`/`quarantined`: rows this attempt wrote; `complete`: false when a file-level
problem stopped reading early; `records_read`: records read from the file, a skipped prefix
included, file-level rows not."""
SEEN = "seen"
"""`kind` of a parsed row that an earlier, incomplete attempt on the same path already wrote."""
_CHUNK_ROWS = 2000
_CHUNK_CHARS = 32 * 1024 * 1024
_ID_HEX = 32  # 128 bits of SHA-256: no collision at any corpus size we will see
_ID_RETRIES = 5  # renumberings after concurrent batches committed docs_raw first


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
    incomplete_files: int = 0
    """Files read this run whose reading stopped at a file-level problem (`complete = false`)."""
    resumed_files: int = 0
    """Files read as the continuation of an earlier incomplete attempt on the same path."""
    skipped_records: int = 0
    """Records of resumed files that were already in the lake (not part of `records`)."""
    already_ingested: bool = False
    """A concurrent run of the same input committed it first; this run added nothing."""


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


_READ_ERROR = re.compile(r"InputReadError: (.+)")


@contextmanager
def _read_errors(spark: Any) -> Iterator[None]:
    """Turn a Spark job that failed on an input I/O error into one InputError naming the file.

    The executors raise `InputReadError`; Spark retries the task `spark.task.maxFailures` times
    and then fails the job with the worker's traceback inside some Java exception.
    """
    try:
        yield
    except Exception as exc:
        found = _READ_ERROR.search(str(exc))
        if found is None:
            raise
        tries = _task_attempts(spark)
        hint = " (a local[N] master never retries a task; local[N,F] allows F attempts)" if tries == 1 else ""
        raise InputError(f"{found.group(1).split(' (storage')[0]}, still failing after {tries} "
                         f"attempt{'s' if tries != 1 else ''}; nothing was committed: re-run when the "
                         f"storage is healthy{hint}") from None


def _task_attempts(spark: Any) -> int:
    """How often Spark runs a failing task: local[N] once, local[N,F] F times, else maxFailures."""
    master = spark.sparkContext.master
    local = re.fullmatch(r"local\[[^,\]]+(?:,\s*(\d+))?\]|local", master)
    if local:
        return int(local.group(1)) if local.group(1) else 1
    return int(spark.sparkContext.getConf().get("spark.task.maxFailures", "4"))


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
    with _read_errors(spark):
        rows = df.mapInPandas(_digest_partitions, "path string, digest string").collect()
    return {r.path: r.digest for r in rows}


@dataclass(frozen=True)
class _Prior:
    done: set[str]
    """Digests already in `ingest_log`, complete or not: their bytes are never read again."""
    incomplete_paths: set[str]
    """Paths with an incomplete attempt: new bytes there are read as a continuation."""


def _already_ingested(lake_dir: str, digests: set[str]) -> _Prior:
    if not lake.exists(lake_dir, INGEST_LOG):
        return _Prior(set(), set())
    log = lake.read_arrow(lake_dir, INGEST_LOG)
    known = set(log.column("file_digest").to_pylist())
    incomplete: set[str] = set()
    if "complete" in log.column_names:  # a log written before the column: every file complete
        incomplete = {p for p, ok in zip(log.column("path").to_pylist(), log.column("complete").to_pylist(),
                                         strict=True) if ok is False}
    return _Prior(digests & known, incomplete)


def _content_key(kind: str | None = None) -> Any:
    """What makes a parsed row the same record as a committed one, besides its position: source,
    url, text for a document; source, reason, payload for a quarantine row. `kind` None: by the
    row's own `kind` column (parsed rows); "doc"/"bad": rows of `docs_raw`/`quarantine`."""
    from pyspark.sql import functions as F

    def part(name: str) -> Any:
        return F.coalesce(F.col(name), F.lit("\u0000"))  # null ≠ "" (concat_ws would drop nulls)

    def doc() -> Any:
        return F.concat_ws("\u001f", F.lit("doc"), "source", part("url"), "text")

    def bad() -> Any:
        return F.concat_ws("\u001f", F.lit("bad"), "source", "reason", part("payload"))

    if kind is None:
        return F.sha2(F.when(F.col("kind") == "doc", doc()).otherwise(bad()), 256)
    return F.sha2(doc() if kind == "doc" else bad(), 256)


def _mark_committed(parsed: Any, lake_dir: str, paths: set[str], batch: str) -> Any:
    """Rows of resumed files already written by an earlier attempt on the same path become `seen`.

    Position and content must both match, so a record the repair changed is new. File-level rows
    (record_no null) never match: the earlier attempt's row stays as history. Reads only the
    committed rows of those paths; runs only when a file resumes.
    """
    from pyspark.sql import functions as F

    if not paths:
        return parsed
    spark = parsed.sparkSession
    scope = F.col("source_file").isin(sorted(paths)) & F.col("record_no").isNotNull()
    # Rows of this very batch (a crash repair re-reading it) are not an earlier attempt's.
    prior = [lake.read_table(spark, lake_dir, name).df.filter(scope & (F.col("batch_id") != batch))
             .select("source_file", "record_no", _content_key(kind).alias("_key"))
             for name, kind in ((DOCS_RAW, "doc"), (QUARANTINE, "bad")) if lake.exists(lake_dir, name)]
    if not prior:
        return parsed
    seen = prior[0] if len(prior) == 1 else prior[0].unionByName(prior[1])
    seen = seen.distinct().withColumn("_seen", F.lit(True))
    key = F.when(scope, _content_key())  # null elsewhere: rows of other files never match
    marked = parsed.withColumn("_key", key).join(seen, ["source_file", "record_no", "_key"], "left")
    return (marked.withColumn("kind", F.when(F.col("_seen"), F.lit(SEEN)).otherwise(F.col("kind")))
            .drop("_key", "_seen"))


def _tally(parsed: Any, result: IngestResult) -> list[Any]:
    """Per (file, kind, lang, reason code) counts — the one pass that reads every split — added
    into `result`. The rows are what `_log_rows` turns into `ingest_log`."""
    from pyspark.sql import functions as F

    code = F.split("reason", ":").getItem(0).alias("reason")
    with _read_errors(parsed.sparkSession):
        by_file = parsed.groupBy("source_file", "kind", "lang", code).count().collect()
    incomplete: set[str] = set()
    for r in by_file:
        if r.kind == SEEN:
            result.skipped_records += r["count"]
            continue
        result.records += r["count"]
        if r.kind == "doc":
            result.docs += r["count"]
            result.per_lang[r.lang] = result.per_lang.get(r.lang, 0) + r["count"]
        else:
            result.quarantined += r["count"]
            result.per_reason[r.reason] = result.per_reason.get(r.reason, 0) + r["count"]
            if r.reason in R.INCOMPLETE:
                incomplete.add(r.source_file)
    result.incomplete_files = len(incomplete)
    return by_file


def _plan_splits(spark: Any, files: list[plan.InputFile], split_bytes: int) -> list[Split]:
    splits = [s for f in files for s in plan.splits_for(f, split_bytes)]
    cut = [s for s in splits if s.start > 0 or s.end >= 0]
    if not cut:
        return splits
    size = {f.path: f.size for f in files}
    df = _spread(spark, [(s.path, s.start, s.end if s.end >= 0 else size[s.path]) for s in cut],
                 "path string, start long, end long")
    with _read_errors(spark):
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


def _with_doc_ids(docs: Any, lake_dir: str, version: int | None) -> Any:
    """doc_id = hash(source, url, text); the n-th repeat of the same triple gets a `-n` suffix.

    Repeats are numbered after those in `docs_raw` at `version` (None: no table yet), in
    (file, line) order, so ids are unique in the table and the same on every re-run of the same
    history. The commit lands only on top of `version`: a concurrent batch that committed first
    makes this one renumber (two batches sharing a (url, text) never get the same id).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    base = F.substring(F.sha2(F.concat_ws("\u001f", "source", F.coalesce("url", F.lit("")), "text"),
                              256), 1, _ID_HEX)
    docs = docs.withColumn("_base", base).withColumn(
        "_rn", F.row_number().over(Window.partitionBy("_base").orderBy("source_file", "record_no")))
    if version is not None:
        prior = (lake.read_table(docs.sparkSession, lake_dir, DOCS_RAW, version=version).df
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
    prior = _already_ingested(lake_dir, set(digests.values()))
    fresh: dict[str, plan.InputFile] = {}
    for f in files:  # first path wins among byte-identical copies
        d = digests[f.path]
        if d not in prior.done and d not in fresh:
            fresh[d] = f
    result.skipped_files = len(files) - len(fresh)
    if not fresh:
        return result
    resumed = {f.path for f in fresh.values()} & prior.incomplete_paths
    result.resumed_files = len(resumed)
    result.files = len(fresh)
    result.batch_id = batch = plan.batch_id(list(fresh))
    splits = _plan_splits(spark, list(fresh.values()), cfg.split_bytes)
    limits = Limits(cfg.max_record_bytes, cfg.max_payload_bytes)
    parsed = (_spread(spark, [(s.path, s.format, s.start, s.end, s.newlines_before) for s in splits],
                      SPLIT_SCHEMA)
              .mapInPandas(_parse_partitions(limits), PARSED_SCHEMA)
              .withColumn("source", F.lit(result.source)).withColumn("batch_id", F.lit(batch))
              .transform(lambda df: _mark_committed(df, lake_dir, resumed, batch))
              .persist(StorageLevel.MEMORY_AND_DISK))
    try:
        by_file = _tally(parsed, result)
        app = f"sailyard.ingest.{batch}"
        # A crash after docs_raw committed: the re-run finishes the other tables (their app
        # transactions keep each commit single). Otherwise docs_raw is the gate: a concurrent run of
        # the same input that commits it first wins, and this one adds nothing.
        bad = parsed.filter("kind = 'bad'").select(*QUARANTINE_COLUMNS)
        log_rows = _log_rows(fresh, by_file, batch, result.source)
        log_df = spark.createDataFrame(log_rows, LOG_SCHEMA)
        _migrate_log(spark, lake_dir)
        counts = Counts(records=result.records, kept=result.docs, quarantined=result.quarantined)
        for attempt in range(_ID_RETRIES):
            # Checked on every attempt: an earlier attempt of this run may have committed docs_raw
            # and then lost a race on another table.
            repairing = lake.has_transaction(lake_dir, DOCS_RAW, app, 0)
            base_raw = lake.table_version(lake_dir, DOCS_RAW)
            docs = _with_doc_ids(parsed.filter("kind = 'doc'"), lake_dir, base_raw).select(*DOCS_RAW_COLUMNS)
            outputs = [  # ingest_log last: a file is logged only once its rows are in
                Output(DOCS_RAW, docs, rows=result.docs, mode="append", app_id=app, app_version=0,
                       base_version=base_raw, gate=not repairing),
                Output(QUARANTINE, bad, rows=result.quarantined, mode="append", partition_by=(),
                       sort_by=("source_file", "record_no"), app_id=app, app_version=0),
                Output(INGEST_LOG, log_df, rows=len(log_rows), mode="append", partition_by=(), sort_by=(),
                       app_id=app, app_version=0)]
            try:
                result.tables = commit_plan(lake_dir, StagePlan("ingest", {}, outputs, counts), run=run)
                break
            except AlreadyCommitted:
                return IngestResult(source=result.source, ignored_files=result.ignored_files,
                                    skipped_files=len(files), batch_id=batch, already_ingested=True)
            except TableConflictError:
                if attempt == _ID_RETRIES - 1:
                    raise
                continue  # another batch committed docs_raw: number repeats after its documents
    finally:
        parsed.unpersist()
    if result.records != result.docs + result.quarantined:  # pragma: no cover - a bug if it fires
        raise AssertionError(f"ingest counts do not reconcile: {result}")
    return result


@dataclass
class _FileCounts:
    docs: int = 0
    bad: int = 0
    seen: int = 0
    file_level: int = 0
    complete: bool = True


def _log_rows(fresh: dict[str, plan.InputFile], by_file: list[Any],
              batch: str, source: str) -> list[tuple[Any, ...]]:
    """One `ingest_log` row per file read (columns: LOG_SCHEMA)."""
    per_file: dict[str, _FileCounts] = {}
    for r in by_file:
        counts = per_file.setdefault(r.source_file, _FileCounts())
        if r.kind == "doc":
            counts.docs += r["count"]
        elif r.kind == SEEN:
            counts.seen += r["count"]
        else:
            counts.bad += r["count"]
            if r.reason in R.FILE_LEVEL:
                counts.file_level += r["count"]
            if r.reason in R.INCOMPLETE:
                counts.complete = False
    rows = []
    for digest, f in sorted(fresh.items(), key=lambda kv: kv[1].path):
        c = per_file.get(f.path, _FileCounts())
        read = c.docs + c.bad + c.seen - c.file_level
        rows.append((digest, f.path, f.format, f.size, batch, source, c.docs + c.bad, c.docs, c.bad,
                     c.complete, read))
    return rows


def _migrate_log(spark: Any, lake_dir: str) -> None:
    """An `ingest_log` written before `complete`/`records_read` existed gets them (every file it
    lists was read to its end: file-level problems used to be final), in one overwrite commit."""
    from pyspark.sql import functions as F

    if not lake.exists(lake_dir, INGEST_LOG):
        return
    old = lake.read_table(spark, lake_dir, INGEST_LOG)
    if "complete" in old.df.columns:
        return
    migrated = (old.df.withColumn("complete", F.lit(True))
                .withColumn("records_read", F.col("records").cast("long")))
    lake.write_table(migrated, lake_dir, INGEST_LOG, mode="overwrite", partition_by=(),
                     base_version=old.version, metadata={"job": "ingest", "migration": "ingest_log v2"})
