"""The audit: which eval items' n-grams occur in a pinned version of a training table, in Spark.

The item side is small and hashed on the driver (`prepare_items`). Its hashes go to every
executor twice: as a broadcast numpy array, against which each Python worker filters the n-grams
it computes (a map-side semi-join: only hashes some item has leave the worker), and as a
broadcast DataFrame joined to those hits, which attributes each hit to its items. Nothing the
size of the table reaches the driver: what is collected is one row per item and per language.

Why a pandas UDF (`mapInPandas`): Spark SQL has no Unicode normalisation (no NFC built-in, and
`java_method` cannot pass `java.text.Normalizer.Form`), so the text must visit a Python worker
anyway; there, hashing with numpy and keeping only the hits returns a few rows per document
instead of one per n-gram. The worker runs the exact function that hashed the items
(`ngrams.ngram_hashes`), so both sides are normalised and hashed identically by construction.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from data_engine import lake
from data_engine.contamination.config import ContaminationConfig
from data_engine.contamination.items import Item
from data_engine.contamination.ngrams import WORD, Lengths, item_ngrams, ngram_hashes, normalise
from data_engine.contamination.table import COLUMNS, CONTAMINATION, SCHEMA, SORT_BY
from data_engine.errors import ConfigError, InputError
from data_engine.stage import Counts, Output, StagePlan, read_input

STAGE = "contamination"
_HITS_SCHEMA = "doc_id string, doc_lang string, h long"
_ITEM_KEY = ["task", "lang", "item_id"]


@dataclass(frozen=True)
class ItemGrams:
    item: Item
    unit: str
    n: int
    """Units per n-gram: the configured n, or the item's own length when it is shorter."""
    hashes: np.ndarray


def prepare_items(items: Sequence[Item], cfg: ContaminationConfig) -> tuple[list[ItemGrams], Lengths]:
    """Each item's distinct n-gram hashes, and the window lengths the training side must hash."""
    grams: list[ItemGrams] = []
    word: set[int] = set()
    char: dict[str, set[int]] = {}
    for item in items:
        unit = cfg.unit(item.lang)
        k, hashes = item_ngrams(normalise(item.text), item.lang, unit, cfg.n(item.lang))
        if k == 0:
            raise InputError(f"item {item.task}/{item.lang}/{item.id} has no letters or digits; nothing to look for")
        grams.append(ItemGrams(item, unit, k, hashes))
        if unit == WORD:
            word.add(k)
        else:
            char.setdefault(item.lang, set()).add(k)
    lengths = Lengths(word=tuple(sorted(word)),
                      char=tuple((lang, tuple(sorted(ks))) for lang, ks in sorted(char.items())))
    return grams, lengths


def _find_hits(wanted: Any, lengths: Lengths, batch_chars: int) -> Any:
    """The executors' half: hash each document's windows, keep those some item has."""

    def find(batches: Iterator[Any]) -> Iterator[Any]:
        import pandas as pd

        table = wanted.value  # sorted distinct int64 hashes of every item
        for pdf in batches:
            if pdf.empty:
                continue
            langs = [x if isinstance(x, str) else "" for x in pdf["lang"].tolist()]
            h, d = ngram_hashes(pdf["text"].tolist(), langs, lengths, batch_chars=batch_chars)
            if len(h) == 0:
                continue
            pos = np.searchsorted(table, h)
            pos[pos == len(table)] = 0
            hit = table[pos] == h
            if not hit.any():
                continue
            pairs = np.unique(np.stack([d[hit], h[hit]], axis=1), axis=0)  # distinct (doc, n-gram)
            rows = pairs[:, 0]
            yield pd.DataFrame({"doc_id": pdf["doc_id"].to_numpy()[rows], "doc_lang": pdf["lang"].to_numpy()[rows],
                                "h": pairs[:, 1]})

    return find


def metric_name(*parts: str) -> str:
    """An MLflow metric key from task and language names (MLflow allows [\\w.\\- /])."""
    return ".".join(re.sub(r"[^\w\-/ ]", "_", p) for p in parts)


def plan_audit(spark: Any, lake_dir: str, items: Sequence[Item], cfg: ContaminationConfig = ContaminationConfig(),
               *, input_version: int | None = None, decontaminate: bool = False, run: Any = None) -> StagePlan:
    """Audit `items` against `cfg.table` (pinned at `input_version`, default latest); nothing is written.

    The plan replaces this audit's rows of `contamination`; with `decontaminate`, it also drops the
    documents `cfg.drop_rule` condemns into `drops` (stage `decontaminate`) and writes a new version
    of the table without them.

    Raises:
        InputError: no items, an item without text, a table without doc_id/lang/text.
        TableNotFoundError: the table or the version does not exist.
        ConfigError: `decontaminate` on a version that is not the table's latest.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    if not items:
        raise InputError("no eval items to audit")
    source = read_input(spark, lake_dir, cfg.table, input_version)
    where = f"{cfg.table} v{source.version}"
    missing = [c for c in ("doc_id", "lang", "text") if c not in source.df.columns]
    if missing:
        raise InputError(f"{where} has no column(s) {', '.join(missing)} (columns: {', '.join(source.df.columns)}); "
                         "audit a documents table such as docs_curated")
    latest = lake.table_version(lake_dir, cfg.table)
    if decontaminate and source.version != latest:
        raise ConfigError(f"--decontaminate writes a new version of {cfg.table} on top of the one it audits, but "
                          f"v{source.version} is not the latest (v{latest}); audit the latest version to decontaminate")
    audit_id = getattr(run, "run_id", None) or uuid.uuid4().hex
    grams, lengths = prepare_items(items, cfg)
    base_contamination = lake.table_version(lake_dir, CONTAMINATION)
    owned_keys = sorted({(g.item.task, g.item.lang) for g in grams})  # the rows this audit replaces

    import pandas as pd

    item_ngrams_pdf = pd.DataFrame({
        "h": np.concatenate([g.hashes for g in grams]),
        "task": np.repeat([g.item.task for g in grams], [len(g.hashes) for g in grams]),
        "lang": np.repeat([g.item.lang for g in grams], [len(g.hashes) for g in grams]),
        "item_id": np.repeat([g.item.id for g in grams], [len(g.hashes) for g in grams])})
    item_ng = F.broadcast(spark.createDataFrame(item_ngrams_pdf, "h long, task string, lang string, item_id string"))
    wanted = spark.sparkContext.broadcast(np.unique(item_ngrams_pdf["h"].to_numpy()))
    cached: list[Any] = []

    def release() -> None:
        for frame in cached:
            frame.unpersist()
        wanted.unpersist()

    try:
        hits = (source.df.select("doc_id", "lang", "text")
                .mapInPandas(_find_hits(wanted, lengths, cfg.batch_chars), _HITS_SCHEMA)
                .persist(StorageLevel.MEMORY_AND_DISK))
        cached.append(hits)
        matched = hits.join(item_ng, "h")
        pairs = (matched.groupBy(*_ITEM_KEY, "doc_id", "doc_lang").agg(F.count(F.lit(1)).alias("hits"))
                 .persist(StorageLevel.MEMORY_AND_DISK))
        cached.append(pairs)
        per_item = matched.groupBy(*_ITEM_KEY).agg(F.countDistinct("h").alias("n"),
                                                   F.countDistinct("doc_id").alias("docs")).collect()
        found = {(r.task, r.lang, r.item_id): int(r.n) for r in per_item}  # one row per item with a hit
        n_pairs = sum(int(r.docs) for r in per_item)
        docs_per_lang = {r.lang: int(r["count"]) for r in source.df.groupBy("lang").count().collect()}

        info_rows, item_rows = [], []
        verdicts: dict[tuple[str, str, str], tuple[bool, bool]] = {}
        for g in grams:
            it, total = g.item, len(g.hashes)
            hit = found.get(it.key, 0)
            share = hit / total
            any_hit, by_share = hit > 0, share >= cfg.share_threshold
            verdicts[it.key] = (any_hit, by_share)
            info_rows.append((it.task, it.lang, it.id, total, g.n, g.unit, any_hit, by_share))
            item_rows.append((cfg.table, source.version, it.task, it.lang, it.id, None, None, hit, share, total,
                              g.n, g.unit, any_hit, by_share, float(cfg.share_threshold), audit_id))
        info = F.broadcast(spark.createDataFrame(
            info_rows, "task string, lang string, item_id string, item_ngrams long, n int, unit string, "
                       "contaminated_any boolean, contaminated_share boolean"))
        pair_rows = pairs.join(info, _ITEM_KEY).select(
            F.lit(cfg.table).alias("table"), F.lit(source.version).cast("long").alias("version"), *_ITEM_KEY,
            "doc_id", "doc_lang", F.col("hits").cast("long").alias("hits"),
            (F.col("hits") / F.col("item_ngrams")).alias("share"), "item_ngrams", "n", "unit", "contaminated_any",
            "contaminated_share", F.lit(float(cfg.share_threshold)).alias("share_threshold"),
            F.lit(audit_id).alias("audit_run_id"))
        rows = spark.createDataFrame(item_rows, SCHEMA).unionByName(pair_rows)
        n_rows = len(item_rows) + n_pairs
        if base_contamination is not None:
            old = lake.read_table(spark, lake_dir, CONTAMINATION, version=base_contamination).df
            old = old.where(F.col("table") == cfg.table).select(*COLUMNS)
            owned = F.broadcast(spark.createDataFrame(owned_keys, "task string, lang string"))
            this_version = F.col("version") == source.version
            carried = old.where(~this_version).unionByName(
                old.where(this_version).join(owned, ["task", "lang"], "left_anti").select(*COLUMNS))
            rows = rows.unionByName(carried)
            n_rows += carried.count()
        outputs = [Output(CONTAMINATION, rows, rows=n_rows, partition_by=("table",),
                          replace_partitions={"table": cfg.table}, sort_by=SORT_BY, base_version=base_contamination)]

        counts = Counts()
        stage, dropped_summary = STAGE, None
        if decontaminate:
            from data_engine.contamination.decontaminate import plan_drops

            drop = plan_drops(spark, lake_dir, source, sum(docs_per_lang.values()), pairs, info, cfg)
            dropped_summary = drop.dropped_by_lang
            if drop.outputs:  # nothing to drop: the table stays as it is, and this is a plain audit
                stage = drop.stage
                outputs += drop.outputs
        for lang, n in sorted(docs_per_lang.items(), key=lambda kv: str(kv[0])):
            dropped = (dropped_summary or {}).get(lang, 0)
            counts.add(lang, "kept", n - dropped)
            if dropped:
                counts.add(lang, "dropped", dropped)
    except BaseException:
        release()
        raise

    by_task: dict[str, dict[str, dict[str, int]]] = {}
    for g in grams:
        entry = by_task.setdefault(g.item.task, {}).setdefault(
            g.item.lang, {"items": 0, "contaminated_any": 0, "contaminated_share": 0})
        any_hit, by_share = verdicts[g.item.key]
        entry["items"] += 1
        entry["contaminated_any"] += int(any_hit)
        entry["contaminated_share"] += int(by_share)
    metrics: dict[str, float] = {}
    for task, langs in by_task.items():
        for lang, e in langs.items():
            metrics[metric_name("items", task, lang)] = e["items"]
            metrics[metric_name("contaminated", task, lang)] = e["contaminated_any"]
            metrics[metric_name("contaminated_share", task, lang)] = e["contaminated_share"]
    totals = {k: sum(e[k] for langs in by_task.values() for e in langs.values())
              for k in ("items", "contaminated_any", "contaminated_share")}
    metrics.update({"items": totals["items"], "contaminated": totals["contaminated_any"],
                    "contaminated_share": totals["contaminated_share"], "hit_pairs": n_pairs})
    summary = {"audited": {"table": cfg.table, "version": source.version}, "items": totals["items"],
               "contaminated_any": totals["contaminated_any"], "contaminated_share": totals["contaminated_share"],
               "contamination": by_task, "hit_pairs": n_pairs, "audit_run_id": audit_id,
               "ngram": {"word": cfg.word_ngram, "char": {lang: cfg.char_n(lang) for lang, _ in lengths.char},
                         "lengths": {"word": list(lengths.word), "char": {k: list(v) for k, v in lengths.char}}},
               "share_threshold": cfg.share_threshold, "drop_rule": cfg.drop_rule,
               "decontaminated": counts.dropped if decontaminate else None}
    return StagePlan(stage, {cfg.table: source.version}, outputs, counts, summary=summary, metrics=metrics,
                     release=release)
