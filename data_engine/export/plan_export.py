"""Export the shards a mixture plan names, and one NeMo data config per plan stage.

A plan (`plan.yaml`, written by `sailyard plan`) names shard groups — a table at an exact version,
its languages, optionally a stricter top-percent selection per language — and per training stage a
blend of `<group>/<lang>` prefixes with weights. Each group is exported as its own manifest stage
(shards in `<out>/<group>/`, every row stamped with the plan's digest); then each plan stage gets
`<out>/<stage>.data.yaml`, `{stage, plan_digest, manifest_version, paths: [w1, prefix1, ...]}`,
the `paths` NeMo's `PreTrainingDataModule` takes as they are (`trainer.data.blend_from_data_config`).

Everything that can be checked before a shard is written is checked first: the plan's digest
against its content, its prefixes and weights, the tokenizer, every group's table version, scores
and languages. A group failing later (no document with enough tokens, say) leaves the groups
exported before it committed, but no data config is written until every group is in the manifest.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from data_engine import lake
from data_engine.config import read_yaml
from data_engine.errors import ConfigError, TableNotFoundError
from data_engine.export.config import ExportConfig
from data_engine.export.manifest import read_manifest, row_order
from data_engine.export.shards import ExportResult, export_shards
from data_engine.langs import normalize_lang
from data_engine.mixture.plan import plan_digest  # the writer's definition: one digest for both sides
from data_engine.tokenizer import identity

DATA_CONFIG_SUFFIX = ".data.yaml"
WEIGHT_TOLERANCE = 1e-6
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class ShardGroup:
    """Shards one plan group names: `table` at `version`, these languages, maybe a selection."""

    name: str
    table: str
    version: int
    langs: tuple[str, ...]
    top_percent: dict[str, float] | None = None


@dataclass(frozen=True)
class BlendEntry:
    lang: str
    kind: str
    prefix: str  # "<group>/<lang>"
    weight: float

    @property
    def group(self) -> str:
        return self.prefix.split("/", 1)[0]


@dataclass(frozen=True)
class PlanStage:
    name: str
    blend: tuple[BlendEntry, ...]
    budget_tokens: int | None = None


@dataclass(frozen=True)
class Plan:
    path: Path
    digest: str
    lake: str | None
    tokenizer: str
    tokenizer_digest: str
    groups: dict[str, ShardGroup]
    stages: dict[str, PlanStage]


@dataclass
class PlanExportResult:
    plan: Plan
    out_dir: str
    exports: dict[str, ExportResult] = field(default_factory=dict)
    """Group → its export (the manifest stage of the same name)."""
    data_configs: dict[str, str] = field(default_factory=dict)
    """Plan stage → the data config written for it."""
    manifest_version: int = -1
    """The shard_manifest version the data configs refer to (every group's rows in it)."""

    @property
    def plan_digest(self) -> str:
        return self.plan.digest

    @property
    def groups(self) -> dict[str, dict[str, dict[str, Any]]]:
        return {g: {lang: {"docs": s["docs"], "tokens": s["tokens"], "prefix": s["prefix"], "parts": len(s["parts"])}
                    for lang, s in sorted(r.shards.items())}
                for g, r in sorted(self.exports.items())}


def read_plan(path: str | Path) -> Plan:
    """Load and check a plan: its digest names exactly its content, every blend prefix names a
    group and one of its languages, each stage's weights sum to 1.

    Raises:
        ConfigError: unreadable or malformed, tampered with (digest mismatch), or inconsistent;
            the message lists every problem found.
    """
    path = Path(path).expanduser()
    doc = read_yaml(path, "plan")
    if not isinstance(doc, Mapping):
        raise ConfigError(f"plan {path}: expected a mapping with plan_digest, shards and stages")
    recorded, digest = doc.get("plan_digest"), plan_digest(doc)
    if recorded != digest:
        raise ConfigError(f"plan {path}: plan_digest {str(recorded)[:16]}… does not match its content "
                          f"({digest[:16]}…): the file was edited after `sailyard plan` wrote it; "
                          "run `sailyard plan` again instead of editing the plan")
    problems: list[str] = []
    for key in ("tokenizer", "tokenizer_digest"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            problems.append(f"{key}: missing")
    groups = _groups(doc.get("shards"), problems)
    stages = _stages(doc.get("stages"), groups, problems)
    if problems:
        raise ConfigError(f"plan {path}:\n  " + "\n  ".join(problems))
    lake_dir = doc.get("lake")
    return Plan(path=path.resolve(), digest=digest, lake=str(lake_dir) if lake_dir else None,
                tokenizer=doc["tokenizer"], tokenizer_digest=doc["tokenizer_digest"], groups=groups, stages=stages)


def _groups(raw: Any, problems: list[str]) -> dict[str, ShardGroup]:
    if not isinstance(raw, Mapping) or not raw:
        problems.append("shards: expected a mapping of shard groups")
        return {}
    groups = {}
    for name, g in raw.items():
        where = f"shards.{name}"
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            problems.append(f"{where}: a group name must be a plain folder name (letters, digits, . _ -)")
            continue
        if not isinstance(g, Mapping):
            problems.append(f"{where}: expected a mapping with table, version, langs")
            continue
        table, version, langs, top = g.get("table"), g.get("version"), g.get("langs"), g.get("top_percent")
        before = len(problems)
        if not isinstance(table, str) or not table:
            problems.append(f"{where}.table: missing")
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            problems.append(f"{where}.version: expected a table version (0 or more), got {version!r}")
        if not isinstance(langs, list) or not all(isinstance(x, str) for x in langs):
            problems.append(f"{where}.langs: expected a list of language codes, got {langs!r}")
            langs = []
        odd = [x for x in langs if normalize_lang(x) != x]
        if odd:
            problems.append(f"{where}.langs: {odd} are not table codes (e.g. 'tha', not 'th')")
        if len(set(langs)) != len(langs):
            problems.append(f"{where}.langs: a language is listed twice in {langs}")
        if top is not None:
            if not isinstance(top, Mapping):
                problems.append(f"{where}.top_percent: expected null or language → percent, got {top!r}")
            else:
                problems += [f"{where}.top_percent.{lang}: not one of the group's langs" for lang in top
                             if lang not in langs]
                problems += [f"{where}.top_percent.{lang}: expected a percent in (0, 100], got {p!r}"
                             for lang, p in top.items()
                             if isinstance(p, bool) or not isinstance(p, int | float) or not 0 < p <= 100]
        if len(problems) == before:
            groups[name] = ShardGroup(name, table, version, tuple(langs), dict(top) if top else None)
    return groups


def _stages(raw: Any, groups: Mapping[str, ShardGroup], problems: list[str]) -> dict[str, PlanStage]:
    if not isinstance(raw, Mapping) or not raw:
        problems.append("stages: expected a mapping of training stages")
        return {}
    stages = {}
    for name, st in raw.items():
        where = f"stages.{name}"
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            problems.append(f"{where}: a stage name must be a plain file name (letters, digits, . _ -)")
            continue
        blend = st.get("blend") if isinstance(st, Mapping) else None
        if not isinstance(blend, list) or not blend:
            problems.append(f"{where}.blend: expected a list of entries")
            continue
        entries, seen = [], set()
        for i, e in enumerate(blend):
            at = f"{where}.blend[{i}]"
            if not isinstance(e, Mapping):
                problems.append(f"{at}: expected a mapping with lang, kind, prefix, weight")
                continue
            prefix, weight, lang = e.get("prefix"), e.get("weight"), e.get("lang")
            if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight) \
                    or weight < 0:
                problems.append(f"{at}.weight: expected a number ≥ 0, got {weight!r}")
                continue
            group_name, _, prefix_lang = str(prefix).partition("/")
            group = groups.get(group_name)
            if not isinstance(prefix, str) or group is None:
                problems.append(f"{at}.prefix: {prefix!r} names no shard group (groups: {sorted(groups)})")
            elif prefix_lang not in group.langs:
                problems.append(f"{at}.prefix: {prefix!r}: {prefix_lang!r} is not a language of group "
                                f"{group_name!r} ({', '.join(group.langs)})")
            elif lang != prefix_lang:
                problems.append(f"{at}: lang {lang!r} but prefix {prefix!r}")
            elif prefix in seen:
                problems.append(f"{at}.prefix: {prefix!r} appears twice in the blend")
            else:
                seen.add(prefix)
                entries.append(BlendEntry(lang, str(e.get("kind", "")), prefix, float(weight)))
        total = sum(float(e["weight"]) for e in blend if isinstance(e, Mapping)
                    and isinstance(e.get("weight"), int | float) and not isinstance(e.get("weight"), bool))
        if abs(total - 1.0) > WEIGHT_TOLERANCE:
            problems.append(f"{where}.blend: weights sum to {total:.9g}, not 1")
        if entries and not any(e.weight > 0 for e in entries):
            problems.append(f"{where}.blend: every weight is 0")
        budget = st.get("budget_tokens")
        stages[name] = PlanStage(name, tuple(entries), budget if isinstance(budget, int) else None)
    return stages


def export_plan(spark: Any, lake_dir: str, out_dir: str, plan_path: str | Path,
                cfg: ExportConfig = ExportConfig(), *, run: Any = None) -> PlanExportResult:
    """Export every shard group of the plan, then write `<out>/<stage>.data.yaml` per plan stage.

    `cfg` gives the tokenizer and its settings (its `input_table`/`langs` are the plan's, per
    group); the tokenizer must be the one the plan was computed with.

    Raises:
        ConfigError: a bad plan (see `read_plan`), another lake or tokenizer than the plan's, a
            group whose table version does not exist, lacks `quality_score` for its selection or a
            language's documents — all before anything is written.
        InputError, TableConflictError: from `export_shards`, for the group that failed.
    """
    plan = read_plan(plan_path)
    if plan.lake and Path(plan.lake).expanduser().resolve() != Path(lake_dir).expanduser().resolve():
        raise ConfigError(f"plan {plan.path} was computed from lake {plan.lake}, not {lake_dir}; its table "
                          "versions name that lake's data")
    tok = identity(cfg.tokenizer, cfg.eod_id)
    if tok.digest != plan.tokenizer_digest:
        raise ConfigError(f"plan {plan.path} counted tokens with {plan.tokenizer!r} (tokenizer.json sha256 "
                          f"{plan.tokenizer_digest[:12]}…); the export's tokenizer {cfg.tokenizer!r} is "
                          f"{tok.digest[:12]}…; export with --tokenizer {plan.tokenizer} or plan again")
    _check_groups(spark, lake_dir, plan)
    out = Path(out_dir).expanduser().resolve()
    result = PlanExportResult(plan, str(out))
    for name, group in sorted(plan.groups.items()):
        if not group.langs:  # a group no blend can name (read_plan checks prefixes); never "all languages"
            continue
        group_cfg = dataclasses.replace(cfg, input_table=group.table, langs=group.langs)
        result.exports[name] = export_shards(spark, lake_dir, str(out), name, group_cfg,
                                             input_version=group.version, run=run,
                                             top_percent=group.top_percent, plan_digest=plan.digest,
                                             whole_stage=True)
    version, rows = read_manifest(lake_dir)
    assert version is not None  # every group committed
    result.manifest_version = version
    for name, stage in sorted(plan.stages.items()):
        doc = data_config(plan, stage, rows, version)
        result.data_configs[name] = str(write_data_config(out / f"{name}{DATA_CONFIG_SUFFIX}", doc))
    return result


def _check_groups(spark: Any, lake_dir: str, plan: Plan) -> None:
    """Every group's table version exists and has what the group asks for; nothing is written."""
    from pyspark.sql import functions as F

    problems = []
    for name, group in sorted(plan.groups.items()):
        if not group.langs:
            continue
        where = f"shards.{name}: {group.table} v{group.version}"
        latest = lake.table_version(lake_dir, group.table)
        if latest is None or group.version > latest:
            problems.append(f"{where} does not exist in lake {lake_dir} "
                            f"({'no such table' if latest is None else f'latest version {latest}'})")
            continue
        try:
            df = lake.read_table(spark, lake_dir, group.table, version=group.version).df
        except TableNotFoundError as exc:
            problems.append(f"{where} cannot be read: {exc}")
            continue
        if group.top_percent and "quality_score" not in df.columns:
            problems.append(f"{where} has no quality_score column for its top_percent selection")
            continue
        present = {r.lang for r in df.where(F.col("lang").isin(list(group.langs))).select("lang").distinct().collect()}
        missing = [lang for lang in group.langs if lang not in present]
        if missing:
            problems.append(f"{where} has no documents of {', '.join(missing)}")
    if problems:
        raise ConfigError(f"plan {plan.path} cannot be exported; nothing was written:\n  " + "\n  ".join(problems))


def data_config(plan: Plan, stage: PlanStage, rows: list[dict[str, Any]], manifest_version: int) -> dict[str, Any]:
    """The NeMo data config of `stage`: each entry's weight shared by its group-language's parts in
    proportion to their tokens (so the language's total is the plan's); entries of weight 0 are
    left out (Megatron refuses them)."""
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        by_key.setdefault((row["stage"], row["lang"]), []).append(row)
    entries = [e for e in stage.blend if e.weight > 0]
    total = sum(e.weight for e in entries)
    paths: list[float | str] = []
    for entry in entries:
        shards = [r for r in by_key.get((entry.group, entry.lang), []) if r.get("plan_digest") == plan.digest]
        if not shards:
            raise ConfigError(f"stages.{stage.name}: shard_manifest v{manifest_version} has no {entry.prefix} "
                              f"shard of plan {plan.digest[:12]}… (another export replaced it meanwhile?); "
                              "export the plan again")
        lang_tokens = sum(r["tokens"] for r in shards)
        for row in sorted(shards, key=row_order):
            paths += [entry.weight / total * row["tokens"] / lang_tokens, row["prefix"]]
    return {"stage": stage.name, "plan_digest": plan.digest, "manifest_version": manifest_version,
            "paths": paths}


def write_data_config(path: Path, doc: Mapping[str, Any]) -> Path:
    """Write `doc` as YAML at `path`, replacing any old file atomically."""
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.write_text(yaml.safe_dump(dict(doc), sort_keys=False, allow_unicode=True), encoding="utf-8")
    os.replace(staging, path)
    return path
