"""What a checkpoint was trained on: checkpoint → training run(s) → plan and mixture → shard manifest →
table versions, stage by stage → ingest batches → source files (SHA-256).

Everything comes from what was recorded on the way: the checkpoint folder's `sailyard_finished.json`,
the training run's MLflow tags (`train.name`, `train.stage`, `plan_digest`, `shard_manifest_digest`,
`table.read.shard_manifest`, `restore_from`, the base model), its `train-plan` parent (the plan, as a
path and as an artifact), the shard manifest at the version the run read, and the lake's commits
(`data_engine.provenance`). A stage-2 checkpoint leads to the stage-1 run it was restored from, and
that one to the imported (LlamaPro-expanded) base. A link that was never recorded, or is gone, is a
sentence in `missing`; the rest of the chain is still shown.

`lineage()` returns one JSON-able dict. The keys the evaluation harness reads:

    training_tables  [{table, version, path, stage}]: the table versions the shards were exported
                     from, for every stage of the chain (stage 2's weights saw stage 1's data too)
    tables           ["docs_curated@v0", "docs_clean@v1", …]: every table version upstream of them
    source_files     [{path, sha256, size, batch_id}]: every ingested file those versions hold

and for the rest: `target`, `checkpoint`, `stores` (MLflow URIs read), `stages` (the target's stage
first, then the one it was restored from: `stage`, `name`, `run_id`, `runs`, `checkpoint`,
`restore_from`, `plan`, `manifest` with its `shards`, `provenance` trees), `base` and `missing`.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from data_engine import lake as lake_io
from data_engine import tracking
from data_engine.config import read_yaml
from data_engine.digests import file_digest
from data_engine.errors import ConfigError, SailyardError
from data_engine.export.manifest import row_order
from data_engine.provenance import RunReader, ShardSpec, run_summary, store_uris, table_provenance, walk
from data_engine.tables import SHARD_MANIFEST
from trainer import checkpoints

EXPORT_RECORD = "sailyard_export.json"  # trainer.convert.EXPORT_RECORD (importing convert loads torch)
TRAIN_KIND, PLAN_KIND, EXPORT_KIND = "train", "train-plan", "export_hf"
_MAX_STAGES = 8


# --------------------------------------------------------------------------------------------
# The target


def lineage(target: str, *, work_dir: str | Path = "work") -> dict[str, Any]:
    """The chain behind `target`: a NeMo checkpoint, a run's checkpoint folder, an HF export of one, or
    an MLflow run id (a training, `train-plan` or `export_hf` run; a data job's run gives its tables).

    Raises:
        ConfigError: `target` is neither a checkpoint (folder) nor a run id in the MLflow store.
    """
    missing: list[str] = []
    given = Path(target).expanduser()
    checkpoint, folder = _checkpoint_of(given) if given.exists() else (None, None)
    done = checkpoints.finished(folder) if folder is not None else None
    reader = RunReader(store_uris([work_dir, *([done["work_dir"]] if done and done.get("work_dir") else [])]))
    if checkpoint is None and folder is None:
        run = reader.get(target)
        if run is None:
            where = ", ".join(reader.uris) or f"none (no {Path(work_dir) / 'mlflow' / 'mlflow.db'})"
            raise ConfigError(f"{target!r} is neither a checkpoint directory nor an MLflow run id (stores read: "
                              f"{where}); give a checkpoint folder, or the store with --work-dir / MLFLOW_TRACKING_URI")
        if run.data.tags.get("sailyard.kind") not in (TRAIN_KIND, PLAN_KIND, EXPORT_KIND):
            return _data_run(target, run, reader)
        run = _training_run_of(run, reader, missing)
    else:
        run = _run_of_checkpoint(checkpoint, folder, done, reader, missing)
    memo: dict[tuple[str, int], dict[str, Any]] = {}
    stages, base = [], None
    seen: set[str] = set()
    node = _stage(run, checkpoint, folder, reader, memo, missing)
    while node is not None and len(stages) < _MAX_STAGES:
        stages.append(node)
        if node["run_id"]:
            seen.add(node["run_id"])
        node, base = _restored_from(node, reader, memo, missing, seen)
    return _chain(target, checkpoint, reader, stages, base, missing)


def _checkpoint_of(path: Path) -> tuple[Path | None, Path | None]:
    """(checkpoint, the run's checkpoint folder) of a path a user gives."""
    path = path.resolve()
    if (path / EXPORT_RECORD).is_file():  # an HF export: the checkpoint it was written from
        ckpt = Path(json.loads((path / EXPORT_RECORD).read_text(encoding="utf-8"))["checkpoint"])
        return ckpt, ckpt.parent
    if (path / "weights").is_dir() or (path / "context").is_dir():
        return path, path.parent
    if (path / checkpoints.RUN_RECORD).is_file() or (path / checkpoints.FINISHED_RECORD).is_file():
        done = checkpoints.finished(path)
        if done:
            return Path(done["checkpoint"]), path
        last = sorted((p for p in path.glob("*-last") if (p / "weights").is_dir()), key=lambda p: p.stat().st_mtime)
        return (last[-1] if last else None), path
    raise ConfigError(f"{path} is neither a NeMo checkpoint (no weights/ or context/ inside), a training run's "
                      f"checkpoint folder (no {checkpoints.RUN_RECORD}), nor a Hugging Face export "
                      f"(no {EXPORT_RECORD})")


def _same(a: str | Path | None, b: str | Path | None) -> bool:
    return a is not None and b is not None and Path(str(a)).resolve() == Path(str(b)).resolve()


def _train_runs(reader: RunReader) -> list[Any]:
    return reader.search(f"tags.`sailyard.kind` = '{TRAIN_KIND}'")


def _run_of_checkpoint(checkpoint: Path | None, folder: Path | None, done: Mapping[str, Any] | None,
                       reader: RunReader, missing: list[str]) -> Any:
    if done and done.get("mlflow_run_id") and _same(done.get("checkpoint"), checkpoint):
        run = reader.get(done["mlflow_run_id"])
        if run is not None:
            return run
        missing.append(f"{folder}: {checkpoints.FINISHED_RECORD} names MLflow run {done['mlflow_run_id']}, "
                       f"which no store read holds ({', '.join(reader.uris) or 'none'})")
    runs = _train_runs(reader)
    exact = [r for r in runs if _same(r.data.tags.get("checkpoint"), checkpoint)]
    if exact:
        return exact[-1]
    same_folder = [r for r in runs if _same(r.data.tags.get("checkpoints"), folder)]
    if same_folder:
        missing.append(f"{checkpoint} is no run's final checkpoint; shown: the latest run of {folder}")
        return same_folder[-1]
    missing.append(f"no MLflow run recorded checkpoint {checkpoint} (stores read: {', '.join(reader.uris) or 'none'}); "
                   "the run was deleted, or its store is elsewhere (--work-dir / MLFLOW_TRACKING_URI)")
    return None


def _training_run_of(run: Any, reader: RunReader, missing: list[str]) -> Any:
    """A `train-plan` run → its last stage's training run; an `export_hf` run → the run it exported."""
    tags = run.data.tags
    if tags.get("sailyard.kind") == EXPORT_KIND:
        found = reader.get(tags.get("train_run_id", "")) if tags.get("train_run_id") else None
        if found is None:
            missing.append(f"export_hf run {run.info.run_id}: its training run {tags.get('train_run_id')} is gone")
        return found
    if tags.get("sailyard.kind") == PLAN_KIND:
        children = [r for r in reader.search(f"tags.`mlflow.parentRunId` = '{run.info.run_id}'")
                    if r.data.tags.get("sailyard.kind") == TRAIN_KIND]
        if not children:
            missing.append(f"train-plan run {run.info.run_id} has no training run under it")
            return None
        return sorted(children, key=lambda r: (r.data.tags.get("train.stage", ""), r.info.start_time or 0))[-1]
    return run


def _data_run(target: str, run: Any, reader: RunReader) -> dict[str, Any]:
    """A data job's run: the provenance of the tables it wrote (where its lake is recorded)."""
    memo: dict[tuple[str, int], dict[str, Any]] = {}
    trees, missing = [], []
    for name, value in sorted(run.data.tags.items()):
        if name.startswith("table.written.") and "@v" in value:
            path, version = value.rsplit("@v", 1)
            trees.append(table_provenance(path.rsplit("/", 1)[0], name[len("table.written."):], int(version),
                                          runs=reader.summary, _memo=memo))
    if not trees:
        missing.append(f"run {target} ({run.info.run_name}) records no table it wrote")
    flat = _flatten(trees)
    chain = _chain(target, None, reader, [], None, missing + flat["missing"])
    return {**chain, "run": run_summary(run), "provenance": trees, "tables": flat["tables"],
            "source_files": flat["source_files"]}


# --------------------------------------------------------------------------------------------
# One training stage


def _stage(run: Any, checkpoint: Path | None, folder: Path | None, reader: RunReader,
           memo: dict[tuple[str, int], dict[str, Any]], missing: list[str]) -> dict[str, Any] | None:
    if run is None:
        record = folder / checkpoints.RUN_RECORD if folder is not None else None
        if record is None or not record.is_file():
            return None
        ident = json.loads(record.read_text(encoding="utf-8"))
        return {"stage": None, "name": folder.name, "run_id": None, "runs": [], "checkpoint": str(checkpoint),
                "restore_from": None, "base_tags": ident.get("lineage"), "provenance": [], "sources": [],
                "plan": {"digest": ident.get("plan_digest"), "file": "not known without the run"},
                "manifest": {"digest": ident.get("shard_manifest_digest"), "shards": []}}
    tags = run.data.tags
    name = tags.get("train.name")
    runs = [r for r in _train_runs(reader) if name and r.data.tags.get("train.name") == name]
    if all(r.info.run_id != run.info.run_id for r in runs):  # a deleted run is in no search
        runs = sorted([*runs, run], key=lambda r: r.info.start_time or 0)
    if run.info.lifecycle_stage == "deleted":
        missing.append(f"training run {run.info.run_id} is deleted (its record is still read)")
    parent = reader.get(tags["mlflow.parentRunId"]) if tags.get("mlflow.parentRunId") else None
    plan, plan_obj = _plan(tags, parent, reader, missing)
    manifest, lake_dir = _manifest(run, plan_obj, reader, missing)
    if lake_dir and "://" not in lake_dir:  # data jobs keep their runs beside the lake
        reader.extend(store_uris([tracking.work_dir_for(lake_dir)]))
    sources = sorted({(s["source_table"], s["source_version"]) for s in manifest.get("shards", [])
                      if s.get("source_table") and s.get("source_version") is not None})
    trees = [table_provenance(lake_dir, t, v, runs=reader.summary, _memo=memo) for t, v in sources] if lake_dir else []
    return {"stage": tags.get("train.stage"), "name": name, "run_id": run.info.run_id,
            "runs": [{**_brief(r), "checkpoint": r.data.tags.get("checkpoint"),
                      "resumed_from": r.data.tags.get("resumed_from"), "this": r.info.run_id == run.info.run_id}
                     for r in runs],
            "checkpoint": str(checkpoint) if checkpoint else tags.get("checkpoint"),
            "restore_from": tags.get("restore_from"), "base_tags": _base_tags(tags), "plan": plan,
            "manifest": manifest, "lake": lake_dir, "provenance": trees,
            "sources": [{"table": t, "version": v, "path": str(lake_io.table_path(lake_dir, t))} for t, v in sources]}


def _brief(run: Any) -> dict[str, Any]:
    s = run_summary(run)
    return {k: s[k] for k in ("run_id", "name", "status", "deleted", "start", "end")}


def _base_tags(tags: Mapping[str, str]) -> dict[str, Any] | None:
    if not tags.get("base_model") and not tags.get("base_checkpoint"):
        return None
    expansion = None
    if tags.get("expansion.layers"):  # "2→4", new layers "1,3" (trainer.pretrain.lineage_tags)
        old, _, new = tags["expansion.layers"].partition("→")
        expansion = {"source": tags.get("expansion.source"), "old_layers": _int(old), "new_layers": _int(new),
                     "new_layer_indices": [int(i) for i in tags.get("expansion.new_layers", "").split(",") if i]}
    return {"base_model": tags.get("base_model"), "import": tags.get("base_checkpoint"), "expansion": expansion}


def _int(text: str) -> int | None:
    return int(text) if text.strip().isdigit() else None


def _plan(tags: Mapping[str, str], parent: Any, reader: RunReader, missing: list[str]) -> tuple[dict[str, Any], Any]:
    """The plan node and the checked plan (`read_plan`), from its file or else the artifact MLflow kept."""
    from data_engine.export.plan_export import read_plan
    from data_engine.mixture.plan import plan_digest

    digest = tags.get("plan_digest")
    if not digest or digest == "None":
        return {"digest": None, "note": "trained on a manifest stage, not a plan"}, None
    path = parent.data.tags.get("plan") if parent is not None else None
    node: dict[str, Any] = {"digest": digest, "path": path, "file": "missing",
                            "run_id": parent.info.run_id if parent else None}
    if parent is None:
        missing.append(f"plan {digest[:12]}…: the train-plan run that records its path is gone")
    source = None
    if path and Path(path).is_file():
        doc = read_yaml(path, "plan")
        ok = isinstance(doc, Mapping) and doc.get("plan_digest") == digest and plan_digest(doc) == digest
        node["file"] = "matches" if ok else "changed"
        source = Path(path) if ok else None
    if source is None and parent is not None:
        source = _plan_artifact(parent, reader, path, digest)
        if source is not None:
            node["file"] += "; read from the MLflow artifact"
            missing.append(f"plan {path}: the file is {node['file'].split(';')[0]} since the run; its MLflow copy is "
                           "shown")
    if source is None:
        missing.append(f"plan {digest[:12]}…: {path or 'its file'} is {node['file']} and MLflow keeps no copy of it")
        return node, None
    plan = read_plan(source)
    doc = read_yaml(source, "plan")
    mixture = doc.get("mixture") or None
    if mixture:
        mpath = Path(mixture["path"])
        state = ("missing" if not mpath.is_file()
                 else "matches" if file_digest(mpath) == mixture["digest"] else "changed")
        mixture = {**mixture, "file": state}
        if state != "matches":
            missing.append(f"mixture {mpath}: the file is {state} since the plan recorded its sha256 "
                           f"{_short(mixture['digest'])}")
    node.update({"mixture": mixture, "lake": plan.lake, "tokenizer": plan.tokenizer,
                 "groups": {g: {"table": x.table, "version": x.version, "langs": list(x.langs),
                                "top_percent": x.top_percent} for g, x in sorted(plan.groups.items())},
                 "budget_tokens": {s: x.budget_tokens for s, x in sorted(plan.stages.items())}})
    return node, plan


def _plan_artifact(parent: Any, reader: RunReader, path: str | None, digest: str) -> Path | None:
    from data_engine.mixture.plan import plan_digest

    client = reader.client_of(parent)
    try:
        files = [f.path for f in client.list_artifacts(parent.info.run_id, "plan")]
    except Exception:
        return None
    for name in sorted(files, key=lambda f: f != f"plan/{Path(path or '').name}"):
        local = Path(client.download_artifacts(parent.info.run_id, name, tempfile.mkdtemp(prefix="sailyard-lineage-")))
        doc = read_yaml(local, "plan")
        if isinstance(doc, Mapping) and plan_digest(doc) == digest:
            return local
    return None


def _manifest(run: Any, plan: Any, reader: RunReader, missing: list[str]) -> tuple[dict[str, Any], str | None]:
    """The shard manifest version the run read and the rows of the shards it trained on."""
    from data_engine.export.manifest import manifest_digest
    from data_engine.export.plan_export import data_config

    tags, params = run.data.tags, run.data.params
    where = tags.get("table.read.shard_manifest", "")
    recorded = tags.get("shard_manifest_digest")
    node: dict[str, Any] = {"table": SHARD_MANIFEST, "digest": recorded, "data_config": tags.get("data_config"),
                            "shards": []}
    if "@v" not in where:
        missing.append(f"training run {run.info.run_id} records no shard manifest version")
        return node, None
    path, version = where.rsplit("@v", 1)
    lake_dir = path.rsplit("/", 1)[0]
    node.update({"path": path, "version": int(version)})
    if lake_io.table_version(lake_dir, SHARD_MANIFEST) is None:
        missing.append(f"{path}: the shard manifest is gone")
        return node, lake_dir
    try:
        rows = lake_io.read_arrow(lake_dir, SHARD_MANIFEST, version=int(version)).to_pylist()
    except Exception as exc:  # a version whose files were vacuumed, an unreadable log
        missing.append(f"{path}@v{version} cannot be read: {' '.join(str(exc).split())[:200]}")
        return node, lake_dir
    used = _used_rows(rows, plan, tags, params, int(version), data_config, missing)
    node["digest_matches"] = bool(used) and manifest_digest(used) == recorded
    if used and not node["digest_matches"]:
        missing.append(f"{SHARD_MANIFEST}@v{version}: the rows found for the run do not hash to its recorded digest "
                       f"{str(recorded)[:12]}…; the shards listed may not be the ones it read")
    exports = _export_runs(lake_dir, int(version), reader)
    for row in used:
        export = exports.get((row["stage"], row["lang"]))
        node["shards"].append({**{k: row.get(k) for k in ("stage", "lang", "prefix", "part", "docs", "tokens",
                                                          "bytes", "checksum", "idx_checksum", "source_table",
                                                          "source_version", "tokenizer", "tokenizer_digest", "eod_id",
                                                          "dtype", "part_bytes")},
                               "export_run_id": export["run_id"] if export else None,
                               "min_tokens": export["min_tokens"] if export else None})
    return node, lake_dir


def _used_rows(rows: list[dict[str, Any]], plan: Any, tags: Mapping[str, str], params: Mapping[str, str],
               version: int, data_config: Any, missing: list[str]) -> list[dict[str, Any]]:
    """The manifest rows a run read: the exporter's data config of its plan stage, or the manifest
    stage (and weighted languages) a plain run names."""
    stage = tags.get("train.stage", "")
    by_prefix = {r["prefix"]: r for r in rows}
    if plan is not None and stage in plan.stages:
        try:
            prefixes = data_config(plan, plan.stages[stage], rows, version)["paths"][1::2]
        except ConfigError as exc:
            missing.append(str(exc))
            return []
    elif tags.get("plan_digest") not in (None, "None"):
        cfg = tags.get("data_config")
        doc = read_yaml(cfg, "data config") if cfg and Path(cfg).is_file() else None
        if not isinstance(doc, Mapping):
            missing.append(f"the plan and the data config {cfg} are gone: which shards the run read is not known")
            return []
        prefixes = doc.get("paths", [])[1::2]
    else:
        weights = json.loads(params.get("data.weights", "null") or "null")
        prefixes = [r["prefix"] for r in rows if r["stage"] == stage and r["tokens"] > 0
                    and (not weights or r["lang"] in weights)]
    absent = [p for p in prefixes if p not in by_prefix]
    if absent:
        missing.append(f"{SHARD_MANIFEST}@v{version} has no row for {', '.join(absent)}")
    found = [by_prefix[p] for p in prefixes if p in by_prefix]
    return sorted(found, key=row_order)


def _export_runs(lake_dir: str, version: int, reader: RunReader) -> dict[tuple[str, str], dict[str, Any]]:
    """(manifest stage, lang) → the export that last wrote its row by `version`, and its `min_tokens`."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in lake_io.history(lake_dir, SHARD_MANIFEST):
        if int(entry.get("version", -1)) > version or entry.get("job") != "export_shards":
            continue
        run_id = entry.get("mlflow_run_id") or None
        run = reader.get(run_id) if run_id else None
        min_tokens = int(run.data.params.get("export.min_tokens", 1)) if run is not None else None
        for lang in str(entry.get("langs", "")).split(","):
            out.setdefault((str(entry.get("stage")), lang), {"run_id": run_id, "min_tokens": min_tokens})
    return out


def _restored_from(node: dict[str, Any], reader: RunReader, memo: dict[tuple[str, int], dict[str, Any]],
                   missing: list[str], seen: set[str]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(the earlier stage this one's weights came from, or the base model at the chain's start)."""
    src = node.get("restore_from")
    if not src or src == "None":
        return None, node.get("base_tags")
    path = Path(src)
    if path.is_dir() and (path / checkpoints.IMPORT_RECORD).is_file():
        return None, {**(checkpoints.lineage(path) or {}), "checkpoint": str(path)}
    earlier = [r for r in _train_runs(reader) if _same(r.data.tags.get("checkpoint"), src)
               and r.info.run_id not in seen]
    if earlier:
        return _stage(earlier[-1], path, path.parent, reader, memo, missing), None
    base = node.get("base_tags")
    if not (base and _same(base.get("import"), src)):  # not the (since moved) import the run recorded
        finished = checkpoints.finished(path.parent) if path.parent.is_dir() else None
        if finished and finished.get("mlflow_run_id") and finished["mlflow_run_id"] not in seen:
            earlier_run = reader.get(finished["mlflow_run_id"])
            if earlier_run is not None:
                return _stage(earlier_run, path, path.parent, reader, memo, missing), None
        missing.append(f"{node['name']}: restored from {src}, but no MLflow run read recorded writing it "
                       f"and it has no {checkpoints.IMPORT_RECORD}; the chain before it is not known"
                       + (" (the base model below is what the run's tags say)" if base else ""))
    return None, base


# --------------------------------------------------------------------------------------------
# The whole chain


def _flatten(trees: list[dict[str, Any]]) -> dict[str, Any]:
    nodes = [n for tree in trees for n in walk(tree)]
    tables = sorted({f"{n['table']}@v{n['version']}" for n in nodes})
    files: dict[tuple[str, str], dict[str, Any]] = {}
    for n in nodes:
        for batch in n.get("batches", []):
            for f in batch["files"]:
                files.setdefault((f["path"], f["sha256"]), {"path": f["path"], "sha256": f["sha256"], "size": f["size"],
                                                            "batch_id": batch["batch_id"]})
    return {"tables": tables, "source_files": sorted(files.values(), key=lambda f: f["path"]),
            "missing": [m for n in nodes for m in n["missing"]]}


def _chain(target: str, checkpoint: Path | None, reader: RunReader, stages: list[dict[str, Any]],
           base: dict[str, Any] | None, missing: list[str]) -> dict[str, Any]:
    flat = _flatten([t for s in stages for t in s["provenance"]])
    training = [{**src, "stage": s["stage"]} for s in stages for src in s.get("sources", [])]
    first = stages[0]["checkpoint"] if stages else None
    return {"target": target, "checkpoint": str(checkpoint) if checkpoint else first,
            "stores": reader.uris, "stages": stages, "base": base, "training_tables": training,
            "tables": flat["tables"], "source_files": flat["source_files"],
            "missing": list(dict.fromkeys(missing + flat["missing"]))}


# --------------------------------------------------------------------------------------------
# Shards again


def shard_specs(chain: Mapping[str, Any]) -> tuple[str, list[ShardSpec]]:
    """The lake and the shards the target's stage trained on, as `provenance.rebuild_shards` takes them.

    Raises:
        SailyardError: the chain does not say which shards, from which lake.
    """
    if not chain.get("stages") or not chain["stages"][0].get("lake"):
        raise SailyardError(f"{chain.get('target')}: the lineage names no shard manifest to rebuild from: "
                            + "; ".join(chain.get("missing", [])[:3]))
    stage = chain["stages"][0]
    groups = (stage.get("plan") or {}).get("groups") or {}
    specs = []
    for s in stage["manifest"]["shards"]:
        top = (groups.get(s["stage"], {}).get("top_percent") or {}).get(s["lang"])
        specs.append(ShardSpec(group=s["stage"], lang=s["lang"], prefix=s["prefix"], table=s["source_table"],
                               version=int(s["source_version"]), checksum=s.get("checksum"),
                               idx_checksum=s.get("idx_checksum"), tokenizer=s["tokenizer"],
                               tokenizer_digest=s["tokenizer_digest"], eod_id=int(s["eod_id"]), dtype=s.get("dtype"),
                               top_percent=None if top is None else float(top),
                               min_tokens=int(s.get("min_tokens") or 1), part=s.get("part"),
                               part_bytes=s.get("part_bytes")))
    if not specs:
        raise SailyardError(f"{chain.get('target')}: no shard of the run was found in its manifest: "
                            + "; ".join(chain.get("missing", [])[:3]))
    return stage["lake"], specs


def reproduce(target: str, out_dir: str | Path, *, work_dir: str | Path = "work", spark: Any = None) -> dict[str, Any]:
    """Rebuild the shards `target` trained on under `out_dir` and compare them byte for byte.

    Raises:
        ConfigError: `out_dir` is (or holds) a folder of the shards themselves, or lies in the lake.
    """
    from data_engine.provenance import compare_shards, rebuild_shards

    chain = lineage(target, work_dir=work_dir)
    lake_dir, specs = shard_specs(chain)
    out = Path(out_dir).expanduser().resolve()
    for s in specs:
        here = Path(s.prefix).resolve().parent
        if out == here or out in here.parents or _same(out / s.group, here):
            raise ConfigError(f"--out {out} holds the shards the run trained on ({here}); rebuild somewhere else")
    lake_root = Path(lake_dir).resolve() if "://" not in lake_dir else None
    if lake_root is not None and (out == lake_root or lake_root in out.parents):
        raise ConfigError(f"--out {out} is inside the lake {lake_root}; rebuild somewhere else")
    if spark is None:
        from data_engine.spark import get_spark

        spark = get_spark("sailyard-reproduce-shards")
    files = compare_shards(specs, rebuild_shards(spark, lake_dir, specs, out))
    differ = [f for f in files if not f["identical"]]
    return {"target": target, "checkpoint": chain["checkpoint"], "stage": chain["stages"][0]["stage"],
            "run_id": chain["stages"][0]["run_id"], "out": str(out), "lake": lake_dir,
            "identical": not differ, "files": files, "differ": [f["file"] for f in differ],
            "checked": len(files)}


# --------------------------------------------------------------------------------------------
# For people


def _short(digest: str | None, n: int = 12) -> str:
    return f"{digest[:n]}…" if digest else "not recorded"


def _table_lines(node: Mapping[str, Any], depth: int, shown: set[tuple[str, int]]) -> list[str]:
    pad = "  " * depth
    key = (node["table"], node["version"])
    head = f"{pad}{node['table']}@v{node['version']}"
    if key in shown:
        return [f"{head}  (see above)"]
    shown.add(key)
    commit, run = node.get("commit") or {}, node.get("run") or {}
    if node.get("batches") is not None:
        head += f"  ← ingest, {len(node['batches'])} batch{'es' if len(node['batches']) != 1 else ''}"
    elif commit.get("stage"):
        head += f"  ← {commit['stage']} run {commit.get('run_id') or commit.get('sailyard_run')}"
        head += f" ({run.get('status', 'not in MLflow')}, {commit.get('time')})"
        others = [t for t in commit.get("set", []) if t != node["table"]]
        if others:
            head += f", with {', '.join(others)}"
        if run.get("models"):
            head += f"; models {', '.join(f'{k}={v}' for k, v in run['models'].items())}"
    elif not commit.get("stage") and commit:
        head += f"  ← written outside a sailyard stage ({commit.get('operation')}, {commit.get('time')})"
    lines = [head]
    for batch in node.get("batches", []):
        lines.append(f"{pad}  batch {batch['batch_id']}  source {batch['source']}, ingest run {batch['run_id'] or '?'}"
                     f" (v{batch['commit_version'] if batch['commit_version'] is not None else '?'})")
        lines += [f"{pad}    {f['path']}  sha256 {f['sha256']}  {f['size']} bytes, {f['records']} records"
                  f"{' (incomplete)' if f['complete'] is False else ''}" for f in batch["files"]]
    for child in node.get("inputs", []):
        lines += _table_lines(child, depth + 1, shown)
    return lines


def render(chain: Mapping[str, Any]) -> str:
    """The chain as an indented tree a person reads."""
    lines = [f"lineage of {chain['target']}"]
    if chain.get("checkpoint"):
        lines.append(f"checkpoint {chain['checkpoint']}")
    shown: set[tuple[str, int]] = set()
    if not chain["stages"] and chain.get("run"):  # a data job's run: the tables it wrote
        run = chain["run"]
        lines.append(f"  {run['name']} run {run['run_id']} ({run['status']}) wrote")
        for tree in chain.get("provenance", []):
            lines += _table_lines(tree, 2, shown)
    for st in chain["stages"]:
        lines.append(f"  {st['stage'] or 'stage ?'}  training {st['name']}")
        for r in st["runs"]:
            mark = "  ← wrote this checkpoint" if r["this"] else ""
            lines.append(f"    run {r['run_id']}  {r['status']}{' (deleted)' if r['deleted'] else ''}, {r['start']} → "
                         f"{r['end']}, checkpoint {Path(str(r['checkpoint'])).name}{mark}")
        plan = st.get("plan") or {}
        if plan.get("digest"):
            lines.append(f"    plan {plan.get('path')}  digest {_short(plan['digest'])}  (file {plan['file']})")
            mix = plan.get("mixture")
            if mix:
                lines.append(f"      mixture {mix['path']}  sha256 {_short(mix['digest'])}  (file {mix['file']})")
        elif plan.get("note"):
            lines.append(f"    {plan['note']}")
        m = st.get("manifest") or {}
        if m.get("version") is not None:
            ok = "rows match" if m.get("digest_matches") else "rows do NOT match"
            lines.append(f"    {SHARD_MANIFEST}@v{m['version']}  digest {_short(m.get('digest'))} ({ok})"
                         f"  data config {m.get('data_config')}")
        lines += [f"      {s['stage']}/{s['lang']}  {s['prefix']}  {s['docs']} docs, {s['tokens']} tokens, "
                  f"bin {_short(s['checksum'], 16)} idx {_short(s['idx_checksum'], 16)}  ← {s['source_table']}"
                  f"@v{s['source_version']}" for s in m.get("shards", [])]
        if st["provenance"]:
            lines.append("    tables")
        for tree in st["provenance"]:
            lines += _table_lines(tree, 3, shown)
        if st.get("restore_from"):
            lines.append(f"    restored from {st['restore_from']}")
    base = chain.get("base")
    if base:
        exp = base.get("expansion") or {}
        grown = (f", LlamaPro {exp.get('old_layers')}→{exp.get('new_layers')} layers (new: "
                 f"{', '.join(str(i) for i in exp.get('new_layer_indices') or [])})" if exp else "")
        lines.append(f"  base model {base.get('base_model')}{grown}, imported as {base.get('import')}")
    elif chain["stages"]:
        lines.append("  base model: none recorded (random initial weights)")
    if chain.get("missing"):
        lines.append("missing links")
        lines += [f"  - {m}" for m in chain["missing"]]
    return "\n".join(lines)


def render_reproduction(result: Mapping[str, Any]) -> str:
    """The per-file table of `reproduce`."""
    rows = [("shard", "file", "manifest", "rebuilt", "run's file", "verdict")]
    for f in result["files"]:
        rows.append((f"{f['group']}/{f['lang']}", Path(f["file"]).name[-40:], _short(f["recorded"], 10),
                     _short(f["rebuilt_checksum"], 10), f["original"],
                     "identical" if f["identical"] else f"DIFFERS: {f['reason']}"))
    widths = [max(len(str(r[i])) for r in rows) for i in range(5)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r[:5], widths, strict=True)) + "  " + r[5] for r in rows]
    verdict = (f"all {result['checked']} files byte-identical" if result["identical"]
               else f"{len(result['differ'])} of {result['checked']} files differ")
    return "\n".join([*lines, verdict])
