"""Exact training tokens per language, source and quality band of one pinned table version.

A mixture is a share of a stage's token budget, and an epoch cap compares that share with the
tokens a language really has, so the count must be the exporter's own: the same shipped, verified
tokenizer file (`data_engine.tokenizer`), `add_special_tokens=False`, one EOD per document, and
documents under `min_tokens` text tokens left out (counted as dropped), exactly as
`export.shards` writes them. Every Spark task tokenises its documents and sums them per
(lang, source, quality band); Spark adds those sums up, and only the summed rows — languages ×
(sources + bands) — reach the driver.

Quality bands use the ranking score selection and the plan's high-quality export use
(`quality.rank`), so the tokens of bands ≤ q are the tokens of the documents a "top q%" selection
exports.

The `token_counts` table is partitioned by the counted table; a count of (table, version)
rewrites that table's partition with its own rows replaced and the other versions' rows carried
over, on top of the version it read (a concurrent count of the same table conflicts instead of
dropping rows). Per-source rows need a `source` column (null sources are counted as `(none)`);
band rows need `quality_score`, and a language without any scored document has none.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from data_engine import lake
from data_engine.errors import ConfigError, InputError, SailyardError, TableNotFoundError
from data_engine.quality.rank import band_column, ranks_within_language
from data_engine.stage import Counts, Output, ReconcileError, StagePlan, read_input
from data_engine.tables import TOKEN_COUNTS
from data_engine.tokenizer import MISMATCH, TokenizerIdentity, identity, ship
from data_engine.tokens.config import TokenCountConfig

STAGE = "count_tokens"
COLUMNS = ("table", "version", "lang", "source", "quality_band", "docs", "tokens", "dropped_docs",
           "tokenizer", "tokenizer_digest", "eod_id", "band_percent", "mlflow_run_id")
SCHEMA = ("`table` string, version long, lang string, source string, quality_band int, docs long, tokens long, "
          "dropped_docs long, tokenizer string, tokenizer_digest string, eod_id long, band_percent int, "
          "mlflow_run_id string")
NO_SOURCE = "(none)"
"""The source of documents whose `source` is null (a per-source row's null would read as a total)."""
_NO_BAND = -1  # inside the tasks: unscored language (pandas groupby drops null keys)
_AGG_SCHEMA = "lang string, source string, band int, docs long, tokens long, dropped long"


@dataclass(frozen=True)
class LangTokens:
    docs: int
    tokens: int


@dataclass(frozen=True)
class TokenCounts:
    """One counted table version, as `read_token_counts` finds it in `token_counts`."""

    table: str
    version: int
    tokenizer: str
    tokenizer_digest: str
    eod_id: int
    band_percent: int
    counts_version: int
    """Version of the token_counts table read."""
    totals: dict[str, LangTokens]
    by_source: dict[tuple[str, str], LangTokens]
    bands: dict[str, dict[int, LangTokens]]

    def tokens(self) -> dict[str, int]:
        return {lang: t.tokens for lang, t in sorted(self.totals.items())}

    def top_tokens(self, lang: str, percent: float) -> LangTokens:
        """Docs and tokens of the top `percent`% of `lang` by quality (the bands ≤ percent)."""
        p = Fraction(str(percent))
        if not 0 < p <= 100 or (p / self.band_percent).denominator != 1:
            raise ConfigError(f"top {percent}% of {lang}: the percent must be a multiple of the counted band width "
                              f"({self.band_percent}%) in (0, 100]; count {self.table} with a finer "
                              "tokens.band_percent for other cuts")
        bands = self.bands.get(lang)
        if not bands:
            having = sorted(self.bands)
            raise ConfigError(f"{self.table} v{self.version} has no quality bands for {lang!r} (no quality_score "
                              "column, or no scored document of that language); languages with bands: "
                              f"{', '.join(having) if having else 'none'}")
        chosen = [t for k, t in bands.items() if k <= p]
        return LangTokens(sum(t.docs for t in chosen), sum(t.tokens for t in chosen))


def _count_partitions(shipped: str, tok: TokenizerIdentity, batch_docs: int, min_tokens: int) -> Any:
    name, digest = tok.name, tok.digest

    def count(batches: Iterator[Any]) -> Iterator[Any]:
        import numpy as np
        import pandas as pd
        from pyspark import SparkFiles

        from data_engine.tokenizer import load_verified

        tokenizer = load_verified(SparkFiles.get(shipped), digest, name)  # checked in every task
        sums: dict[tuple[str, str, int], np.ndarray] = {}
        for pdf in batches:
            texts = [t if isinstance(t, str) else "" for t in pdf["text"].tolist()]
            lengths = np.zeros(len(texts), dtype=np.int64)
            for start in range(0, len(texts), batch_docs):
                encodings = tokenizer.encode_batch(texts[start:start + batch_docs], add_special_tokens=False)
                lengths[start:start + len(encodings)] = [len(e.ids) for e in encodings]
            kept = lengths >= min_tokens
            frame = pd.DataFrame({"lang": pdf["lang"].to_numpy(), "source": pdf["_source"].to_numpy(),
                                  "band": pdf["_band"].to_numpy(), "docs": kept.astype(np.int64),
                                  "tokens": np.where(kept, lengths + 1, 0),  # + EOD, as the exporter writes
                                  "dropped": (~kept).astype(np.int64)})
            for key, row in frame.groupby(["lang", "source", "band"], sort=False).sum().iterrows():
                sums[key] = sums.get(key, 0) + row.to_numpy(dtype=np.int64)
        if sums:  # an empty object-typed frame does not convert to the declared Arrow schema
            yield pd.DataFrame([(lang, src, int(band), *map(int, v)) for (lang, src, band), v in sums.items()],
                               columns=["lang", "source", "band", "docs", "tokens", "dropped"])

    return count


def plan_count_tokens(spark: Any, lake_dir: str, cfg: TokenCountConfig = TokenCountConfig(), *,
                      input_version: int | None = None, run: Any = None) -> StagePlan:
    """Count one pinned version of `cfg.table`; the plan writes its rows into `token_counts`.

    Raises:
        InputError: the table has no documents, or lacks doc_id/lang/text.
        ReconcileError: the tokenised documents do not add up to the table's documents.
        SailyardError: an executor's tokenizer file differs from the driver's (one line).
    """
    from pyspark.sql import functions as F

    tok = identity(cfg.tokenizer, cfg.eod_id)  # a hub name resolves to one snapshot, here, once
    source = read_input(spark, lake_dir, cfg.table, input_version)
    where = f"{cfg.table} v{source.version}"
    df = source.df
    missing = [c for c in ("doc_id", "lang", "text") if c not in df.columns]
    if missing:
        raise InputError(f"{where} has no column(s) {', '.join(missing)} (columns: {', '.join(df.columns)}); "
                         "count a documents table such as docs_curated or docs_scored")
    base = lake.table_version(lake_dir, TOKEN_COUNTS)  # the carried-over rows and the commit are based on it
    carried = [] if base is None else [
        r for r in lake.read_arrow(lake_dir, TOKEN_COUNTS, version=base).to_pylist()
        if r["table"] == cfg.table and r["version"] != source.version]
    has_score, has_source = "quality_score" in df.columns, "source" in df.columns
    aggs = [F.count(F.lit(1)).alias("n")] + ([F.count("quality_score").alias("scored")] if has_score else [])
    stats = {r.lang: r.asDict() for r in df.groupBy("lang").agg(*aggs).collect()}  # one row per language
    if not stats:
        raise InputError(f"{where} has no documents; nothing was counted")
    if None in stats:
        raise InputError(f"{where}: {stats[None]['n']} documents have no lang; nothing was counted")
    src = F.coalesce(F.col("source"), F.lit(NO_SOURCE)) if has_source else F.lit(NO_SOURCE)
    ranks = None
    if has_score and any(s["scored"] for s in stats.values()):
        ranks = ranks_within_language(spark, df)
        sizes = F.broadcast(spark.createDataFrame([(lang, s["n"], s["scored"]) for lang, s in sorted(stats.items())],
                                                  "lang string, _n long, _scored long"))
        band = F.when(F.col("_scored") > 0, band_column(F.col("_rank"), F.col("_n"), cfg.band_percent))
        frame = (df.join(ranks, "doc_id").join(sizes, "lang")
                 .select("lang", src.alias("_source"), F.coalesce(band, F.lit(_NO_BAND)).alias("_band"), "text"))
    else:
        frame = df.select("lang", src.alias("_source"), F.lit(_NO_BAND).alias("_band"), "text")
    shipped = ship(spark, tok)
    counter = _count_partitions(shipped, tok, cfg.batch_docs, cfg.min_tokens)
    try:
        sums = (frame.mapInPandas(counter, _AGG_SCHEMA).groupBy("lang", "source", "band")
                .agg(F.sum("docs").alias("docs"), F.sum("tokens").alias("tokens"), F.sum("dropped").alias("dropped"))
                .collect())  # languages × sources × bands rows
    except Exception as exc:
        line = next((x for x in str(exc).splitlines() if MISMATCH in x), None)
        if line is None:
            raise
        raise SailyardError(line[line.index(MISMATCH):].strip()) from exc
    finally:
        if ranks is not None:
            ranks.unpersist()
    totals: dict[str, list[int]] = {}
    by_source: dict[tuple[str, str], list[int]] = {}
    bands: dict[tuple[str, int], list[int]] = {}

    def add(into: dict[Any, list[int]], key: Any, value: list[int]) -> None:
        into[key] = [a + b for a, b in zip(into.get(key, [0, 0, 0]), value, strict=True)]

    for r in sums:
        value = [int(r.docs), int(r.tokens), int(r.dropped)]
        add(totals, r.lang, value)
        add(by_source, (r.lang, r.source), value)
        if r.band != _NO_BAND:
            add(bands, (r.lang, int(r.band)), value)
    tally = Counts()
    for lang, s in sorted(stats.items()):
        docs, _, dropped = totals.setdefault(lang, [0, 0, 0])
        if docs + dropped != s["n"]:
            raise ReconcileError(f"{STAGE}: {where} has {s['n']} documents of {lang} but {docs + dropped} were "
                                 "tokenised (is doc_id unique?); nothing was committed")
        tally.add(lang, "kept", docs)
        tally.add(lang, "dropped", dropped)
    meta = (tok.name, tok.digest, tok.eod_id, cfg.band_percent, getattr(run, "run_id", None) or "")
    new_rows = []
    for lang in sorted(stats):
        new_rows.append((cfg.table, source.version, lang, None, None, *totals[lang], *meta))
        if has_source:
            new_rows += [(cfg.table, source.version, lang, s, None, *v, *meta)
                         for (lg, s), v in sorted(by_source.items()) if lg == lang]
        new_rows += [(cfg.table, source.version, lang, None, k, *v, *meta)
                     for (lg, k), v in sorted(bands.items()) if lg == lang]
    rows = [tuple(r[c] for c in COLUMNS) for r in carried]
    out = spark.createDataFrame(rows + new_rows, SCHEMA).coalesce(1)
    by_lang = {lang: {"docs": v[0], "tokens": v[1]} for lang, v in sorted(totals.items())}
    metrics = {f"{k}.{lang}": float(v[k]) for lang, v in by_lang.items() for k in ("docs", "tokens")}
    metrics["tokens"] = float(sum(v["tokens"] for v in by_lang.values()))
    output = Output(TOKEN_COUNTS, out, rows=len(rows) + len(new_rows), partition_by=("table",),
                    replace_partitions={"table": cfg.table}, sort_by=("version", "lang", "source", "quality_band"),
                    base_version=base)
    return StagePlan(STAGE, {cfg.table: source.version}, [output], tally,
                     summary={"table": cfg.table, "table_version": source.version, "by_lang": by_lang,
                              "tokenizer": tok.as_dict(), "min_tokens": cfg.min_tokens,
                              "band_percent": cfg.band_percent, "banded": sorted({lg for lg, _ in bands}),
                              "count_rows": len(new_rows), "count_rows_carried": len(rows)},
                     metrics=metrics)


def read_token_counts(lake_dir: str, table: str, version: int | None = None) -> TokenCounts:
    """The counts of `table` at `version` (default: the newest version of it counted).

    Raises:
        TableNotFoundError: the lake has no token_counts table.
        ConfigError: (table, version) was not counted; the message names what was.
    """
    counts_version = lake.table_version(lake_dir, TOKEN_COUNTS)
    if counts_version is None:
        raise TableNotFoundError(f"no {TOKEN_COUNTS} table in lake {lake.lake_uri(lake_dir)}; count first: "
                                 f"spark-submit jobs/count_tokens.py --lake {lake_dir} --table {table}")
    rows = lake.read_arrow(lake_dir, TOKEN_COUNTS, version=counts_version).to_pylist()
    counted: dict[str, set[int]] = {}
    for r in rows:
        counted.setdefault(r["table"], set()).add(r["version"])
    what = "; ".join(f"{t} v{', v'.join(map(str, sorted(v)))}" for t, v in sorted(counted.items())) or "nothing"
    if table not in counted:
        raise ConfigError(f"{TOKEN_COUNTS} (v{counts_version}) has no counts of {table} (counted: {what}); run "
                          f"count_tokens --table {table}")
    if version is None:
        version = max(counted[table])
    elif version not in counted[table]:
        raise ConfigError(f"{table} v{version} was not counted (counted: {what}); run count_tokens --table {table} "
                          f"--input-version {version}")
    mine = [r for r in rows if r["table"] == table and r["version"] == version]
    first = mine[0]
    totals, by_source, bands = {}, {}, {}
    for r in mine:
        value = LangTokens(int(r["docs"]), int(r["tokens"]))
        if r["source"] is None and r["quality_band"] is None:
            totals[r["lang"]] = value
        elif r["quality_band"] is None:
            by_source[(r["lang"], r["source"])] = value
        else:
            bands.setdefault(r["lang"], {})[int(r["quality_band"])] = value
    return TokenCounts(table=table, version=version, tokenizer=first["tokenizer"],
                       tokenizer_digest=first["tokenizer_digest"], eod_id=int(first["eod_id"]),
                       band_percent=int(first["band_percent"]), counts_version=counts_version,
                       totals=dict(sorted(totals.items())), by_source=dict(sorted(by_source.items())),
                       bands={lang: dict(sorted(b.items())) for lang, b in sorted(bands.items())})
