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

Work is proportional to the batch, not to the lake. The driver reads only the `ingest_log` rows
that can concern this batch (a logged file with the size of an input, an incomplete entry at an
input's path): a file whose size no logged file has cannot hold logged bytes, so it is hashed by
the same read that parses it, and only files whose size matches are hashed up front to be
skipped. The splits are parsed once, in tasks of about equal work, into a cached table that also
carries what reading learnt (each file's SHA-256, each JSONL range's newline count, from which
split line numbers are fixed up); doc ids number repeats against only the `docs_raw` ids equal
to one of the batch's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from data_engine import lake
from data_engine.batches import batch_chars
from data_engine.errors import InputError, TableConflictError
from data_engine.ingest import plan
from data_engine.ingest import reasons as R
from data_engine.ingest.config import IngestConfig
from data_engine.ingest.records import COLUMNS, Limits, ReadFacts, Split, read_split
from data_engine.stage import AlreadyCommitted, Counts, Output, StagePlan, commit_plan
from data_engine.tables import DOCS_RAW, INGEST_LOG, QUARANTINE

PARSED_SCHEMA = ("kind string, source_file string, record_no long, text string, url string, "
                 "lang string, id string, meta string, payload string, payload_size long, "
                 "payload_truncated boolean, reason string, base string, unit int, digest string, "
                 "newlines long")
"""The records' columns, then: `base` (a document's doc id before repeats are numbered), `unit`
(the split it came from) and, on the one `kind = 'unit'` row each split ends with, `digest` (its
file's SHA-256, if it hashed it) and `newlines` (its JSONL range's newline count)."""
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
UNIT = "unit"
"""`kind` of the row that closes each split: what reading it learnt, not a record."""
_CHUNK_ROWS = 2000
_BROADCAST_IDS = 500_000
"""Numbered repeats up to this many are joined back by broadcast (no shuffle of the text)."""
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


def doc_id_base(source: str, url: str | None, text: str) -> str:
    """doc_id before repeats are numbered: the first 128 bits of SHA-256 over (source, url, text),
    the bytes Spark's `sha2(concat_ws('\\x1f', source, coalesce(url, ''), text), 256)` hashes."""
    key = f"{source}\x1f{url or ''}\x1f{text}".encode()
    return hashlib.sha256(key).hexdigest()[:_ID_HEX]


def _fields(ddl: str) -> list[tuple[str, str]]:
    return [(name, kind) for name, kind in (field.split() for field in ddl.split(", "))]


def _arrow_schema() -> Any:
    import pyarrow as pa

    kinds = {"string": pa.string(), "long": pa.int64(), "int": pa.int32(), "boolean": pa.bool_()}
    return pa.schema([(name, kinds[kind]) for name, kind in _fields(PARSED_SCHEMA)])


def _schema(ddl: str) -> Any:
    """A StructType for one of the flat schemas here, built without Spark's SQL parser (its first
    parses cost seconds of a fresh JVM's CPU, a real share of a small batch)."""
    from pyspark.sql import types as T

    kinds = {"string": T.StringType(), "long": T.LongType(), "int": T.IntegerType(),
             "boolean": T.BooleanType()}
    return T.StructType([T.StructField(name, kinds[kind]) for name, kind in _fields(ddl)])


def _read_units(limits: Limits, source: str, max_chars: int) -> Callable[[Iterator[Any]], Iterator[Any]]:
    """The executors' side of the parse: each input row is a JSON list of units (one task's work)."""

    def read(batches: Iterator[Any]) -> Iterator[Any]:
        schema = _arrow_schema()
        for batch in batches:
            for packed in batch.column(0).to_pylist():
                for unit in json.loads(packed):
                    yield from _unit_batches(unit, limits, source, max_chars, schema)

    return read


def _unit_batches(unit: dict[str, Any], limits: Limits, source: str, max_chars: int,
                  schema: Any) -> Iterator[Any]:
    """Arrow batches of one unit's rows — at most `_CHUNK_ROWS` rows and about `max_chars`
    characters each, whatever the records' sizes — then the unit's own row."""
    import pyarrow as pa

    names = list(COLUMNS)

    def batch(rows: list[dict[str, Any]], bases: list[str | None]) -> Any:
        n = len(rows)
        arrays = [pa.array([r[c] for r in rows], schema.field(c).type) for c in names]
        arrays += [pa.array(bases, pa.string()), pa.array([unit["unit"]] * n, pa.int32()),
                   pa.nulls(n, pa.string()), pa.nulls(n, pa.int64())]
        return pa.RecordBatch.from_arrays(arrays, schema=schema)

    digest = None
    newlines = 0
    if unit["op"] == "hash":
        digest = plan.sha256_file(unit["path"])
    else:
        split = Split(unit["path"], unit["format"], unit["start"], unit["end"], 0, unit["digest"])
        facts = ReadFacts()
        rows: list[dict[str, Any]] = []
        bases: list[str | None] = []
        chars = 0
        for row in read_split(split, limits, facts):
            rows.append(row)
            if row["kind"] == "doc":
                bases.append(doc_id_base(source, row["url"], row["text"]))
                chars += len(row["text"])
            else:
                bases.append(None)
                chars += len(row["payload"] or "")
            if len(rows) >= _CHUNK_ROWS or chars >= max_chars:
                yield batch(rows, bases)
                rows, bases, chars = [], [], 0
        if rows:
            yield batch(rows, bases)
        digest, newlines = facts.digest, facts.newlines
    info = {c: None for c in names} | {"kind": UNIT, "source_file": unit["path"]}
    yield pa.RecordBatch.from_arrays(
        [pa.array([info[c]], schema.field(c).type) for c in names]
        + [pa.nulls(1, pa.string()), pa.array([unit["unit"]], pa.int32()), pa.array([digest], pa.string()),
           pa.array([newlines], pa.int64())], schema=schema)


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
    import pyarrow as pa

    for batch in batches:
        paths = batch.column(0).to_pylist()
        yield pa.RecordBatch.from_arrays([pa.array(paths, pa.string()),
                                          pa.array([plan.sha256_file(p) for p in paths], pa.string())],
                                         names=["path", "digest"])


def _spread(spark: Any, rows: list[tuple[Any, ...]], schema: str) -> Any:
    """A small driver-side list as a DataFrame with one row per task, so they run in parallel."""
    return spark.createDataFrame(spark.sparkContext.parallelize(rows, max(1, len(rows))), _schema(schema))


def _digests(spark: Any, files: list[plan.InputFile]) -> dict[str, str]:
    if not files:
        return {}
    df = _spread(spark, [(f.path,) for f in files], "path string")
    with _read_errors(spark):
        rows = df.mapInArrow(_digest_partitions, _schema("path string, digest string")).collect()
    return {r.path: r.digest for r in rows}


@dataclass(frozen=True)
class _Prior:
    done: set[str]
    """Digests in `ingest_log` of the logged files that have the size of an input, complete or
    not: bytes with one of these digests are never read again."""
    sizes: set[int]
    """The sizes of those logged files."""
    incomplete_paths: set[str]
    """Inputs' paths with an incomplete attempt: new bytes there are read as a continuation."""


def _prior(spark: Any, lake_dir: str, files: list[plan.InputFile]) -> _Prior:
    """The `ingest_log` rows that can concern `files`, found by Spark: the driver holds only those."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if not lake.exists(lake_dir, INGEST_LOG):
        return _Prior(set(), set(), set())
    log = lake.read_table(spark, lake_dir, INGEST_LOG).df
    wanted = spark.createDataFrame([(f.path, f.size) for f in files], _schema("path string, size long"))
    no_text = F.lit(None).cast(T.StringType())
    same_size = (log.join(F.broadcast(wanted.select("size").distinct()), "size", "left_semi")
                 .select(F.lit("size").alias("why"), "file_digest", "size", no_text.alias("path")))
    rows = same_size
    if "complete" in log.columns:  # a log written before the column: every file complete
        incomplete = (log.filter(F.col("complete") == F.lit(False))
                      .join(F.broadcast(wanted.select("path")), "path", "left_semi")
                      .select(F.lit("path").alias("why"), F.lit(None).cast(T.StringType()).alias("file_digest"),
                              F.lit(None).cast(T.LongType()).alias("size"), "path"))
        rows = same_size.unionByName(incomplete)
    found = rows.collect()
    return _Prior({r.file_digest for r in found if r.why == "size"}, {r.size for r in found if r.why == "size"},
                  {r.path for r in found if r.why == "path"})


def _fresh(spark: Any, files: list[plan.InputFile], prior: _Prior) -> tuple[list[plan.InputFile], dict[str, str]]:
    """The files to read (path order) and the digests known before reading.

    Files of equal size are the only ones that can be byte-identical — to a logged file or to
    another input — so only those are hashed up front; the first path wins among identical copies.
    """
    sizes: dict[int, int] = {}
    for f in files:
        sizes[f.size] = sizes.get(f.size, 0) + 1
    suspects = [f for f in files if f.size in prior.sizes or sizes[f.size] > 1]
    known = _digests(spark, suspects)
    fresh: list[plan.InputFile] = []
    taken: set[str] = set()
    for f in files:
        d = known.get(f.path)
        if d is not None:
            if d in prior.done or d in taken:
                continue
            taken.add(d)
        fresh.append(f)
    return fresh, known


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


_FILE_KEYS = ("source_file", "kind", "lang", "reason", "unit", "digest", "newlines")


def _keyed(parsed: Any) -> Any:
    from pyspark.sql import functions as F

    return parsed.select("source_file", "kind", "lang", F.split("reason", ":").getItem(0).alias("reason"),
                         *[F.when(F.col("kind") == UNIT, F.col(c)).alias(c) for c in ("unit", "digest", "newlines")],
                         F.when(F.col("kind") == "doc", F.col("base")).alias("base"))


@dataclass
class _Tally:
    by_file: list[Any]
    """(file, kind, lang, reason code) → count rows."""
    units: list[Any]
    """The units' own rows: `unit`, `digest`, `newlines`."""
    bases: Any
    """DataFrame (base, _n): how often each document id base occurs in the batch (cached, small)."""
    release: Callable[[], Any]


def _tally(parsed: Any) -> _Tally:
    """Counts per (file, kind, lang, reason code), the units' own rows, and per doc id base.

    The one pass that reads every split (it fills the cache). Both groupings come from one scan
    (grouping sets); only the per-file rows reach the driver, the per-base counts stay a cached
    DataFrame for numbering repeats."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    keys = list(_FILE_KEYS)
    agg = (_keyed(parsed).groupingSets([keys, ["base"]], *keys, "base")
           .agg(F.count(F.lit(1)).alias("count"), F.grouping("base").alias("_by_file"))
           .persist(StorageLevel.MEMORY_AND_DISK))
    with _read_errors(parsed.sparkSession):
        rows = agg.filter(F.col("_by_file") == 1).drop("base", "_by_file").collect()
    bases = (agg.filter((F.col("_by_file") == 0) & F.col("base").isNotNull())
             .select("base", F.col("count").alias("_n")))
    return _Tally([r for r in rows if r.kind != UNIT], [r for r in rows if r.kind == UNIT], bases,
                  agg.unpersist)


def _recount(rows: Any, paths: set[str]) -> list[Any]:
    """The per-file counts of `paths` again (resumed files, once their committed records are marked)."""
    from pyspark.sql import functions as F

    keyed = _keyed(rows.filter(F.col("source_file").isin(sorted(paths))))
    with _read_errors(rows.sparkSession):
        return keyed.groupBy(*_FILE_KEYS).count().collect()


def _count(by_file: list[Any], result: IngestResult) -> None:
    """Add the counts of `_tally` rows into `result`."""
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


@dataclass(frozen=True)
class _Work:
    units: list[dict[str, Any]]
    """What the executors do, in (path, start) order: `op` "read" (a split) or "hash" (a whole
    file cut into several splits and not hashed yet); `unit` is its index."""
    tasks: list[list[int]]
    """Unit indexes per task."""


def _plan_work(files: list[plan.InputFile], known: dict[str, str], split_bytes: int,
               parallelism: int) -> _Work:
    size = plan.split_size(files, split_bytes, parallelism)
    units: list[dict[str, Any]] = []
    costs: list[float] = []
    for f in files:
        splits = plan.splits_for(f, size)
        for s in splits:
            units.append({"op": "read", "path": f.path, "format": f.format, "start": s.start,
                          "end": s.end, "digest": s.digest})
            costs.append(plan.split_cost(s, f.size))
        if len(splits) > 1 and f.path not in known:
            units.append({"op": "hash", "path": f.path})
            costs.append(plan.hash_cost(f.size))
    for i, u in enumerate(units):
        u["unit"] = i
    bins = max(parallelism, math.ceil(sum(costs) / (size + plan.OPEN_COST)))
    return _Work(units, plan.pack(costs, bins))


def _line_offsets(work: _Work, unit_rows: list[Any]) -> dict[int, int]:
    """unit → newlines before its range, for the JSONL units that do not start their file: their
    readers number lines from 0, and this turns those numbers into the file's line numbers."""
    newlines = {r.unit: r.newlines for r in unit_rows}
    offsets: dict[int, int] = {}
    running: dict[str, int] = {}
    for u in work.units:
        if u["op"] != "read" or u["format"] != "jsonl":
            continue
        before = running.get(u["path"], 0)
        if u["start"] > 0 and before:
            offsets[u["unit"]] = before
        running[u["path"]] = before + int(newlines.get(u["unit"]) or 0)
    return offsets


def _with_line_numbers(parsed: Any, offsets: dict[int, int]) -> Any:
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if not offsets:
        return parsed
    table = F.create_map(*[c for unit, n in sorted(offsets.items())
                           for c in (F.lit(unit), F.lit(n).cast(T.LongType()))])
    shift = F.coalesce(F.element_at(table, F.col("unit")), F.lit(0).cast(T.LongType()))
    return parsed.withColumn("record_no", F.col("record_no") + shift)


def _with_doc_ids(docs: Any, lake_dir: str, version: int | None,
                  bases: Any = None) -> tuple[Any, Callable[[], None]]:
    """doc_id = hash(source, url, text); the n-th repeat of the same triple gets a `-n` suffix.

    Repeats are numbered after those in `docs_raw` at `version` (None: no table yet), in
    (file, line) order, so ids are unique in the table and the same on every re-run of the same
    history. The commit lands only on top of `version`: a concurrent batch that committed first
    makes this one renumber (two batches sharing a (url, text) never get the same id).

    Only ids that repeat are numbered: those more than once in the batch (`bases`: (base, _n),
    counted by the tally; computed from `docs` when not given — it may over-count, never under)
    and those equal to an id already in `docs_raw` (a semi-join with the batch's ids). Numbering
    reads just (id, unit, line) of those documents and is joined back — by broadcast when few —
    so the text is never shuffled for it. Returns the documents with `doc_id` and the function
    that frees what was cached for it.
    """
    from pyspark import StorageLevel
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if bases is None:
        bases = docs.groupBy("base").agg(F.count(F.lit(1)).alias("_n"))
    repeated = bases.filter(F.col("_n") > 1).select("base", F.lit(0).cast(T.LongType()).alias("_prior"))
    if version is not None:
        prior = (lake.read_table(docs.sparkSession, lake_dir, DOCS_RAW, version=version).df
                 .select(F.substring("doc_id", 1, _ID_HEX).alias("base"))
                 .join(bases.select("base"), "base", "left_semi")
                 .groupBy("base").agg(F.count(F.lit(1)).alias("_prior")))
        repeated = (repeated.unionByName(prior).groupBy("base")
                    .agg(F.sum("_prior").cast(T.LongType()).alias("_prior")))
    repeated = repeated.persist(StorageLevel.MEMORY_AND_DISK)
    cached = [repeated]

    def release() -> None:
        for df in cached:
            df.unpersist()

    if repeated.count() == 0:  # the usual case: nothing to number, nothing to join
        return docs.withColumn("doc_id", F.col("base")), release
    # Occurrence numbers without a window over each id (a page copied a million times would be one
    # task's sort): the repeats are sorted across all tasks (range-partitioned, so one id's copies
    # may span several), each task's run of an id is counted, and a run's offset is the sum of
    # the runs of the same id in earlier tasks — a window over at most one row per task and id.
    members = (docs.select("base", "unit", "source_file", "record_no").join(repeated, "base")
               .orderBy("base", "source_file", "record_no")
               .select("*", F.spark_partition_id().alias("_part"), F.monotonically_increasing_id().alias("_pos"))
               # Checkpointed, not just cached: the positions are nondeterministic, and the self-join
               # below re-aliases one side, which misses a cache and recomputes other positions.
               .localCheckpoint(eager=True))
    earlier = Window.partitionBy("base").orderBy("_part").rowsBetween(Window.unboundedPreceding, -1)
    runs = (members.groupBy("_part", "base").agg(F.count(F.lit(1)).alias("_n"), F.min("_pos").alias("_first"))
            .select("_part", "base", "_first", F.coalesce(F.sum("_n").over(earlier), F.lit(0)).alias("_before")))
    occurrence = F.col("_prior") + F.col("_before") + F.col("_pos") - F.col("_first")
    numbered = (members.join(runs, ["_part", "base"])
                .select("unit", "record_no", F.when(occurrence == 0, F.col("base"))
                        .otherwise(F.concat("base", F.lit("-"), occurrence.cast(T.StringType()))).alias("_id"))
                .persist(StorageLevel.MEMORY_AND_DISK))
    cached.append(numbered)
    right = F.broadcast(numbered) if numbered.count() <= _BROADCAST_IDS else numbered
    out = (docs.join(right, ["unit", "record_no"], "left")
           .withColumn("doc_id", F.coalesce("_id", "base")).drop("_id"))
    return out, release


def ingest(spark: Any, lake_dir: str, inputs: list[str], *, source: str | None = None,
           cfg: IngestConfig = IngestConfig(), run: Any = None) -> IngestResult:
    """Read `inputs` into `docs_raw` and `quarantine`; returns the reconciled counts."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    files, ignored = plan.discover(inputs)
    result = IngestResult(source=source or plan.default_source(inputs), ignored_files=len(ignored))
    prior = _prior(spark, lake_dir, files)
    todo, known = _fresh(spark, files, prior)
    result.skipped_files = len(files) - len(todo)
    if not todo:
        return result
    resumed = {f.path for f in todo} & prior.incomplete_paths
    result.resumed_files = len(resumed)
    result.files = len(todo)
    work = _plan_work(todo, known, cfg.split_bytes, spark.sparkContext.defaultParallelism)
    limits = Limits(cfg.max_record_bytes, cfg.max_payload_bytes)
    # The parsed splits are cached on disk, not on the heap: a batch is as large as the input and
    # the driver heap (local mode) or executor heap holds only the tasks' working sets.
    parsed = (_spread(spark, [(json.dumps([work.units[i] for i in task]),) for task in work.tasks],
                      "units string")
              .mapInArrow(_read_units(limits, result.source, batch_chars(spark)), _schema(PARSED_SCHEMA))
              .persist(StorageLevel.DISK_ONLY))
    releases: list[Callable[[], Any]] = [parsed.unpersist]
    try:
        tally = _tally(parsed)
        releases.append(tally.release)
        by_file = tally.by_file
        digests = dict(known) | {r.source_file: r.digest for r in tally.units if r.digest is not None}
        fresh = {digests[f.path]: f for f in todo}
        result.batch_id = batch = plan.batch_id(list(fresh))
        rows = (_with_line_numbers(parsed.filter(F.col("kind") != UNIT), _line_offsets(work, tally.units))
                .withColumn("source", F.lit(result.source)).withColumn("batch_id", F.lit(batch)))
        if resumed:
            rows = _mark_committed(rows, lake_dir, resumed, batch)
            by_file = [r for r in by_file if r.source_file not in resumed] + _recount(rows, resumed)
        _count(by_file, result)
        app = f"sailyard.ingest.{batch}"
        # A crash after docs_raw committed: the re-run finishes the other tables (their app
        # transactions keep each commit single). Otherwise docs_raw is the gate: a concurrent run of
        # the same input that commits it first wins, and this one adds nothing.
        bad = rows.filter(F.col("kind") == "bad").select(*QUARANTINE_COLUMNS)
        if not result.quarantined:  # nothing to find: do not scan the whole cached batch for it
            bad = spark.createDataFrame([], bad.schema)
        log_rows = _log_rows(fresh, by_file, batch, result.source)
        log_df = spark.createDataFrame(log_rows, _schema(LOG_SCHEMA))
        _migrate_log(spark, lake_dir)
        counts = Counts(records=result.records, kept=result.docs, quarantined=result.quarantined)
        for attempt in range(_ID_RETRIES):
            # Checked on every attempt: an earlier attempt of this run may have committed docs_raw
            # and then lost a race on another table.
            repairing = lake.has_transaction(lake_dir, DOCS_RAW, app, 0)
            base_raw = lake.table_version(lake_dir, DOCS_RAW)
            docs, release = _with_doc_ids(rows.filter(F.col("kind") == "doc"), lake_dir, base_raw,
                                          tally.bases)
            releases.append(release)
            outputs = [  # ingest_log last: a file is logged only once its rows are in
                Output(DOCS_RAW, docs.select(*DOCS_RAW_COLUMNS), rows=result.docs, mode="append",
                       app_id=app, app_version=0, base_version=base_raw, gate=not repairing),
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
        for release in reversed(releases):
            release()
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
    from pyspark.sql import types as T

    if not lake.exists(lake_dir, INGEST_LOG):
        return
    old = lake.read_table(spark, lake_dir, INGEST_LOG)
    if "complete" in old.df.columns:
        return
    migrated = (old.df.withColumn("complete", F.lit(True))
                .withColumn("records_read", F.col("records").cast(T.LongType())))
    lake.write_table(migrated, lake_dir, INGEST_LOG, mode="overwrite", partition_by=(),
                     base_version=old.version, metadata={"job": "ingest", "migration": "ingest_log v2"})
