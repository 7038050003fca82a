"""Run the configured dedup stages over a pinned input version; write `docs_dedup` and `drops`.

Each stage sees only what the previous stages kept. The dedup run owns the dedup partitions of
`drops` (stage = url, exact, near, lines): it replaces all of them in one commit, so `drops`
always explains exactly the current `docs_dedup`, and a re-run gives the same tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from data_engine import lake
from data_engine.config import DedupConfig
from data_engine.dedup.base import DROPS_COLUMNS
from data_engine.dedup.lines import LINE_DROPS_SCHEMA
from data_engine.dedup.registry import ALL_DEDUP_STAGES, STAGES
from data_engine.tables import DOCS_CLEAN, DOCS_DEDUP, DOCS_RAW, DROPS, LINE_DROPS

#: Tables besides docs_dedup and drops that a dedup run rewrites, with their schemas.
OWNED_TABLES = {LINE_DROPS: LINE_DROPS_SCHEMA}


@dataclass
class StageCounts:
    input: int = 0
    kept: int = 0
    dropped: int = 0
    by_lang: dict[str, dict[str, int]] = field(default_factory=dict)  # lang → {in, kept, dropped}
    metrics: dict[str, float] = field(default_factory=dict)  # stage-specific (candidates, edges, …)


@dataclass
class DedupResult:
    input_table: str
    input_version: int
    records: int = 0
    kept: int = 0
    dropped: int = 0
    stages: dict[str, StageCounts] = field(default_factory=dict)
    tables: dict[str, int] = field(default_factory=dict)


def _count(tagged: Any) -> StageCounts:
    from pyspark.sql import functions as F

    counts = StageCounts()
    rows = tagged.groupBy("lang", (~F.col("_drop")).alias("kept")).count().collect()
    for r in rows:
        lang = counts.by_lang.setdefault(r.lang, {"in": 0, "kept": 0, "dropped": 0})
        key = "kept" if r.kept else "dropped"
        lang[key] += r["count"]
        lang["in"] += r["count"]
        setattr(counts, key, getattr(counts, key) + r["count"])
        counts.input += r["count"]
    return counts


def dedup(spark: Any, lake_dir: str, cfg: DedupConfig = DedupConfig(), *,
          input_version: int | None = None, run: Any = None) -> DedupResult:
    table = cfg.input_table or lake.first_existing(lake_dir, (DOCS_CLEAN, DOCS_RAW), purpose="dedup")
    source = lake.read_table(spark, lake_dir, table, version=input_version)
    if run is not None:
        run.table_read(source.name, source.path, source.version)
    base_dedup = lake.table_version(lake_dir, DOCS_DEDUP)
    base_drops = lake.table_version(lake_dir, DROPS)
    result = DedupResult(table, source.version)
    df = source.df
    stage_results = []
    try:
        for name in cfg.stages:
            out = STAGES[name](df, cfg)
            stage_results.append(out)
            result.stages[name] = _count(out.tagged)
            result.stages[name].metrics = dict(out.metrics)
            df = out.kept
        if stage_results:
            result.records = result.stages[cfg.stages[0]].input
        else:
            result.records = df.count()
        meta = {"job": "dedup", "input": f"{table}@v{source.version}",
                "stages": ",".join(cfg.stages), "mlflow_run_id": getattr(run, "run_id", "")}
        written = lake.write_table(df, lake_dir, DOCS_DEDUP, mode="overwrite", sort_by=("doc_id",),
                                   base_version=base_dedup, metadata=meta)
        result.tables[DOCS_DEDUP] = written.version
        result.kept = written.rows if written.rows >= 0 else df.count()
        drops = spark.createDataFrame([], ", ".join(f"{c} string" for c in DROPS_COLUMNS))
        for out in stage_results:
            drops = drops.unionByName(out.dropped)
        written = lake.write_table(drops, lake_dir, DROPS, mode="overwrite", partition_by=("stage",),
                                   replace_partitions={"stage": list(ALL_DEDUP_STAGES)},
                                   sort_by=("doc_id",), base_version=base_drops, metadata=meta)
        result.tables[DROPS] = written.version
        result.dropped = sum(c.dropped for c in result.stages.values())
        extras = {name: frame for out in stage_results for name, frame in out.extra.items()}
        for name, schema in OWNED_TABLES.items():  # replaced each run, like the dedup drops
            if name not in extras and not lake.exists(lake_dir, name):
                continue
            frame = extras.get(name, spark.createDataFrame([], schema))
            written = lake.write_table(frame, lake_dir, name, mode="overwrite", partition_by=("kind",),
                                       metadata=meta)
            result.tables[name] = written.version
    finally:
        for out in stage_results:
            out.release()
    if result.records != result.kept + result.dropped:  # pragma: no cover - a bug if it fires
        raise AssertionError(f"dedup counts do not reconcile: {result}")
    return result
