"""The lake: Delta tables under one root, written from Spark, readable by any Delta reader.

Each table lives at `<lake>/<name>`. With the delta-spark jars on the classpath Spark commits
natively. Without them (our default: the jars come from Maven) Spark writes Parquet into a private
staging folder inside the table, the files are moved next to the table's other files, and
delta-rs (`deltalake`) commits them as one new version without rewriting a byte. Until that
commit lands no reader sees them: a job killed halfway leaves the previous version as it was, and
`vacuum` removes what it left behind.

Verbs: `read_table`, `read_arrow`, `write_table`, `table_version`, `exists`, `history`, `vacuum`.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
import urllib.parse
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from data_engine.errors import SchemaMismatchError, TableConflictError, TableNotFoundError

WriteMode = Literal["error", "append", "overwrite"]
STAGING = "_staging"  # underscore: Spark, Delta and our vacuum all treat it as not-data
_CREATE_LOCK = "_sailyard_create.lock"
_ATTEMPT_KEY = "sailyard.attempt"  # commit-info key naming the write attempt that made a version


@dataclass(frozen=True)
class Table:
    """A table pinned at one version, with a DataFrame over exactly that version's files."""

    name: str
    path: Path
    version: int
    df: Any


@dataclass(frozen=True)
class WriteResult:
    name: str
    path: Path
    version: int
    rows: int
    files: int
    committed: bool  # False when an app transaction showed this exact write was already committed


def table_path(lake: str | Path, name: str) -> Path:
    return Path(lake).expanduser().resolve() / name


def exists(lake: str | Path, name: str) -> bool:
    return (table_path(lake, name) / "_delta_log").is_dir() and table_version(lake, name) is not None


def table_version(lake: str | Path, name: str) -> int | None:
    """Latest committed version, or None when the table does not exist."""
    from deltalake import DeltaTable

    path = table_path(lake, name)
    if not DeltaTable.is_deltatable(str(path)):
        return None
    return DeltaTable(str(path)).version()


def _open(lake: str | Path, name: str, version: int | None = None) -> Any:
    from deltalake import DeltaTable

    path = table_path(lake, name)
    if not DeltaTable.is_deltatable(str(path)):
        raise TableNotFoundError(f"no Delta table '{name}' in lake {Path(lake).resolve()} "
                                 f"(looked for {path}/_delta_log); run the job that writes it first")
    try:
        return DeltaTable(str(path), version=version)
    except Exception as exc:
        raise TableNotFoundError(f"table '{name}' has no version {version}: {exc}") from exc


def first_existing(lake: str | Path, names: Sequence[str], *, purpose: str) -> str:
    """The first of `names` that exists in the lake: a job's default input is the most curated
    table available."""
    for name in names:
        if exists(lake, name):
            return name
    raise TableNotFoundError(f"nothing to {purpose} in lake {Path(lake).resolve()}: none of "
                             f"{', '.join(names)} exists; run the job that writes one of them first")


def history(lake: str | Path, name: str, limit: int | None = None) -> list[dict[str, Any]]:
    return _open(lake, name).history(limit)


def read_arrow(lake: str | Path, name: str, *, version: int | None = None,
               columns: Sequence[str] | None = None) -> Any:
    """The table (at `version`, default latest) as a pyarrow Table, without Spark."""
    import pyarrow.fs as pafs

    dt = _open(lake, name, version)
    # A SubTreeFileSystem keeps pyarrow's scanner off delta-rs's Python filesystem, whose threads
    # can abort the interpreter at exit (delta-io/delta-rs#2184).
    fs = pafs.SubTreeFileSystem(str(table_path(lake, name)), pafs.LocalFileSystem())
    return dt.to_pyarrow_table(columns=list(columns) if columns else None, filesystem=fs)


def read_table(spark: Any, lake: str | Path, name: str, *, version: int | None = None) -> Table:
    """A DataFrame over the table pinned at `version` (default: the latest)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    from data_engine.spark import delta_native

    dt = _open(lake, name, version)
    pinned = dt.version()
    path = table_path(lake, name)
    if delta_native(spark):
        df = spark.read.format("delta").option("versionAsOf", pinned).load(str(path))
        return Table(name, path, pinned, df)
    arrow_schema = dt.schema().to_arrow()
    import pyarrow as pa

    schema = from_arrow_schema(pa.schema(arrow_schema))
    files = dt.file_uris()
    if not files:
        df = spark.createDataFrame([], schema)
    else:
        df = (spark.read.schema(schema).option("basePath", str(path))
              .parquet(*files).select(*schema.fieldNames()))
    return Table(name, path, pinned, df)


def write_table(df: Any, lake: str | Path, name: str, *, mode: WriteMode = "error",
                partition_by: Sequence[str] = ("lang",),
                replace_partitions: Mapping[str, str | Sequence[str]] | None = None,
                sort_by: Sequence[str] = (),
                app_id: str | None = None, app_version: int | None = None,
                base_version: int | None = None,
                metadata: Mapping[str, Any] | None = None) -> WriteResult:
    """Commit `df` as one new version of `<lake>/<name>`.

    Args:
        mode: "error" creates the table and fails if it exists; "append" adds rows (creating the
            table if needed); "overwrite" replaces all rows, or only the partitions named in
            `replace_partitions` (e.g. `{"stage": "exact"}` or `{"stage": ["url", "exact"]}`).
        partition_by: partition columns; their values must be non-null strings.
        sort_by: columns to sort rows by inside each file, for byte-stable files across re-runs.
        app_id, app_version: an idempotency key. If the table already records `app_id` at
            `app_version` or later, nothing is written and `committed` is False.
        base_version: the table version this job's decision was based on (default: the version
            found when the write starts). A commit by someone else after it makes an overwrite fail
            with TableConflictError instead of silently replacing their rows.
        metadata: string-able values stored in the commit info (run id, job name …).

    Raises:
        TableConflictError: a concurrent writer committed first; nothing of ours is visible.
        SchemaMismatchError: appending columns that differ from the table's.
    """
    from data_engine.spark import delta_native

    path = table_path(lake, name)
    partition_by = list(partition_by)
    missing = [c for c in partition_by + list(sort_by) if c not in df.columns]
    if missing:
        raise SchemaMismatchError(f"table '{name}': partition/sort columns {missing} are not in the "
                                  f"data (columns: {df.columns})")
    if replace_partitions and mode != "overwrite":
        raise ValueError("replace_partitions only applies to mode='overwrite'")
    current = table_version(lake, name)
    if mode == "error" and current is not None:
        raise TableConflictError(f"table '{name}' already exists at {path} (version {current})")
    if app_id is not None and current is not None:
        done = _open(lake, name).transaction_version(app_id)
        if done is not None and app_version is not None and done >= app_version:
            return WriteResult(name, path, current, 0, 0, committed=False)
    if current is not None and mode != "error":
        _check_schema(name, _open(lake, name).schema().to_arrow(), df, replacing=mode == "overwrite"
                      and not replace_partitions)
    base = current if base_version is None else base_version
    if sort_by:
        df = df.sortWithinPartitions(*partition_by, *sort_by)
    if delta_native(df.sparkSession):
        return _write_native(df, path, name, mode, partition_by, replace_partitions, app_id,
                             app_version)
    return _write_rs(df, path, name, mode, partition_by, replace_partitions, app_id, app_version,
                     base, metadata)


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


def _write_native(df: Any, path: Path, name: str, mode: str, partition_by: list[str],
                  replace_partitions: Mapping[str, str | Sequence[str]] | None, app_id: str | None,
                  app_version: int | None) -> WriteResult:
    writer = df.write.format("delta").mode("append" if mode == "error" else mode)
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    if replace_partitions:
        where = " AND ".join(f"`{k}` IN ({', '.join(repr(x) for x in _values(v))})"
                             for k, v in replace_partitions.items())
        writer = writer.option("replaceWhere", where)
    if app_id is not None and app_version is not None:
        writer = writer.option("txnAppId", app_id).option("txnVersion", app_version)
    writer.save(str(path))
    dt = _open(path.parent, name)
    return WriteResult(name, path, dt.version(), -1, -1, committed=True)


def _spark_arrow_schema(df: Any) -> Any:
    from pyspark.sql.pandas.types import to_arrow_schema

    # Delta timestamps are UTC instants; without a zone pyspark refuses TimestampType columns.
    return to_arrow_schema(df.schema, timezone="UTC")


def _write_rs(df: Any, path: Path, name: str, mode: str, partition_by: list[str],
              replace_partitions: Mapping[str, str | Sequence[str]] | None, app_id: str | None,
              app_version: int | None, base: int | None,
              metadata: Mapping[str, Any] | None) -> WriteResult:
    from deltalake import CommitProperties, DeltaTable, Schema
    from deltalake.exceptions import CommitFailedError
    from deltalake.transaction import Transaction, create_table_with_add_actions

    attempt = uuid.uuid4().hex
    staging = path / STAGING / attempt
    path.mkdir(parents=True, exist_ok=True)
    df.write.mode("overwrite").partitionBy(*partition_by).parquet(str(staging))
    moved = _adopt_files(staging, path, partition_by)
    shutil.rmtree(staging, ignore_errors=True)
    try:
        adds = [_add_action(path, rel, values) for rel, values in moved]
        if replace_partitions:
            bad = [(rel, v) for rel, v in moved
                   if any(v.get(k) not in _values(val) for k, val in replace_partitions.items())]
            if bad:
                raise SchemaMismatchError(f"table '{name}': rows outside the partitions being "
                                          f"replaced {dict(replace_partitions)}: {bad[0][1]}")
        schema = _spark_arrow_schema(df)
        props = CommitProperties(
            custom_metadata={**{k: str(v) for k, v in (metadata or {}).items()}, _ATTEMPT_KEY: attempt},
            app_transactions=[Transaction(app_id, app_version)] if app_id and app_version is not None
            else None,
            # An overwrite must land right after `base`: delta-rs would rebase it over a concurrent
            # append (keeping the appended rows) instead of failing.
            max_commit_retries=0 if mode == "overwrite" else None)
        with _create_lock(path):
            if base is None and not DeltaTable.is_deltatable(str(path)):
                create_table_with_add_actions(str(path), Schema.from_arrow(schema), adds,
                                              mode="error", partition_by=partition_by or None,
                                              name=name, commit_properties=props)
            else:
                if base is None:  # created by someone else while we wrote: append after them
                    if mode != "append":
                        raise TableConflictError(
                            f"table '{name}' was created by another writer while this job ran; "
                            "nothing was committed; re-run the job")
                    dt = DeltaTable(str(path))
                else:
                    dt = DeltaTable(str(path), version=base)
                filters = ([(k, "in", _values(v)) for k, v in replace_partitions.items()]
                           if replace_partitions else None)
                dt.create_write_transaction(adds, mode="overwrite" if mode == "overwrite" else "append",
                                            schema=schema, partition_by=partition_by or None,
                                            partition_filters=filters, commit_properties=props)
    except CommitFailedError as exc:
        _remove(path, [rel for rel, _ in moved])
        raise TableConflictError(
            f"table '{name}' changed while this job ran (another writer committed after version "
            f"{base}); nothing was committed; re-run the job. ({' '.join(str(exc).split())[:200]})"
        ) from exc
    except BaseException:
        _remove(path, [rel for rel, _ in moved])
        raise
    rows = sum(json.loads(a.stats)["numRecords"] for a in adds)
    return WriteResult(name, path, _version_of(path, attempt), rows, len(adds), committed=True)


def _version_of(path: Path, attempt: str) -> int:
    """The version our commit got. Not simply the latest: another writer may already have
    committed after us (appends are rebased), so find the commit that carries our attempt id."""
    from deltalake import DeltaTable

    dt = DeltaTable(str(path))
    for entry in dt.history(limit=64):
        if entry.get(_ATTEMPT_KEY) == attempt:
            return int(entry["version"])
    raise RuntimeError(f"committed to {path} but cannot find the commit of attempt {attempt}")


def _adopt_files(staging: Path, table: Path, partition_by: list[str]) -> list[tuple[str, dict[str, str]]]:
    """Move the Parquet files Spark wrote into the table folder; return (relative path, partition)."""
    found: list[tuple[Path, Path, dict[str, str]]] = []
    for file in sorted(staging.rglob("*.parquet")):
        rel_dir = file.parent.relative_to(staging)
        if any(part.startswith((".", "_")) for part in rel_dir.parts) or file.name.startswith((".", "_")):
            continue
        values: dict[str, str] = {}
        for part in rel_dir.parts:
            key, _, raw = part.partition("=")
            values[key] = urllib.parse.unquote(raw)
        if set(values) != set(partition_by):
            raise SchemaMismatchError(f"unexpected partition folders {rel_dir} for {partition_by}")
        if any(v == "__HIVE_DEFAULT_PARTITION__" for v in values.values()):
            raise SchemaMismatchError(f"null values in partition columns {partition_by}")
        found.append((file, rel_dir, values))
    moved: list[tuple[str, dict[str, str]]] = []
    for file, rel_dir, values in found:  # only once all are checked: a refusal moves nothing
        dest = table / rel_dir / file.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(file, dest)
        moved.append((str(rel_dir / file.name), values))
    return moved


def _add_action(table: Path, rel: str, values: dict[str, str]) -> Any:
    import pyarrow.parquet as pq
    from deltalake.transaction import AddAction

    full = table / rel
    st = full.stat()
    rows = pq.read_metadata(full).num_rows
    return AddAction(rel, st.st_size, values, int(st.st_mtime * 1000), True,
                     json.dumps({"numRecords": rows}))


def _remove(table: Path, rels: list[str]) -> None:
    for rel in rels:
        try:
            (table / rel).unlink()
        except FileNotFoundError:
            pass


@contextmanager
def _create_lock(path: Path) -> Iterator[None]:
    """Serialise table creation: delta-rs lets two racing creators both 'succeed'.

    An flock is released by the kernel when its holder dies, so a killed job never leaves the
    table locked.
    """
    with open(path / _CREATE_LOCK, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def vacuum(lake: str | Path, name: str, *, retention_hours: float = 168.0,
           dry_run: bool = False) -> list[str]:
    """Delete files no version within `retention_hours` needs, and leftovers of dead writers.

    Leftovers are staging folders and data files no commit ever referenced (a job killed between
    writing and committing). Staging folders younger than the retention may belong to a running
    writer and are kept. Returns the deleted (or, with `dry_run`, deletable) paths.
    """
    dt = _open(lake, name)
    path = table_path(lake, name)
    removed = [str(path / p) for p in dt.vacuum(retention_hours=int(retention_hours), dry_run=dry_run,
                                                 enforce_retention_duration=False, full=True)]
    cutoff = time.time() - retention_hours * 3600
    staging = path / STAGING
    if staging.is_dir():
        for attempt in sorted(staging.iterdir()):
            if attempt.stat().st_mtime <= cutoff:
                removed.append(str(attempt))
                if not dry_run:
                    shutil.rmtree(attempt, ignore_errors=True)
    return removed
