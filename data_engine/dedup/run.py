"""Run the configured dedup stages over a pinned input version; write `docs_dedup` and `drops`.

Each stage sees only what the previous stages kept. The dedup run owns the dedup partitions of
`drops` (stage = url, exact, near, lines): it replaces all of them in one commit, so `drops`
always explains exactly the current `docs_dedup`, and a re-run gives the same tables.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from data_engine import lake
from data_engine.dedup.config import DedupConfig
from data_engine.dedup.lines import LINE_DROPS_SCHEMA
from data_engine.dedup.registry import ALL_DEDUP_STAGES, STAGES
from data_engine.drops import DROPS_COLUMNS
from data_engine.spark import phase
from data_engine.stage import Counts, Output, ReconcileError, StagePlan, commit_plan, read_input
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


def _without(base: Any, gone: list[Any]) -> Any:
    """`base` less the documents in the (doc_id) frames `gone`: local data when few, else persisted.

    Each stage's input is the run's input less what earlier stages removed — one anti-join —
    rather than the previous stage's output: chained outputs nest each stage's plan (which reads
    its input several times) inside the next, and the plans grow exponentially (measured: the
    input scan 5,888 times over after four stages, minutes of planning, an OutOfMemoryError).
    Few removed ids become one local relation: one leaf in every later plan, not a union of them.
    """
    from pyspark.sql import functions as F

    from data_engine.dedup.base import BROADCAST_LOSERS
    from data_engine.spark import local_frame

    few = sum(frame.count() for frame in gone) <= BROADCAST_LOSERS  # local or persisted: cheap counts
    if few:
        ids = [row for frame in gone for row in frame.collect()]
        removed = local_frame(base.sparkSession, ids, "doc_id string")
        return base.join(F.broadcast(removed), "doc_id", "left_anti")
    removed = gone[0]
    for frame in gone[1:]:
        removed = removed.unionByName(frame)
    return base.join(removed, "doc_id", "left_anti")


def plan_dedup(spark: Any, lake_dir: str, cfg: DedupConfig = DedupConfig(), *,
               input_version: int | None = None) -> StagePlan:
    """Run the configured stages lazily over the pinned input; nothing is written."""
    table = cfg.input_table or lake.first_existing(lake_dir, (DOCS_CLEAN, DOCS_RAW), purpose="dedup")
    source = read_input(spark, lake_dir, table, input_version)
    base_dedup = lake.table_version(lake_dir, DOCS_DEDUP)
    base_drops = lake.table_version(lake_dir, DROPS)
    result = DedupResult(table, source.version)
    df = source.df
    stage_results: list[Any] = []

    def release() -> None:
        for out in stage_results:
            out.release()

    try:
        base, gone = df, []
        for name in cfg.stages:
            with phase(spark, name):
                out = STAGES[name](df, cfg)
            stage_results.append(out)
            with phase(spark, f"{name}: counts"):
                result.stages[name] = _count(out.tagged)
            result.stages[name].metrics = dict(out.metrics)
            if out.removed is not None:
                gone.append(out.removed)
                df = _without(base, gone)
            else:  # a stage that rewrites documents: what follows builds on its output
                base, gone, df = out.kept, [], out.kept
        counts = Counts()
        if stage_results:
            first, last = result.stages[cfg.stages[0]], result.stages[cfg.stages[-1]]
            for lang, c in first.by_lang.items():
                kept = last.by_lang.get(lang, {}).get("kept", 0)
                counts.add(lang, "kept", kept)
                counts.add(lang, "dropped", c["in"] - kept)
        else:
            for r in df.groupBy("lang").count().collect():
                counts.add(r.lang, "kept", r["count"])
        dropped_rows = sum(c.dropped for c in result.stages.values())
        if dropped_rows != counts.dropped:  # each removed document is dropped by exactly one stage
            raise ReconcileError(f"dedup: stages dropped {dropped_rows} documents but the input lost "
                                 f"{counts.dropped}; nothing was committed")
        drops = spark.createDataFrame([], ", ".join(f"{c} string" for c in DROPS_COLUMNS))
        for out in stage_results:
            drops = drops.unionByName(out.dropped)
        outputs = [Output(DROPS, drops, rows=counts.dropped, partition_by=("stage",),
                          replace_partitions={"stage": list(ALL_DEDUP_STAGES)}, base_version=base_drops)]
        extras = {name: frame for out in stage_results for name, frame in out.extra.items()}
        for name, schema in OWNED_TABLES.items():  # replaced each run, like the dedup drops
            if name not in extras and not lake.exists(lake_dir, name):
                continue
            frame = extras.get(name, spark.createDataFrame([], schema))
            outputs.append(Output(name, frame, rows=None, partition_by=("kind",), sort_by=()))
        outputs.append(Output(DOCS_DEDUP, df, rows=counts.kept, base_version=base_dedup))
    except BaseException:
        release()
        raise
    result.records, result.kept, result.dropped = counts.records, counts.kept, counts.dropped
    return StagePlan("dedup", {table: source.version}, outputs, counts,
                     summary={"stages": {k: dataclasses.asdict(v) for k, v in result.stages.items()}},
                     release=release)


def dedup(spark: Any, lake_dir: str, cfg: DedupConfig = DedupConfig(), *,
          input_version: int | None = None, run: Any = None) -> DedupResult:
    """Plan and commit in one call (tests, notebooks); jobs go through `stage.run_stage`."""
    plan = plan_dedup(spark, lake_dir, cfg, input_version=input_version)
    tables = commit_plan(lake_dir, plan, run=run)
    [(table, version)] = plan.inputs.items()
    stages = {k: StageCounts(**v) for k, v in plan.summary["stages"].items()}
    return DedupResult(table, version, plan.counts.records, plan.counts.kept, plan.counts.dropped,
                       stages, tables)
