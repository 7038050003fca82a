"""The training tables behind a checkpoint, and what the contamination audit said about them.

A training run tags the shard manifest it read (`table.read.shard_manifest` = `<lake>/shard_manifest@vN`)
and the table versions its shards came from (`source_tables` = `docs_curated@v3,…`); a stage-2 run
also names the stage-1 checkpoint it restored (`restore_from`), whose run adds its own tables. So
the eval of a stage-2 checkpoint reports the audit of everything the weights have seen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from data_engine import tracking


def _run_tags(work_dir: Path, run_id: str) -> dict[str, str] | None:
    from mlflow.tracking import MlflowClient

    try:
        return dict(MlflowClient(tracking_uri=tracking.tracking_uri(work_dir)).get_run(run_id).data.tags)
    except Exception:
        return None


def tables_behind(run_id: str | None, work_dir: Path) -> list[dict[str, Any]]:
    """[{lake, table, version, run}] for the run and the runs it restored from, oldest stage last."""
    from eval.checkpoint import _nemo_checkpoint, training_run_of

    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    while run_id and run_id not in seen:
        seen.add(run_id)
        tags = _run_tags(work_dir, run_id)
        if tags is None:
            break
        manifest = tags.get("table.read.shard_manifest", "")
        lake = manifest.rsplit("@v", 1)[0].rsplit("/shard_manifest", 1)[0] if manifest else None
        for source in filter(None, tags.get("source_tables", "").split(",")):
            table, _, version = source.partition("@v")
            if lake and version.isdigit():
                entry = {"lake": lake, "table": table, "version": int(version), "run": run_id}
                if entry not in out:
                    out.append(entry)
        restore = tags.get("restore_from")
        if not restore or restore == "None":
            break
        nemo = _nemo_checkpoint(Path(restore)) if Path(restore).is_dir() else None
        run_id = training_run_of(nemo, work_dir)
    return out


def training_data_config(run_id: str, work_dir: Path) -> dict[str, Any] | None:
    """{paths, split, eod_id} of the data a training run read: its NeMo data config and split."""
    import yaml
    from mlflow.tracking import MlflowClient

    try:
        run = MlflowClient(tracking_uri=tracking.tracking_uri(work_dir)).get_run(run_id)
    except Exception:
        return None
    config = run.data.tags.get("data_config")
    if not config or config == "None" or not Path(config).is_file():
        return None
    doc = yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {}
    split = run.data.params.get("data.split", "98,2,0")
    eod = run.data.params.get("data.eod_id")
    return {"paths": doc.get("paths") or [], "split": split.strip('"'),
            "eod_id": int(eod) if eod and eod.strip('"').isdigit() else None}


def contamination_verdict(run_id: str | None, work_dir: Path) -> dict[str, Any]:
    """The audit's verdict on every table behind the run: per table version, what it found, or that
    no audit of that exact version exists."""
    from data_engine.contamination import verdict

    tables = list({(t["lake"], t["table"], t["version"]): t for t in tables_behind(run_id, work_dir)}.values())
    per_table = []
    for t in tables:
        found = verdict(t["lake"], t["table"], t["version"])
        per_table.append({"table": t["table"], "version": t["version"], "lake": t["lake"],
                          "audited": found is not None, **({"verdict": found} if found else {})})
    audited = [p for p in per_table if p["audited"]]
    return {"tables": per_table, "audited": bool(per_table) and len(audited) == len(per_table),
            "contaminated_items": sum(_dirty(p["verdict"]) for p in audited),
            "items": max((_items(p["verdict"]) for p in audited), default=0),
            "table": ", ".join(f"{p['table']}@v{p['version']}" for p in per_table) or None}


def _dirty(v: dict[str, Any]) -> int:
    return int(v.get("contaminated_items", v.get("contaminated", 0)) or 0)


def _items(v: dict[str, Any]) -> int:
    return int(v.get("items", 0) or 0)
