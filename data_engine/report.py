"""The per-stage, per-language count table of a lake, as the demo prints it.

Counts come from the tables themselves (Spark aggregations over the latest versions, a handful of
rows back to the driver), so the table is right after any sequence of jobs, re-runs included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from data_engine import lake
from data_engine.dedup.registry import ALL_DEDUP_STAGES
from data_engine.langs import LANGS
from data_engine.stage import set_state
from data_engine.tables import DOCS_CLEAN, DOCS_CURATED, DOCS_DEDUP, DOCS_RAW, DROPS, QUARANTINE, SHARD_MANIFEST


@dataclass
class LakeReport:
    columns: list[str] = field(default_factory=list)
    rows: dict[str, dict[str, int]] = field(default_factory=dict)  # lang → column → count
    quarantined: dict[str, int] = field(default_factory=dict)  # reason code → count
    versions: dict[str, int] = field(default_factory=dict)
    sets: dict[str, Any] = field(default_factory=dict)  # table → stage.SetState of its latest commit

    def total(self, column: str) -> int:
        return sum(r.get(column, 0) for r in self.rows.values())


def _by_lang(df: Any) -> dict[str, int]:
    return {r.lang: r["count"] for r in df.groupBy("lang").count().collect()}


def lake_report(spark: Any, lake_dir: str, *, stage: str | None = None) -> LakeReport:
    from pyspark.sql import functions as F

    report = LakeReport()

    def add(column: str, counts: dict[str, int]) -> None:
        report.columns.append(column)
        for lang, n in counts.items():
            report.rows.setdefault(lang, {})[column] = n

    if lake.exists(lake_dir, DOCS_RAW):
        table = lake.read_table(spark, lake_dir, DOCS_RAW)
        report.versions[DOCS_RAW] = table.version
        add("docs_raw", _by_lang(table.df))
    if lake.exists(lake_dir, QUARANTINE):
        table = lake.read_table(spark, lake_dir, QUARANTINE)
        report.versions[QUARANTINE] = table.version
        code = F.split("reason", ":").getItem(0).alias("code")
        report.quarantined = {r.code: r["count"] for r in table.df.groupBy(code).count().collect()}
    drops: list[Any] = []
    if lake.exists(lake_dir, DROPS):
        table = lake.read_table(spark, lake_dir, DROPS)
        report.versions[DROPS] = table.version
        drops = table.df.groupBy("stage", "lang").count().collect()

    def add_drops(stages: tuple[str, ...]) -> None:
        for name in stages:
            per_lang = {r.lang: r["count"] for r in drops if r.stage == name}
            if per_lang:
                add(f"-{name}", per_lang)

    add_drops(("clean", "lid"))
    for name in (DOCS_CLEAN,):
        if lake.exists(lake_dir, name):
            table = lake.read_table(spark, lake_dir, name)
            report.versions[name] = table.version
            add(name, _by_lang(table.df))
    add_drops(ALL_DEDUP_STAGES)
    if lake.exists(lake_dir, DOCS_DEDUP):
        table = lake.read_table(spark, lake_dir, DOCS_DEDUP)
        report.versions[DOCS_DEDUP] = table.version
        add("docs_dedup", _by_lang(table.df))
    add_drops(("quality",))
    if lake.exists(lake_dir, DOCS_CURATED):
        table = lake.read_table(spark, lake_dir, DOCS_CURATED)
        report.versions[DOCS_CURATED] = table.version
        add("docs_curated", _by_lang(table.df))
    if lake.exists(lake_dir, SHARD_MANIFEST):
        manifest = lake.read_arrow(lake_dir, SHARD_MANIFEST).to_pylist()
        report.versions[SHARD_MANIFEST] = lake.table_version(lake_dir, SHARD_MANIFEST) or 0
        stages = sorted({m["stage"] for m in manifest})
        for name in [stage] if stage else stages:
            rows = [m for m in manifest if m["stage"] == name]
            add(f"{name} docs", {m["lang"]: m["docs"] for m in rows})
            add(f"{name} tokens", {m["lang"]: m["tokens"] for m in rows})
    for name in (DOCS_RAW, DOCS_CLEAN, DOCS_DEDUP, DOCS_CURATED):  # each stage's main output
        state = set_state(lake_dir, name)
        if state is not None:
            report.sets[name] = state
    return report


def format_report(report: LakeReport) -> str:
    order = [lang for lang in LANGS if lang in report.rows]
    order += sorted(set(report.rows) - set(order))
    head = ["lang"] + report.columns
    body = [[lang] + [str(report.rows[lang].get(c, 0)) for c in report.columns] for lang in order]
    body.append(["total"] + [str(report.total(c)) for c in report.columns])
    widths = [max(len(row[i]) for row in [head] + body) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths,
                                                                                             strict=True)))

    out = [line(head), "  ".join("-" * w for w in widths)] + [line(r) for r in body]
    if report.quarantined:
        total = sum(report.quarantined.values())
        detail = ", ".join(f"{k} {v}" for k, v in sorted(report.quarantined.items()))
        out.append(f"quarantined (no language): {total}  ({detail})")
    for name, state in report.sets.items():
        if state.consistent:
            others = ", ".join(t for t in state.tables if t != name)
            out.append(f"{name}: {state.stage} run {state.run} (with {others})")
        else:
            stale = ", ".join(f"{t} from run {r}" for t, r in state.tables.items() if r != state.run)
            out.append(f"{name}: INCONSISTENT — {state.stage} run {state.run}, but {stale}; re-run {state.stage}")
    return "\n".join(out)
