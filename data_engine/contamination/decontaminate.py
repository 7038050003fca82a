"""Decontamination: the audited table without the documents the audit condemns, and their `drops` rows.

Which documents: with `drop_rule` "any", every document holding an n-gram of some item; with
"share", the documents holding an n-gram of an item whose share verdict is contaminated. Either
way a re-audit of the new version finds no item contaminated by that rule.

Each dropped document gets one `drops` row (stage `decontaminate`): the reason names the item it
shares most n-grams with (`contaminated:<task>/<lang>/<id>`), the detail is JSON with the audited
table version, the rule and up to ten items with their hits. The `decontaminate` partition keeps
the rows of earlier decontaminations (of other table versions), so every document that left a
table this way stays accounted for; a re-run on the same version replaces its own rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from data_engine import lake
from data_engine.contamination.config import ContaminationConfig
from data_engine.drops import DROPS_COLUMNS, drop_rows
from data_engine.stage import Output
from data_engine.tables import DROPS

STAGE = "decontaminate"
REASON = "contaminated"
DETAIL_ITEMS = 10


@dataclass
class DropPlan:
    stage: str
    """The commits' stage: one per decontaminated table, so that decontaminating docs_scored does not
    make docs_curated's set (contamination, drops, docs_curated) look interrupted."""
    outputs: list[Output] = field(default_factory=list)  # empty when no document is dropped
    dropped_by_lang: dict[str, int] = field(default_factory=dict)


def audited_key(table: str, version: int) -> str:
    return f"{table}@v{version}"


def plan_drops(spark: Any, lake_dir: str, source: lake.Table, docs_total: int, pairs: Any, info: Any,
               cfg: ContaminationConfig) -> DropPlan:
    """`pairs` (task, lang, item_id, doc_id, doc_lang, hits) of the audit; `info` its items' verdicts;
    `docs_total` the documents of `source`."""
    from pyspark.sql import functions as F

    verdict = "contaminated_any" if cfg.drop_rule == "any" else "contaminated_share"
    condemned = pairs.join(info.where(F.col(verdict)).select("task", "lang", "item_id", "item_ngrams"),
                           ["task", "lang", "item_id"])
    item = F.struct(F.negative("hits").alias("order"), "task", "lang", "item_id", "hits",
                    F.round(F.col("hits") / F.col("item_ngrams"), 4).alias("share"))
    docs = condemned.groupBy("doc_id", "doc_lang").agg(F.sort_array(F.collect_list(item)).alias("items"))
    key = audited_key(cfg.table, source.version)
    top = F.col("items")[0]
    listed = F.slice(F.transform("items", lambda x: F.struct(x["task"].alias("task"), x["lang"].alias("lang"),
                                                             x["item_id"].alias("id"), x["hits"].alias("hits"),
                                                             x["share"].alias("share"))), 1, DETAIL_ITEMS)
    detail = F.to_json(F.struct(F.lit(key).alias("audited"), F.lit(cfg.drop_rule).alias("rule"),
                                F.size("items").alias("items_total"), listed.alias("items")))
    reason = F.concat(F.lit(f"{REASON}:"), top["task"], F.lit("/"), top["lang"], F.lit("/"), top["item_id"])
    dropped = drop_rows(docs.withColumnRenamed("doc_lang", "lang"), stage=STAGE, reason=reason, detail=detail)
    by_lang = {r.doc_lang: int(r["count"]) for r in docs.groupBy("doc_lang").count().collect()}
    plan = DropPlan(f"{STAGE}.{cfg.table}", dropped_by_lang=by_lang)
    n_dropped = sum(by_lang.values())
    if n_dropped == 0:
        return plan
    base_drops = lake.table_version(lake_dir, DROPS)
    rows = n_dropped
    if base_drops is not None:  # earlier decontaminations, of other versions, stay
        earlier = lake.read_table(spark, lake_dir, DROPS, version=base_drops).df.where(
            (F.col("stage") == STAGE) & (F.coalesce(F.get_json_object("detail", "$.audited"), F.lit("")) != key))
        dropped = dropped.unionByName(earlier.select(*DROPS_COLUMNS))
        rows += earlier.count()
    kept = source.df.join(docs.select("doc_id"), "doc_id", "left_anti").select(*source.df.columns)
    plan.outputs = [
        Output(DROPS, dropped, rows=rows, partition_by=("stage",), replace_partitions={"stage": STAGE},
               base_version=base_drops),
        Output(cfg.table, kept, rows=docs_total - n_dropped, base_version=source.version),
    ]
    return plan
