"""Where a table version's rows came from, from what the lake and MLflow recorded — and shards rebuilt from it.

Every commit `stage.commit_plan` makes carries the stage, the run and the table versions it read
(`sailyard.stage`, `sailyard.run`, `input = docs_raw@v3,…`), so a version leads to the commit that
made its content, that commit to the versions it read, and so on down to `docs_raw`. `docs_raw` is
appended to by ingest, one batch a commit, each batch an app transaction (`sailyard.ingest.<batch>`)
in the table's log: the batches of `docs_raw@v` are those whose transaction the log holds at v, and
`ingest_log` names each batch's files with the SHA-256 of their bytes. Nothing here reads a table's
rows. A link that was never recorded (a table written outside a stage, a run deleted from MLflow)
is said in the node's `missing` list instead of failing: lineage reports what is known.

`rebuild_shards` writes a run's shards again from the pinned table versions their manifest rows
name, through the exporter's own steps (selection, tokenisation, the parts a language's rows were
cut into, content names), under a folder of its own, committing nothing; `compare_shards` checks
them byte for byte.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from data_engine import lake
from data_engine.errors import SailyardError
from data_engine.stage import RUN_KEY, SET_KEY, STAGE_KEY
from data_engine.tables import DOCS_RAW, INGEST_LOG

INGEST_APP = "sailyard.ingest."  # + batch id: ingest's app transaction on docs_raw (data_engine.ingest.run)
INGEST_STAGE = "ingest"
#: A run id → what MLflow holds about it (`RunReader.summary`), or None when the store has no such run.
RunLookup = Callable[[str], "dict[str, Any] | None"]


# --------------------------------------------------------------------------------------------
# MLflow, read only


class RunReader:
    """Reads runs from one or more MLflow stores (the first that holds a run wins); never writes,
    so looking at a lineage creates no experiment and no store."""

    def __init__(self, uris: Iterable[str]) -> None:
        self.uris: list[str] = []
        self.clients: list[Any] = []
        self._found: dict[str, tuple[Any, Any] | None] = {}
        self.extend(uris)

    def extend(self, uris: Iterable[str]) -> None:
        """Also read these stores (after the ones already read)."""
        from mlflow.tracking import MlflowClient

        for uri in uris:
            if uri not in self.uris:
                self.uris.append(uri)
                self.clients.append(MlflowClient(tracking_uri=uri, registry_uri=uri))
                self._found = {k: v for k, v in self._found.items() if v is not None}

    def _lookup(self, run_id: str) -> tuple[Any, Any] | None:
        if run_id not in self._found:
            self._found[run_id] = None
            for client in self.clients:
                try:
                    self._found[run_id] = (client.get_run(run_id), client)
                    break
                except Exception:  # not in this store (or not a run id at all)
                    continue
        return self._found[run_id]

    def get(self, run_id: str) -> Any | None:
        """The `mlflow.entities.Run` (a deleted one too: its `lifecycle_stage` says so), or None."""
        found = self._lookup(run_id)
        return None if found is None else found[0]

    def client_of(self, run: Any) -> Any:
        """The client of the store holding `run`."""
        found = self._lookup(run.info.run_id)
        return found[1] if found is not None else self.clients[0]

    def search(self, filter_string: str) -> list[Any]:
        """Active runs matching `filter_string` in every experiment of every store, oldest first."""
        found: list[Any] = []
        for client in self.clients:
            try:
                ids = [e.experiment_id for e in client.search_experiments()]
            except Exception:
                continue
            token = None
            while ids:
                page = client.search_runs(ids, filter_string=filter_string, max_results=1000,
                                          order_by=["attributes.start_time ASC"], page_token=token)
                found += list(page)
                token = page.token
                if not token:
                    break
        return sorted(found, key=lambda r: r.info.start_time or 0)

    def summary(self, run_id: str) -> dict[str, Any] | None:
        run = self.get(run_id)
        return None if run is None else run_summary(run)


def run_summary(run: Any) -> dict[str, Any]:
    """The fields of an MLflow run a lineage shows."""
    info, tags = run.info, run.data.tags
    return {"run_id": info.run_id, "name": info.run_name, "status": info.status,
            "deleted": info.lifecycle_stage == "deleted", "start": _iso(info.start_time),
            "end": _iso(info.end_time), "kind": tags.get("sailyard.kind"), "git_commit": tags.get("git_commit"),
            "tables_read": _table_tags(tags, "table.read."), "tables_written": _table_tags(tags, "table.written."),
            "models": {k[len("model."):]: v for k, v in sorted(tags.items()) if k.startswith("model.")},
            "batch_id": tags.get("batch_id")}


def store_uris(work_dirs: Iterable[str | Path]) -> list[str]:
    """The tracking URIs of these work dirs that exist (`MLFLOW_TRACKING_URI` first when set)."""
    uris = [os.environ["MLFLOW_TRACKING_URI"]] if os.environ.get("MLFLOW_TRACKING_URI") else []
    for work in work_dirs:
        db = Path(work).expanduser().resolve() / "mlflow" / "mlflow.db"
        if db.is_file():
            uris.append(f"sqlite:///{db}")
    return list(dict.fromkeys(uris))


def _table_tags(tags: Mapping[str, str], prefix: str) -> dict[str, int]:
    out = {}
    for key, value in tags.items():
        if key.startswith(prefix) and "@v" in value:
            try:
                out[key[len(prefix):]] = int(value.rsplit("@v", 1)[1])
            except ValueError:
                continue
    return dict(sorted(out.items()))


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------
# Table versions


def parse_inputs(text: str | None) -> dict[str, int]:
    """`docs_raw@v3,drops@v1` (a commit's `input`) → {table: version}; unparseable parts are skipped."""
    out: dict[str, int] = {}
    for part in (text or "").split(","):
        name, sep, version = part.strip().rpartition("@v")
        if sep and name and version.isdigit():
            out[name] = int(version)
    return out


def table_provenance(lake_dir: str | Path, table: str, version: int, *, runs: RunLookup | None = None,
                     _memo: dict[tuple[str, int], dict[str, Any]] | None = None) -> dict[str, Any]:
    """`table@version` and everything it was made from, as a tree of JSON-able nodes.

    A node: `table`, `version`, `path`, `commit` (the commit that made the version's content:
    version, operation, time, stage, run), `run` (the MLflow run of that commit, when found),
    `inputs` (nodes of the versions it read), for docs_raw `batches` in commit order (each with its
    ingest `run_id`, `commit_version` and `files`: path, sha256, size, format, records …) and
    `missing` (sentences naming the links not recorded).
    The same version reached twice is computed once (the same dict).
    """
    memo = {} if _memo is None else _memo
    key = (table, int(version))
    if key in memo:
        return memo[key]
    node: dict[str, Any] = {"table": table, "version": int(version), "path": str(lake.table_path(lake_dir, table)),
                            "commit": None, "run": None, "inputs": [], "missing": []}
    memo[key] = node
    latest = lake.table_version(lake_dir, table)
    if latest is None or version > latest:
        node["missing"].append(f"{table}@v{version}: not in lake {lake.lake_uri(lake_dir)} "
                               f"({'no such table' if latest is None else f'its latest version is {latest}'})")
        return node
    data = _data_commits(lake_dir, table, version)
    if not data:
        node["missing"].append(f"{table}@v{version}: its commit info is gone (log cleaned up); who wrote it is unknown")
        return node
    writer = data[0]
    node["commit"] = _commit(writer)
    if writer.get(STAGE_KEY) == INGEST_STAGE or table == DOCS_RAW:
        node["batches"] = _batches(lake_dir, table, version, data, runs, node["missing"])
        return node
    stage = writer.get(STAGE_KEY)
    if not stage:
        node["missing"].append(f"{table}@v{version} was written outside a sailyard stage ({writer.get('operation')} "
                               f"at {node['commit']['time']}, job {writer.get('job') or 'not recorded'}): what it "
                               "was made from was not recorded")
        return node
    node["run"] = _run(writer, runs, node["missing"], f"{table}@v{version}")
    inputs = parse_inputs(writer.get("input"))
    if not inputs and node["run"]:
        inputs = node["run"]["tables_read"]
    node["inputs"] = [table_provenance(lake_dir, name, v, runs=runs, _memo=memo) for name, v in sorted(inputs.items())]
    return node


def _data_commits(lake_dir: str | Path, table: str, version: int) -> list[dict[str, Any]]:
    """Commits up to `version` that changed data, newest first, back to the last one that replaced
    the table (appends before it are not in the version's content)."""
    out = []
    for entry in lake.history(lake_dir, table):
        if "version" not in entry or int(entry["version"]) > version:
            continue
        if entry.get("operation") in lake.MAINTENANCE_OPERATIONS:
            continue
        out.append(entry)
        if not _is_append(entry):
            break
    return out


def _is_append(entry: Mapping[str, Any]) -> bool:
    params = entry.get("operationParameters") or {}
    return str(params.get("mode", "")).lower() == "append" and entry.get("operation") != "CREATE TABLE"


def _commit(entry: Mapping[str, Any]) -> dict[str, Any]:
    members = entry.get(SET_KEY)
    return {"version": int(entry["version"]), "operation": entry.get("operation"),
            "time": _iso(entry.get("timestamp")), "stage": entry.get(STAGE_KEY), "job": entry.get("job"),
            "run_id": entry.get("mlflow_run_id") or None, "sailyard_run": entry.get(RUN_KEY),
            "set": str(members).split(",") if members else []}


def _run(entry: Mapping[str, Any], runs: RunLookup | None, missing: list[str], what: str) -> dict[str, Any] | None:
    run_id = entry.get("mlflow_run_id")
    if not run_id:
        missing.append(f"{what}: {entry.get(STAGE_KEY)} ran without an MLflow run (sailyard run {entry.get(RUN_KEY)})")
        return None
    if runs is None:
        return None
    found = runs(str(run_id))
    if found is None:
        missing.append(f"{what}: MLflow run {run_id} of {entry.get(STAGE_KEY)} is not in the store (deleted?)")
    elif found.get("deleted"):
        missing.append(f"{what}: MLflow run {run_id} of {entry.get(STAGE_KEY)} is deleted (its record is still read)")
    return found


def _batches(lake_dir: str | Path, table: str, version: int, data: list[dict[str, Any]],
             runs: RunLookup | None, missing: list[str]) -> list[dict[str, Any]]:
    """The ingest batches whose rows `table@version` holds, each with its files from ingest_log."""
    foreign = [e for e in data if e.get(STAGE_KEY) != INGEST_STAGE]
    missing += [f"{table}@v{e['version']} ({e.get('operation')}) was not written by sailyard ingest: the batches "
                "and files of its rows are not known" for e in reversed(foreign)]
    ingests = [e for e in data if e.get(STAGE_KEY) == INGEST_STAGE]
    if not ingests:
        return []
    if lake.table_version(lake_dir, INGEST_LOG) is None:
        missing.append(f"{table}@v{version}: the lake has no {INGEST_LOG}, so its source files are not known")
        return []
    log = lake.read_arrow(lake_dir, INGEST_LOG).to_pylist()  # one row per file ever ingested: small
    by_batch: dict[str, list[dict[str, Any]]] = {}
    for row in log:
        by_batch.setdefault(row["batch_id"], []).append(row)
    try:
        pinned = lake._open(lake_dir, table, version)  # the app transactions as of `version`
    except SailyardError as exc:
        missing.append(f"{table}@v{version}: its log cannot be read at that version ({exc})")
        return []
    present = sorted(b for b in by_batch if pinned.transaction_version(INGEST_APP + b) is not None)
    run_of = _ingest_runs(ingests, runs)
    if len(present) < len(ingests):
        missing.append(f"{table}@v{version}: {len(ingests)} ingest commits but {len(present)} batches in "
                       f"{INGEST_LOG} (an ingest stopped between its commits? re-running it logs its files)")
    committed_at = {e.get("mlflow_run_id"): int(e["version"]) for e in ingests if e.get("mlflow_run_id")}
    batches = []
    for batch in present:
        rows = sorted(by_batch[batch], key=lambda r: r["path"])
        run = run_of.get(batch)
        batches.append({
            "batch_id": batch, "source": rows[0].get("source"),
            "run_id": run["run_id"] if run else None,
            "commit_version": committed_at.get(run["run_id"]) if run else None,
            "files": [{"path": r["path"], "sha256": r["file_digest"], "size": r.get("size"), "format": r.get("format"),
                       "records": r.get("records"), "docs": r.get("docs"), "quarantined": r.get("quarantined"),
                       "complete": r.get("complete", True)} for r in rows]})
    return sorted(batches, key=lambda b: (b["commit_version"] is None, b["commit_version"] or 0, b["batch_id"]))


def _ingest_runs(ingests: list[dict[str, Any]], runs: RunLookup | None) -> dict[str, dict[str, Any]]:
    """batch id → the MLflow run of the ingest that committed it (its `batch_id` tag)."""
    if runs is None:
        return {}
    out = {}
    for entry in ingests:
        run_id = entry.get("mlflow_run_id")
        found = runs(str(run_id)) if run_id else None
        if found and found.get("batch_id"):
            out[found["batch_id"]] = found
    return out


def walk(node: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Every node of a provenance tree once, depth first."""
    seen: set[tuple[str, int]] = set()
    out: list[Mapping[str, Any]] = []

    def visit(n: Mapping[str, Any]) -> None:
        key = (n["table"], n["version"])
        if key in seen:
            return
        seen.add(key)
        out.append(n)
        for child in n.get("inputs", []):
            visit(child)

    visit(node)
    return out


# --------------------------------------------------------------------------------------------
# Shards again


@dataclass(frozen=True)
class ShardSpec:
    """One shard a run trained on: its manifest row and how its group selected documents."""

    group: str  # the manifest stage (a plan's shard group)
    lang: str
    prefix: str  # where the run read it
    table: str
    version: int
    checksum: str | None  # xxh3-128 of the .bin, as the manifest recorded it
    idx_checksum: str | None
    tokenizer: str
    tokenizer_digest: str
    eod_id: int
    dtype: str | None = None
    top_percent: float | None = None
    min_tokens: int = 1  # the export's `min_tokens` (documents with fewer tokens were left out)
    part: int | None = None  # k of the part (None: a one-file shard of an export before parts)
    part_bytes: int | None = None  # the export's `part_bytes` (None: one part per language)


def rebuild_shards(spark: Any, lake_dir: str, specs: list[ShardSpec], out_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Export `specs` again from their pinned table versions into `<out_dir>/<group>/`, committing nothing.

    The exporter's own steps in its order: the pinned version, its languages, the top-percent
    selection, tokenisation on the executors, the parts of `part_bytes` and the content names. A part
    is rebuilt with its whole language (where a part starts depends on every document before it).
    Returns prefix (where the run read it) → `{prefix, docs, tokens, checksum, idx_checksum}` of the
    rebuilt part, or `{error}` when it could not be rebuilt.
    """
    from data_engine.export.config import ExportConfig
    from data_engine.export.indexed_dataset import token_dtype
    from data_engine.export.shards import ExportResult, _check_selection, _place, _select_top, _tokenize_into_parts
    from data_engine.stage import read_input
    from data_engine.tokenizer import identity

    out = Path(out_dir).expanduser().resolve()
    done: dict[str, dict[str, Any]] = {}
    groups: dict[tuple[Any, ...], list[ShardSpec]] = {}
    for s in specs:
        key = (s.group, s.table, s.version, s.tokenizer, s.eod_id, s.min_tokens, s.part_bytes)
        groups.setdefault(key, []).append(s)
    for (group, table, version, tokenizer, eod_id, min_tokens, part_bytes), members in sorted(
            groups.items(), key=lambda kv: tuple("" if x is None else str(x) for x in kv[0])):
        tok = identity(tokenizer, eod_id)
        stale = [s for s in members if s.tokenizer_digest != tok.digest]
        for s in stale:
            done[s.prefix] = {"error": f"tokenizer {tokenizer!r} is now {tok.digest[:12]}…, the shard was written "
                                       f"with {s.tokenizer_digest[:12]}…"}
        members = [s for s in members if s not in stale]
        if not members:
            continue
        stage_dir = out / group
        work = stage_dir / f"_tmp-{uuid.uuid4().hex}"
        work.mkdir(parents=True)
        cached: list[Any] = []
        try:
            source = read_input(spark, lake_dir, table, version)
            where = f"{table} v{version}"
            langs = sorted({s.lang for s in members})
            df = source.df
            top = {s.lang: s.top_percent for s in members if s.top_percent is not None}
            if top:
                counts = {r.lang: r["count"] for r in df.groupBy("lang").count().collect()}
                selection = _check_selection(top, langs, df, where)
                df, ranks = _select_top(spark, df, selection, counts)
                cached.append(ranks)
            result = ExportResult(group, table, version, str(stage_dir))
            cfg = ExportConfig(input_table=table, tokenizer=tokenizer, eod_id=eod_id, min_tokens=min_tokens,
                               part_bytes=part_bytes)
            dtype = token_dtype(max(tok.vocab_size, tok.eod_id + 1))
            written = _tokenize_into_parts(spark, df, langs, work, tok, dtype, cfg, result)
            placed = {lang: _place(lang, parts, stage_dir, group, table, version, tok, dtype.name,
                                   part_bytes=part_bytes) for lang, parts in written.items()}
            for s in members:
                parts = placed.get(s.lang, [])
                k = 0 if s.part is None else s.part
                if not parts:
                    done[s.prefix] = {"error": f"{where} gives no {s.lang} document with {min_tokens} or more tokens"}
                elif k >= len(parts):
                    done[s.prefix] = {"error": f"{where} gives {len(parts)} {s.lang} part(s) of part_bytes "
                                               f"{part_bytes}, the run read part {k}"}
                else:
                    done[s.prefix] = {k2: parts[k][k2] for k2 in ("prefix", "docs", "tokens", "checksum",
                                                                 "idx_checksum", "dtype")}
        finally:
            for frame in cached:
                frame.unpersist()
            shutil.rmtree(work, ignore_errors=True)
    return done


def compare_shards(specs: list[ShardSpec], rebuilt: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per `.bin`/`.idx`: the rebuilt file against the manifest's checksum and, where it still
    exists, the file the run read, byte for byte. `identical` only when every available check agrees
    and at least one could be made."""
    from data_engine.export.indexed_dataset import file_checksum

    rows = []
    for s in specs:
        new = rebuilt.get(s.prefix, {"error": "not rebuilt"})
        for ext, recorded in ((".bin", s.checksum), (".idx", s.idx_checksum)):
            row: dict[str, Any] = {"group": s.group, "lang": s.lang, "file": s.prefix + ext, "recorded": recorded,
                                   "rebuilt": None, "rebuilt_checksum": None, "original": "absent",
                                   "identical": False, "reason": None}
            if "error" in new:
                row["reason"] = new["error"]
                rows.append(row)
                continue
            path = new["prefix"] + ext
            row["rebuilt"], row["rebuilt_checksum"] = path, file_checksum(path)
            problems = []
            if recorded is not None and row["rebuilt_checksum"] != recorded:
                problems.append(f"checksum {row['rebuilt_checksum'][:12]}… ≠ the manifest's {recorded[:12]}…")
            original = Path(s.prefix + ext)
            if original.is_file():
                offset = first_difference(original, Path(path))
                row["original"] = "same bytes" if offset is None else f"differs at byte {offset}"
                if offset is not None:
                    problems.append(f"the file the run read differs from the rebuilt one at byte {offset}")
            elif recorded is None:
                problems.append("no recorded checksum and the original file is gone: nothing to compare with")
            row["identical"] = not problems
            row["reason"] = "; ".join(problems) or None
            rows.append(row)
    return rows


def first_difference(a: Path, b: Path, block: int = 1 << 22) -> int | None:
    """The offset of the first byte where two files differ (the shorter one's end, when one is a
    prefix of the other), or None when they are identical."""
    offset = 0
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(block), fb.read(block)
            if x != y:
                n = min(len(x), len(y))
                return offset + next((i for i in range(n) if x[i] != y[i]), n)
            if not x:
                return None
            offset += len(x)
