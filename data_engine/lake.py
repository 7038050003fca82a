"""The lake: Delta tables under one root URI, written from Spark, readable by any Delta reader.

Each table lives at `<lake>/<name>`. A lake is a URI: a local path becomes `file:///abs/path`;
`hdfs://`, `s3a://`, `gs://`, `abfss://` roots go to Spark as they are and to delta-rs with its
matching scheme (`s3a` → `s3`) and the storage options in `$SAILYARD_DELTA_STORAGE_OPTIONS`.

With the delta-spark jars on the classpath Spark commits natively. Without them (our default: the
jars come from Maven) a write has two halves, so a stage can prepare all its tables before it
commits any (`stage_write`, then `commit` or `discard`):

1. Spark writes Parquet into `<table>/_staging/<attempt>` while counting the rows it writes
   (`observe`). The files are listed **through Spark's Hadoop FileSystem for the table URI** — the
   filesystem the executors wrote to, never the driver's local disk — and their footers must hold
   exactly the rows Spark wrote; otherwise the driver cannot see the executors' output and the
   write fails before anything is committed. Then the files are renamed next to the table's other
   files.
2. delta-rs commits them as one new version without rewriting a byte. Until that commit lands no
   reader sees them: a job killed halfway leaves the previous version as it was, and `vacuum`
   removes what it left behind. While a writer runs, a heartbeat file beside its attempt folder
   is touched every `HEARTBEAT_SECONDS`; `vacuum` never deletes anything of a live attempt.

Verbs: `read_table`, `read_arrow`, `write_table` (= `stage_write` + `commit`), `table_version`,
`exists`, `history`, `vacuum`.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import shutil
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from data_engine.errors import (
    ConfigError,
    LakeVisibilityError,
    SchemaMismatchError,
    TableConflictError,
    TableNotFoundError,
)

WriteMode = Literal["error", "append", "overwrite"]
STAGING = "_staging"  # underscore: Spark, Delta and our vacuum all treat it as not-data
_CREATE_LOCK = "_sailyard_create.lock"
_ATTEMPT_KEY = "sailyard.attempt"  # commit-info key naming the write attempt that made a version
_TOUCHED_KEY = "sailyard.touched"  # commit-info key: the partitions a commit added to or removed from
#: Commits that change no data: they never conflict with a stage's decision.
MAINTENANCE_OPERATIONS = ("VACUUM START", "VACUUM END")
HEARTBEAT_SUFFIX = ".alive"
HEARTBEAT_SECONDS = 30.0
#: Below this retention `vacuum` wants `force`: younger files may belong to a reader of an old version.
MIN_RETENTION_HOURS = 1.0
_COMMIT_RETRIES = 8
_REMOTE_SCHEMES = ("hdfs", "viewfs", "s3a", "s3", "gs", "abfss", "abfs")


class _Unset:
    """Marker type for 'argument not given' where None is a meaningful value."""


#: `base_version` not given (None means "based on no table").
UNSET: Any = _Unset()


# --------------------------------------------------------------------------------------------
# URIs


def lake_uri(lake: str | Path) -> str:
    """The lake root as a URI: `file:///abs` for local paths, remote URIs unchanged."""
    text = str(lake)
    scheme = urllib.parse.urlparse(text).scheme
    if scheme in _REMOTE_SCHEMES:
        return text.rstrip("/")
    if scheme not in ("", "file"):
        raise ConfigError(f"lake {text!r}: unsupported scheme {scheme!r}; use a local path, file://, "
                          f"or one of {', '.join(s + '://' for s in _REMOTE_SCHEMES)}")
    # Raw, not percent-encoded: Hadoop's Path(String) escapes by itself (`%20` would become a
    # literal "%20"), and `lang=tha` must stay as Spark names partition folders.
    path = _local(text) if scheme == "file" else Path(text)
    return "file://" + str(path.expanduser().resolve())


def table_uri(lake: str | Path, name: str) -> str:
    return f"{lake_uri(lake)}/{name}"


def is_local(uri: str) -> bool:
    return uri.startswith("file:")


def _local(uri: str) -> Path:
    rest = uri[len("file:"):]
    if rest.startswith("//"):
        rest = rest[2:]
        rest = rest[rest.index("/"):] if "/" in rest else "/"  # drop an authority (file://host/x)
    return Path(rest)


def table_path(lake: str | Path, name: str) -> Any:
    """A local table's folder as a Path; a remote table's URI."""
    uri = table_uri(lake, name)
    return _local(uri) if is_local(uri) else uri  # noqa: RET504


def _rs(uri: str) -> tuple[str, dict[str, str] | None]:
    """The URI and storage options delta-rs wants for a table URI."""
    if is_local(uri):
        return str(_local(uri)), None
    scheme, rest = uri.split("://", 1)
    rs_scheme = {"s3a": "s3"}.get(scheme, scheme)
    options = os.environ.get("SAILYARD_DELTA_STORAGE_OPTIONS")
    try:
        parsed = json.loads(options) if options else None
    except ValueError as exc:
        raise ConfigError(f"SAILYARD_DELTA_STORAGE_OPTIONS is not a JSON object: {exc}") from None
    return f"{rs_scheme}://{rest}", parsed


def _spark_files(dt: Any, table: str) -> list[str]:
    """The version's data files as URIs under our (raw) table URI. delta-rs percent-encodes the
    table root in `file_uris()` (`my%20lake`) but not the relative part (the on-disk name)."""
    root_uri = str(dt.table_uri).rstrip("/") + "/"
    root_path = urllib.parse.urlparse(root_uri).path
    prefixes = (root_uri, root_path, urllib.parse.unquote(root_path))
    out = []
    for f in dt.file_uris():
        rel = next((f[len(p):] for p in prefixes if p and f.startswith(p)), None)
        out.append(f"{table}/{rel}" if rel is not None else _spark_file_uri(f, table))
    return out


def _spark_file_uri(rs_file: str, table: str) -> str:
    """A file of delta-rs's listing as a URI Spark resolves on every node (no bare paths: on a
    cluster a bare path resolves against `fs.defaultFS`, often HDFS)."""
    if rs_file.startswith("/"):
        return "file://" + rs_file
    if "://" not in rs_file:
        return f"{table}/{rs_file}"
    scheme, rest = rs_file.split("://", 1)
    want = table.split("://", 1)[0]
    return f"{want}://{rest}" if scheme in ("s3", "az") and want != scheme else rs_file


# --------------------------------------------------------------------------------------------
# Table state


@dataclass(frozen=True)
class Table:
    """A table pinned at one version, with a DataFrame over exactly that version's files."""

    name: str
    path: Any
    version: int
    df: Any


@dataclass(frozen=True)
class WriteResult:
    name: str
    path: Any
    version: int
    rows: int
    files: int
    committed: bool  # False when an app transaction showed this exact write was already committed


def exists(lake: str | Path, name: str) -> bool:
    return table_version(lake, name) is not None


def table_version(lake: str | Path, name: str) -> int | None:
    """Latest committed version, or None when the table does not exist."""
    from deltalake import DeltaTable

    uri, options = _rs(table_uri(lake, name))
    if not DeltaTable.is_deltatable(uri, storage_options=options):
        return None
    return DeltaTable(uri, storage_options=options).version()


def _open(lake: str | Path, name: str, version: int | None = None) -> Any:
    from deltalake import DeltaTable

    uri, options = _rs(table_uri(lake, name))
    if not DeltaTable.is_deltatable(uri, storage_options=options):
        raise TableNotFoundError(f"no Delta table '{name}' in lake {lake_uri(lake)} "
                                 f"(looked for {uri}/_delta_log); run the job that writes it first")
    try:
        return DeltaTable(uri, version=version, storage_options=options)
    except Exception as exc:
        raise TableNotFoundError(f"table '{name}' has no version {version}: {exc}") from exc


def first_existing(lake: str | Path, names: Sequence[str], *, purpose: str) -> str:
    """The first of `names` that exists in the lake: a job's default input is the most curated
    table available."""
    for name in names:
        if exists(lake, name):
            return name
    raise TableNotFoundError(f"nothing to {purpose} in lake {lake_uri(lake)}: none of "
                             f"{', '.join(names)} exists; run the job that writes one of them first")


def history(lake: str | Path, name: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Commit infos, newest first; sailyard's keys of a commit made natively by Spark (kept in
    Delta's `userMetadata`) are lifted to the top level like delta-rs's custom metadata."""
    entries = _open(lake, name).history(limit)
    for entry in entries:
        raw = entry.get("userMetadata")
        if isinstance(raw, str) and raw.startswith("{"):
            try:
                entry.update({k: v for k, v in json.loads(raw).items() if k not in entry})
            except ValueError:
                pass
    return entries


def read_arrow(lake: str | Path, name: str, *, version: int | None = None,
               columns: Sequence[str] | None = None) -> Any:
    """The table (at `version`, default latest) as a pyarrow Table, without Spark."""
    import pyarrow.fs as pafs

    dt = _open(lake, name, version)
    uri = table_uri(lake, name)
    cols = list(columns) if columns else None
    if not is_local(uri):
        return dt.to_pyarrow_dataset().to_table(columns=cols, use_threads=False)
    # A SubTreeFileSystem keeps pyarrow's scanner off delta-rs's Python filesystem, whose threads
    # can abort the interpreter at exit (delta-io/delta-rs#2184).
    fs = pafs.SubTreeFileSystem(str(_local(uri)), pafs.LocalFileSystem())
    return dt.to_pyarrow_table(columns=cols, filesystem=fs)


def read_table(spark: Any, lake: str | Path, name: str, *, version: int | None = None) -> Table:
    """A DataFrame over the table pinned at `version` (default: the latest)."""
    import pyarrow as pa
    from pyspark.sql.pandas.types import from_arrow_schema

    from data_engine.spark import delta_native

    dt = _open(lake, name, version)
    pinned = dt.version()
    uri = table_uri(lake, name)
    path = table_path(lake, name)
    if delta_native(spark):
        df = spark.read.format("delta").option("versionAsOf", pinned).load(uri)
        return Table(name, path, pinned, df)
    schema = from_arrow_schema(pa.schema(dt.schema().to_arrow()))
    files = _spark_files(dt, uri)
    if not files:
        df = spark.createDataFrame([], schema)
    else:
        df = (spark.read.schema(schema).option("basePath", uri)
              .parquet(*files).select(*schema.fieldNames()))
    return Table(name, path, pinned, df)


# --------------------------------------------------------------------------------------------
# Spark's filesystem, through the JVM


class _HadoopFS:
    """The Hadoop FileSystem Spark uses for a URI: what the executors wrote is visible here."""

    def __init__(self, spark: Any, uri: str) -> None:
        self._jvm = spark.sparkContext._jvm
        self._conf = spark.sparkContext._jsc.hadoopConfiguration()
        self.fs = self._path(uri).getFileSystem(self._conf)

    def _path(self, uri: str) -> Any:
        return self._jvm.org.apache.hadoop.fs.Path(uri)

    def data_files(self, root: str) -> list[tuple[str, str, int, int, int]]:
        """(path relative to `root`, uri, size, mtime ms, rows) of every Parquet data file under
        `root`, skipping hidden and `_`-prefixed names (`_SUCCESS`, `.crc` files, `_temporary`)."""
        top = self._path(root)
        if not self.fs.exists(top):
            return []
        reader = self._jvm.org.apache.parquet.hadoop.ParquetFileReader
        input_file = self._jvm.org.apache.parquet.hadoop.util.HadoopInputFile
        # Compare decoded URI paths: qualified strings differ in authority and escaping.
        prefix = self.fs.makeQualified(top).toUri().getPath().rstrip("/") + "/"
        out = []
        listing = self.fs.listFiles(top, True)
        while listing.hasNext():
            status = listing.next()
            qualified = self.fs.makeQualified(status.getPath())
            uri, file_path = qualified.toString(), qualified.toUri().getPath()
            if not file_path.startswith(prefix):
                raise LakeVisibilityError(f"listing {root} returned {uri}, outside it")
            rel = file_path[len(prefix):]
            if any(p.startswith((".", "_")) for p in rel.split("/")) or not rel.endswith(".parquet"):
                continue
            handle = reader.open(input_file.fromStatus(status, self._conf))
            try:
                rows = int(handle.getRecordCount())
            finally:
                handle.close()
            out.append((rel, uri, int(status.getLen()), int(status.getModificationTime()), rows))
        return sorted(out)

    def rename(self, src: str, dst: str) -> None:
        target = self._path(dst)
        self.fs.mkdirs(target.getParent())
        if not self.fs.rename(self._path(src), target):
            raise OSError(f"could not move {src} to {dst}")
        checksum = self._jvm.org.apache.hadoop.fs.Path(target.getParent(), f".{target.getName()}.crc")
        if self.fs.exists(checksum):  # a local checksum twin: not data, and no log names it
            self.fs.delete(checksum, False)

    def delete(self, uri: str, recursive: bool = False) -> None:
        try:
            self.fs.delete(self._path(uri), recursive)
        except Exception:  # best effort: vacuum removes whatever is left
            pass

    def touch(self, uri: str) -> None:
        self.fs.create(self._path(uri), True).close()

    def set_mtime(self, uri: str) -> None:
        self.fs.setTimes(self._path(uri), int(time.time() * 1000), -1)


class _Heartbeat:
    """Proof of life beside the attempt folder (its Spark job may write inside that folder for
    hours without changing the folder's mtime). On local and mounted lakes the writer holds an
    flock on the file — the kernel drops it the moment the writer dies, so `vacuum` knows exactly;
    elsewhere a thread keeps the file's mtime fresh."""

    def __init__(self, fs: _HadoopFS, uri: str) -> None:
        self.fs, self.uri = fs, uri
        self._stop = threading.Event()
        self._handle: Any = None
        if is_local(uri):
            path = _local(uri)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(path, "a+")  # noqa: SIM115 - held until stop()
            fcntl.flock(self._handle, fcntl.LOCK_EX)
            return
        fs.touch(uri)
        self._thread = threading.Thread(target=self._beat, name="sailyard-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                self.fs.set_mtime(self.uri)
            except Exception:  # the JVM is going away; vacuum will judge by age
                return

    def stop(self) -> None:
        self._stop.set()
        if self._handle is not None:
            _local(self.uri).unlink(missing_ok=True)
            self._handle.close()  # releases the lock
            self._handle = None
            return
        self.fs.delete(self.uri)


def lock_held(path: Path) -> bool:
    """Whether some live process holds an flock on `path` (the kernel drops it when the holder
    dies): a local heartbeat is alive, an export's working folder owned, exactly while it is."""
    try:
        fd = os.open(path, os.O_RDONLY)  # never create one
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops our probe's lock
    return False


# --------------------------------------------------------------------------------------------
# Writes


@dataclass
class StagedWrite:
    """A write whose files are in the table folder, verified, and not yet committed."""

    name: str
    lake: str
    uri: str
    mode: str
    partition_by: list[str]
    replace_partitions: Mapping[str, str | Sequence[str]] | None
    app_id: str | None
    app_version: int | None
    base: int | None
    strict: bool  # commit only on top of `base` (appends included)
    schema: Any = None
    attempt: str = ""
    files: list[tuple[str, int, int, int, dict[str, str]]] = field(default_factory=list)  # rel, size, mtime, rows
    rows: int = 0
    skipped: bool = False  # the app transaction was already committed when the write started
    native_df: Any = None
    fs: Any = None
    heartbeat: Any = None
    committed: bool = False

    @property
    def touched(self) -> list[dict[str, str]]:
        seen = {json.dumps(p, sort_keys=True) for *_, p in self.files}
        return [json.loads(s) for s in sorted(seen)]


def write_table(df: Any, lake: str | Path, name: str, *, mode: WriteMode = "error",
                partition_by: Sequence[str] = ("lang",),
                replace_partitions: Mapping[str, str | Sequence[str]] | None = None,
                sort_by: Sequence[str] = (),
                app_id: str | None = None, app_version: int | None = None,
                base_version: int | None | _Unset = UNSET,
                metadata: Mapping[str, Any] | None = None) -> WriteResult:
    """Commit `df` as one new version of `<lake>/<name>`.

    Args:
        mode: "error" creates the table and fails if it exists; "append" adds rows (creating the
            table if needed); "overwrite" replaces all rows, or only the partitions named in
            `replace_partitions` (e.g. `{"stage": "exact"}` or `{"stage": ["url", "exact"]}`).
        partition_by: partition columns; their values must be non-null strings.
        sort_by: columns to sort rows by inside each file, for byte-stable files across re-runs.
        app_id, app_version: an idempotency key, checked when the write starts and again at commit
            time: if the table records `app_id` at `app_version` or later, nothing is committed
            and `committed` is False.
        base_version: the table version (None: no table) this job's decision was based on. Given,
            the commit lands only directly on top of it — appends included — else
            TableConflictError. Not given, overwrites are based on the version found when the write
            starts and appends are rebased over concurrent appends.
        metadata: string-able values stored in the commit info (run id, job name …).

    Raises:
        TableConflictError: a concurrent writer committed first; nothing of ours is visible.
        SchemaMismatchError: appending columns that differ from the table's.
        LakeVisibilityError: the files Spark wrote are not what the driver sees; nothing committed.
    """
    staged = stage_write(df, lake, name, mode=mode, partition_by=partition_by,
                         replace_partitions=replace_partitions, sort_by=sort_by, app_id=app_id,
                         app_version=app_version, base_version=base_version)
    try:
        return commit(staged, metadata=metadata)
    except BaseException:
        discard(staged)
        raise


def stage_write(df: Any, lake: str | Path, name: str, *, mode: WriteMode = "error",
                partition_by: Sequence[str] = ("lang",),
                replace_partitions: Mapping[str, str | Sequence[str]] | None = None,
                sort_by: Sequence[str] = (), app_id: str | None = None,
                app_version: int | None = None,
                base_version: int | None | _Unset = UNSET) -> StagedWrite:
    """Write `df`'s files into the table folder, verified, without committing (see `write_table`)."""
    from data_engine.spark import delta_native

    uri = table_uri(lake, name)
    partition_by = list(partition_by)
    missing = [c for c in partition_by + list(sort_by) if c not in df.columns]
    if missing:
        raise SchemaMismatchError(f"table '{name}': partition/sort columns {missing} are not in the "
                                  f"data (columns: {df.columns})")
    if replace_partitions and mode != "overwrite":
        raise ValueError("replace_partitions only applies to mode='overwrite'")
    current = table_version(lake, name)
    if mode == "error" and current is not None:
        raise TableConflictError(f"table '{name}' already exists at {uri} (version {current})")
    strict = base_version is not UNSET
    base = current if base_version is UNSET else base_version
    staged = StagedWrite(name, str(lake), uri, mode, partition_by, replace_partitions, app_id,
                         app_version, base, strict or mode in ("overwrite", "error"))
    if has_transaction(lake, name, app_id, app_version):
        staged.skipped = True
        return staged
    if current is not None and mode != "error":
        _check_schema(name, _open(lake, name).schema().to_arrow(), df,
                      replacing=mode == "overwrite" and not replace_partitions)
    if strict and base != current:
        if not (base is not None and current is not None and _disjoint_since(staged, base, current)):
            raise TableConflictError(f"table '{name}' is at version {current}, not {base} as this job "
                                     "read it; nothing was committed; re-run the job")
        staged.base = current  # others replaced only partitions we do not touch
    if sort_by:
        df = df.sortWithinPartitions(*partition_by, *sort_by)
    if delta_native(df.sparkSession):
        staged.native_df = df
        return staged
    _stage_files(df, staged)
    return staged


def has_transaction(lake: str | Path, name: str, app_id: str | None, app_version: int | None) -> bool:
    """True when the table records app transaction `app_id` at `app_version` or later."""
    if app_id is None or app_version is None or table_version(lake, name) is None:
        return False
    done = _open(lake, name).transaction_version(app_id)
    return done is not None and done >= app_version


def _stage_files(df: Any, staged: StagedWrite) -> None:
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    spark = df.sparkSession
    staged.attempt = uuid.uuid4().hex
    staged.schema = _spark_arrow_schema(df)
    staging = f"{staged.uri}/{STAGING}/{staged.attempt}"
    fs = staged.fs = _HadoopFS(spark, staged.uri)
    staged.heartbeat = _Heartbeat(fs, staging + HEARTBEAT_SUFFIX)
    try:
        observed = Observation(f"sailyard_write_{staged.attempt}")
        (df.observe(observed, F.count(F.lit(1)).alias("rows"))
         .write.mode("overwrite").partitionBy(*staged.partition_by).parquet(staging))
        wrote = int(observed.get["rows"])
        found = fs.data_files(staging)
        seen = sum(f[4] for f in found)
        if seen != wrote:
            raise LakeVisibilityError(
                f"table '{staged.name}': Spark wrote {wrote} rows under {staging} but the driver sees "
                f"{seen} in {len(found)} files: the driver cannot see the executors' output (node-local "
                "disks, or a path that means another filesystem on the executors); put the lake on "
                "storage every node shares (HDFS, S3, a shared mount) and give it as a URI; nothing "
                "was committed")
        checked = []
        for rel, _uri, size, mtime, rows in found:
            rel_dir = rel.rpartition("/")[0]
            values = _partition_values(rel_dir, staged.partition_by)
            if staged.replace_partitions and any(
                    values.get(k) not in _values(v) for k, v in staged.replace_partitions.items()):
                raise SchemaMismatchError(f"table '{staged.name}': rows outside the partitions being "
                                          f"replaced {dict(staged.replace_partitions)}: {values}")
            checked.append((f"{staging}/{rel}", rel, size, mtime, rows, values))
        _adopt_files(staged, checked)
        staged.rows = sum(f[3] for f in staged.files)
    except BaseException:
        discard(staged)
        raise
    finally:
        fs.delete(staging, recursive=True)


def _partition_values(rel_dir: str, partition_by: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for part in [p for p in rel_dir.split("/") if p]:
        key, _, raw = part.partition("=")
        values[key] = urllib.parse.unquote(raw)
    if set(values) != set(partition_by):
        raise SchemaMismatchError(f"unexpected partition folders {rel_dir!r} for {partition_by}")
    if any(v == "__HIVE_DEFAULT_PARTITION__" for v in values.values()):
        raise SchemaMismatchError(f"null values in partition columns {partition_by}")
    return values


def _adopt_files(staged: StagedWrite, checked: list[tuple[str, str, int, int, int, dict[str, str]]]) -> None:
    """Move the verified files next to the table's other files (a rename on HDFS and local disks)."""
    for file_uri, rel, size, mtime, rows, values in checked:
        staged.fs.rename(file_uri, f"{staged.uri}/{rel}")
        staged.files.append((rel, size, mtime, rows, values))


def discard(staged: StagedWrite) -> None:
    """Remove a staged write's files; nothing of it was committed."""
    if staged.fs is not None and not staged.committed:
        for rel, *_ in staged.files:
            staged.fs.delete(f"{staged.uri}/{rel}")
    staged.files = []
    _stop_heartbeat(staged)


def _stop_heartbeat(staged: StagedWrite) -> None:
    if staged.heartbeat is not None:
        staged.heartbeat.stop()
        staged.heartbeat = None


def commit(staged: StagedWrite, *, metadata: Mapping[str, Any] | None = None) -> WriteResult:
    """Commit a staged write as one new version; on failure its files are removed."""
    path = table_path(staged.lake, staged.name)
    if staged.skipped:
        return WriteResult(staged.name, path, table_version(staged.lake, staged.name) or 0, 0, 0,
                           committed=False)
    if staged.native_df is not None:
        return _write_native(staged, path, metadata)
    try:
        return _commit_rs(staged, path, metadata)
    except BaseException as exc:
        # delta-rs may raise after the version is written (a post-commit checkpoint failing, a retried
        # conditional put reported as a conflict): if our attempt is in the log, the files are live.
        landed = None if staged.committed else _find_attempt(staged.lake, staged.name, staged.attempt)
        if staged.committed or landed is not None:
            staged.committed = True
            if landed is not None and isinstance(exc, Exception):
                print(f"sailyard: table '{staged.name}' version {landed} was committed, but delta-rs then "
                      f"reported: {' '.join(str(exc).split())[:200]}", file=sys.stderr, flush=True)
                return WriteResult(staged.name, path, landed, sum(f[3] for f in staged.files),
                                   len(staged.files), committed=True)
            raise
        discard(staged)
        raise
    finally:
        _stop_heartbeat(staged)


def _values(value: str | Sequence[str]) -> list[str]:
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _check_schema(name: str, table_schema: Any, df: Any, *, replacing: bool) -> None:
    import pyarrow as pa
    from pyspark.sql.pandas.types import from_arrow_schema

    if replacing:
        return
    have = from_arrow_schema(pa.schema(table_schema))
    want = {f.name: f.dataType.simpleString() for f in have.fields}
    got = {f.name: f.dataType.simpleString() for f in df.schema.fields}
    if want != got:
        raise SchemaMismatchError(f"table '{name}': data columns {got} do not match the table's "
                                  f"{want}")


def _write_native(staged: StagedWrite, path: Any, metadata: Mapping[str, Any] | None) -> WriteResult:
    df = staged.native_df
    writer = df.write.format("delta").mode("append" if staged.mode == "error" else staged.mode)
    if staged.partition_by:
        writer = writer.partitionBy(*staged.partition_by)
    if staged.replace_partitions:
        where = " AND ".join(f"`{k}` IN ({', '.join(repr(x) for x in _values(v))})"
                             for k, v in staged.replace_partitions.items())
        writer = writer.option("replaceWhere", where)
    if staged.app_id is not None and staged.app_version is not None:
        writer = writer.option("txnAppId", staged.app_id).option("txnVersion", staged.app_version)
    if metadata:  # Delta's commitInfo.userMetadata; `commit_metadata` reads it back
        writer = writer.option("userMetadata", json.dumps({k: str(v) for k, v in metadata.items()}))
    writer.save(staged.uri)
    dt = _open(staged.lake, staged.name)
    return WriteResult(staged.name, path, dt.version(), -1, -1, committed=True)


def _spark_arrow_schema(df: Any) -> Any:
    from pyspark.sql.pandas.types import to_arrow_schema

    # Delta timestamps are UTC instants; without a zone pyspark refuses TimestampType columns.
    return to_arrow_schema(df.schema, timezone="UTC")


def _commit_rs(staged: StagedWrite, path: Any, metadata: Mapping[str, Any] | None) -> WriteResult:
    from deltalake import CommitProperties, DeltaTable, Schema
    from deltalake.exceptions import CommitFailedError
    from deltalake.transaction import AddAction, Transaction, create_table_with_add_actions

    rs_uri, options = _rs(staged.uri)
    adds = [AddAction(rel, size, values, mtime, True, json.dumps({"numRecords": rows}))
            for rel, size, mtime, rows, values in staged.files]
    touched: Any = "*"
    if staged.mode != "overwrite" or staged.replace_partitions:
        touched = staged.touched + [{k: v} for k, vals in (staged.replace_partitions or {}).items()
                                    for v in _values(vals)]
    custom = {**{k: str(v) for k, v in (metadata or {}).items()}, _ATTEMPT_KEY: staged.attempt,
              _TOUCHED_KEY: json.dumps(touched, sort_keys=True)}
    filters = ([(k, "in", _values(v)) for k, v in staged.replace_partitions.items()]
               if staged.replace_partitions else None)
    base = staged.base
    for _ in range(_COMMIT_RETRIES):
        props = CommitProperties(
            custom_metadata=custom,
            app_transactions=[Transaction(staged.app_id, staged.app_version)]
            if staged.app_id and staged.app_version is not None else None,
            # A strict commit must land right after `base`: delta-rs would rebase it over a
            # concurrent append (keeping the appended rows) instead of failing.
            max_commit_retries=0 if staged.strict else None)
        try:
            with _create_lock(staged):
                if has_transaction(staged.lake, staged.name, staged.app_id, staged.app_version):
                    discard(staged)  # another run of the same input committed while we wrote
                    return WriteResult(staged.name, path, table_version(staged.lake, staged.name) or 0,
                                       0, 0, committed=False)
                current = table_version(staged.lake, staged.name)
                if current is None:
                    if base is not None:
                        raise TableConflictError(f"table '{staged.name}' disappeared while this job ran")
                    create_table_with_add_actions(rs_uri, Schema.from_arrow(staged.schema), adds,
                                                  mode="error", partition_by=staged.partition_by or None,
                                                  name=staged.name, commit_properties=props,
                                                  storage_options=options)
                    staged.committed = True
                else:
                    if base is None and staged.strict:
                        raise TableConflictError(
                            f"table '{staged.name}' was created by another writer while this job ran; "
                            "nothing was committed; re-run the job")
                    dt = DeltaTable(rs_uri, version=current if base is None else base,
                                    storage_options=options)
                    dt.create_write_transaction(
                        adds, mode="overwrite" if staged.mode == "overwrite" else "append",
                        schema=staged.schema, partition_by=staged.partition_by or None,
                        partition_filters=filters, commit_properties=props)
            staged.committed = True
            break
        except CommitFailedError as exc:
            latest = table_version(staged.lake, staged.name)
            if _find_attempt(staged.lake, staged.name, staged.attempt) is not None:
                staged.committed = True  # ours landed; the error was about a retry of it
                break
            if has_transaction(staged.lake, staged.name, staged.app_id, staged.app_version):
                discard(staged)
                return WriteResult(staged.name, path, latest or 0, 0, 0, committed=False)
            if not (base is not None and latest is not None and _disjoint_since(staged, base, latest)):
                raise TableConflictError(
                    f"table '{staged.name}' changed while this job ran (another writer committed after "
                    f"version {base}); nothing was committed; re-run the job. "
                    f"({' '.join(str(exc).split())[:200]})") from exc
            base = latest  # the concurrent commits touched other partitions: ours still hold
    else:
        raise TableConflictError(f"table '{staged.name}': gave up after {_COMMIT_RETRIES} commit "
                                 "attempts against concurrent writers; re-run the job")
    return WriteResult(staged.name, path, _version_of(staged.lake, staged.name, staged.attempt),
                       sum(f[3] for f in staged.files), len(adds), committed=True)


def _disjoint_since(staged: StagedWrite, base: int, latest: int) -> bool:
    """True when every commit after `base` touched only partitions we do not replace.

    delta-rs's conflict checker is not partition-aware (an overwrite of `stage=clean` conflicts
    with one of `stage=url`); our commits record what they touched, so two stages sharing `drops`
    both get in. A commit that does not say (another writer) counts as touching everything.
    """
    mine = {(k, v) for k, vals in (staged.replace_partitions or {}).items() for v in _values(vals)}
    entries = history(staged.lake, staged.name, limit=latest - base + 8)
    if table_version(staged.lake, staged.name) != latest:
        return False  # moved on while we looked: decide again on the next attempt
    between = {int(e["version"]): e for e in entries if "version" in e and base < int(e["version"]) <= latest}
    if set(between) != set(range(base + 1, latest + 1)):
        return False  # a version we cannot see (no commit info, cleaned-up log): assume the worst
    for entry in between.values():
        if entry.get("operation") in MAINTENANCE_OPERATIONS:
            continue  # vacuum deletes only files no current version references
        if not mine:
            return False  # a whole-table overwrite conflicts with any data commit
        raw = entry.get(_TOUCHED_KEY)
        if raw is None:
            return False
        touched = json.loads(raw)
        if touched == "*" or not isinstance(touched, list):
            return False
        if any((k, v) in mine for part in touched for k, v in part.items()):
            return False
    return True


def _find_attempt(lake: str, name: str, attempt: str, depth: int = 512) -> int | None:
    """The version whose commit carries our attempt id, or None."""
    if not attempt or table_version(lake, name) is None:
        return None
    for entry in history(lake, name, limit=depth):
        if entry.get(_ATTEMPT_KEY) == attempt and "version" in entry:
            return int(entry["version"])
    return None


def _version_of(lake: str, name: str, attempt: str) -> int:
    """The version our commit got. Not simply the latest: another writer may already have
    committed after us (appends are rebased), so find the commit that carries our attempt id."""
    found = _find_attempt(lake, name, attempt)
    if found is None:
        raise RuntimeError(f"committed to {table_uri(lake, name)} but cannot find the commit of attempt {attempt}")
    return found


@contextmanager
def _create_lock(staged: StagedWrite) -> Iterator[None]:
    """Serialise commits to one table: delta-rs lets two racing creators both 'succeed', and the
    app-transaction check must see every commit made before ours.

    An flock is released by the kernel when its holder dies, so a killed job never leaves the
    table locked. Remote lakes have no flock: there, create each table from one job first.
    """
    if not is_local(staged.uri):
        yield
        return
    folder = _local(staged.uri)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / _CREATE_LOCK, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------
# Vacuum


def live_attempts(lake: str | Path, name: str) -> list[str]:
    """Attempt ids whose writer is alive (holds its heartbeat's lock)."""
    staging = _local_table(lake, name) / STAGING
    if not staging.is_dir():
        return []
    return sorted(p.name[: -len(HEARTBEAT_SUFFIX)] for p in staging.iterdir()
                  if p.name.endswith(HEARTBEAT_SUFFIX) and lock_held(p))


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return None


def _local_table(lake: str | Path, name: str) -> Path:
    uri = table_uri(lake, name)
    if not is_local(uri):
        raise ConfigError(f"vacuum works on local (or mounted) lakes; for {uri} use the storage's "
                          "own lifecycle rules or delta-rs's vacuum")
    return _local(uri)


def vacuum(lake: str | Path, name: str, *, retention_hours: float = 168.0,
           dry_run: bool = False, force: bool = False) -> list[str]:
    """Delete files no version within `retention_hours` needs, and leftovers of dead writers.

    Leftovers are staging folders and data files no commit ever referenced (a job killed between
    writing and committing). Nothing of a live writer (fresh heartbeat) is touched: while one runs,
    unreferenced data files are kept (they may be its files, moved in and about to be committed).
    A dead attempt's age is that of its last heartbeat. A retention under MIN_RETENTION_HOURS
    needs `force`. Returns the deleted (or, with `dry_run`, deletable) paths.
    """
    if retention_hours < MIN_RETENTION_HOURS and not force:
        raise ConfigError(f"vacuum retention {retention_hours} h is under {MIN_RETENTION_HOURS:g} h: "
                          "readers of older versions and slow writers may still need those files; "
                          "pass --force to do it anyway")
    path = _local_table(lake, name)
    alive = set(live_attempts(lake, name))  # before the snapshot: a writer committing now is in it
    dt = _open(lake, name)
    removed = [str(path / p) for p in dt.vacuum(retention_hours=math.ceil(retention_hours), dry_run=dry_run,
                                                 enforce_retention_duration=False, full=not alive)]
    cutoff = time.time() - retention_hours * 3600
    staging = path / STAGING
    if staging.is_dir():
        for attempt in sorted(p for p in staging.iterdir() if p.is_dir()):
            beat = staging / (attempt.name + HEARTBEAT_SUFFIX)
            if attempt.name in alive or lock_held(beat):  # re-checked: it may have started just now
                continue
            last = _mtime(beat) or _mtime(attempt)
            if last is None:  # finished and removed while we looked
                continue
            if last <= cutoff:
                removed.append(str(attempt))
                if not dry_run:
                    shutil.rmtree(attempt, ignore_errors=True)
                    beat.unlink(missing_ok=True)
        for beat in sorted(staging.glob("*" + HEARTBEAT_SUFFIX)):  # heartbeats of finished attempts
            stem = beat.name[: -len(HEARTBEAT_SUFFIX)]
            if not (staging / stem).exists() and not lock_held(beat) and (_mtime(beat) or cutoff + 1) <= cutoff:
                removed.append(str(beat))
                if not dry_run:
                    beat.unlink(missing_ok=True)
    return removed
