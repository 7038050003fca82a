"""The cleaning stage: docs_raw (pinned version) → docs_clean, rejects to drops.

One Python pass per Arrow batch — cut to at most `spark.sailyard.python.maxBatchChars` characters
(`data_engine.batches`) — normalises the text (`normalize.py`), measures it (`measure.py`: the
statistics of `stats.py` for the whole batch at once) and identifies its language (`lid.py`); the
thresholds are then applied in Spark SQL (`rules.py`) by joining each document with its language's
thresholds. The run owns the `clean` and `lid` partitions of `drops` and replaces them, so a re-run
gives the same tables.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from data_engine import lake
from data_engine.batches import batch_chars
from data_engine.clean.config import CleanConfig
from data_engine.clean.rules import first_failure, thresholds_frame, with_thresholds
from data_engine.clean.stats import STAT_NAMES
from data_engine.drops import drop_rows
from data_engine.langs import LANGS, UNKNOWN
from data_engine.stage import Counts, Output, StagePlan, commit_plan, read_input
from data_engine.tables import DOCS_CLEAN, DROPS

CLEAN_STAGES = ("clean", "lid")
REASON_EMPTY = "empty_after_cleaning"
LID_COLUMNS = ("lang_given", "lang_pred", "lid_score")


@dataclass
class CleanResult:
    input_table: str
    input_version: int
    records: int = 0
    kept: int = 0
    dropped: int = 0
    by_lang: dict[str, dict[str, int]] = field(default_factory=dict)  # lang → {in, kept, dropped}
    by_reason: dict[str, int] = field(default_factory=dict)
    relabelled: int = 0
    tables: dict[str, int] = field(default_factory=dict)


def _prepare_partitions(cfg: CleanConfig, columns: list[str], max_chars: int) -> Any:
    # the largest max_units of any language: above it a document is too long everywhere
    max_units = max(cfg.thresholds(lang).max_units for lang in (*LANGS, "default", *cfg.rules))

    def prepare(batches: Iterator[Any]) -> Iterator[Any]:
        from data_engine.batches import rebatch
        from data_engine.clean.lid import decide, predict
        from data_engine.clean.measure import measure
        from data_engine.clean.normalize import clean_text

        for pdf in rebatch(batches, max_chars):
            # a null text (only possible in a table not written by ingest) ends as empty_after_cleaning
            texts = [clean_text(t) if isinstance(t, str) else "" for t in pdf["text"]]
            stats = measure(texts, max_units)
            given = [g if g else UNKNOWN for g in pdf["lang"]]
            preds = predict(texts, cfg.lid) if cfg.lid.enabled else [(UNKNOWN, 0.0)] * len(texts)
            decisions = [decide(g, p, s, cfg.lid) if cfg.lid.enabled else None
                         for g, (p, s) in zip(given, preds, strict=True)]
            out = pdf[columns].copy()
            out["text"] = texts
            out["lang"] = [d.lang if d else g for d, g in zip(decisions, given, strict=True)]
            out["lang_given"] = given
            out["lang_pred"] = [p for p, _ in preds]
            out["lid_score"] = [s for _, s in preds]
            out["_lid_reason"] = [d.reason if d else None for d in decisions]
            for name in STAT_NAMES:
                out[f"_s_{name}"] = stats[name]
            yield out

    return prepare


def plan_clean(spark: Any, lake_dir: str, cfg: CleanConfig = CleanConfig(), *,
               input_version: int | None = None) -> StagePlan:
    """Tag every document kept or dropped (with the first rule that fired); nothing is written."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    source = read_input(spark, lake_dir, cfg.input_table, input_version)
    base_clean = lake.table_version(lake_dir, DOCS_CLEAN)
    base_drops = lake.table_version(lake_dir, DROPS)
    df = source.df
    columns = [c for c in df.columns if c not in LID_COLUMNS]
    schema = (", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in df.schema.fields if f.name in columns)
              + ", lang_given string, lang_pred string, lid_score double, _lid_reason string, "
              + ", ".join(f"_s_{n} double" for n in STAT_NAMES))
    prepared = df.select(*columns).mapInPandas(_prepare_partitions(cfg, columns, batch_chars(spark)), schema)
    sections = (*LANGS, *(k for k in cfg.rules if k != "default"))  # languages with their own thresholds
    checked = with_thresholds(prepared, thresholds_frame(spark, cfg, sections))
    heuristic, heuristic_detail = first_failure()
    empty = F.col("text") == F.lit("")  # cleaned text is stripped: nothing left is the empty string
    reason = F.when(empty, F.lit(REASON_EMPTY)).when(F.col("_lid_reason").isNotNull(), F.col("_lid_reason")) \
        .otherwise(heuristic)
    detail = F.when(empty, F.lit(None)).when(
        F.col("_lid_reason").isNotNull(),
        F.format_string("given %s, predicted %s (%.3f)", "lang_given", "lang_pred", "lid_score")
    ).otherwise(heuristic_detail)
    tagged = (checked.select(*columns, *LID_COLUMNS, reason.alias("_reason"), detail.alias("_detail"))
              .withColumn("_drop", F.col("_reason").isNotNull())  # statistics and thresholds are not kept
              .persist(StorageLevel.MEMORY_AND_DISK))
    result = CleanResult(cfg.input_table, source.version)
    counts = Counts()
    for r in tagged.groupBy("lang", "_reason", (F.col("lang") != F.col("lang_given")).alias("relabelled")) \
            .count().collect():
        if r._reason is None:
            counts.add(r.lang, "kept", r["count"])
            result.relabelled += r["count"] if r.relabelled else 0
        else:
            counts.add(r.lang, "dropped", r["count"])
            result.by_reason[r._reason] = result.by_reason.get(r._reason, 0) + r["count"]
    result.records, result.kept, result.dropped = counts.records, counts.kept, counts.dropped
    result.by_lang = counts.by_lang
    kept = tagged.where(~F.col("_drop")).select(*columns, *LID_COLUMNS)
    drops = drop_rows(tagged.where(F.col("_drop")),
                      stage=F.when(F.col("_reason") == "lid_mismatch", F.lit("lid")).otherwise(F.lit("clean")),
                      reason=F.col("_reason"), detail=F.col("_detail"))
    outputs = [  # the shared table first: a conflict there stops the stage before its documents land
        Output(DROPS, drops, rows=counts.dropped, partition_by=("stage",),
               replace_partitions={"stage": list(CLEAN_STAGES)}, base_version=base_drops),
        Output(DOCS_CLEAN, kept, rows=counts.kept, base_version=base_clean),
    ]
    return StagePlan("clean", {cfg.input_table: source.version}, outputs, counts,
                     summary={"relabelled": result.relabelled, "dropped_by_reason": result.by_reason,
                              "by_lang": result.by_lang},
                     metrics={"relabelled": result.relabelled,
                              **{f"dropped.{k}": v for k, v in result.by_reason.items()}},
                     release=tagged.unpersist)


def clean(spark: Any, lake_dir: str, cfg: CleanConfig = CleanConfig(), *, input_version: int | None = None,
          run: Any = None) -> CleanResult:
    """Plan and commit in one call (tests, notebooks); jobs go through `stage.run_stage`."""
    plan = plan_clean(spark, lake_dir, cfg, input_version=input_version)
    tables = commit_plan(lake_dir, plan, run=run)
    summary = plan.summary
    return CleanResult(cfg.input_table, plan.inputs[cfg.input_table], plan.counts.records, plan.counts.kept,
                       plan.counts.dropped, summary["by_lang"], summary["dropped_by_reason"],
                       summary["relabelled"], tables)
