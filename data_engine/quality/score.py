"""Score every document with its language's classifier; keep each language's top p%.

Each language's registered model — the version pinned in `score.models`, else the latest — is
fetched from MLflow once, shipped to the executors with `SparkContext.addFile` and loaded once per
Python worker; the version used is the `quality_model` column (`<name>/<version>`) and the run tag
`model.<lang>`. Only "no such registered model" leaves a language without a model
(`score.without_model`); a registry that cannot be read fails the job before anything is written.

Selection is exact: with n documents in a language and p its keep percent, the ⌈p·n/100⌉
highest-scoring ones (ties by doc_id) are kept — each document's rank within its language
(`quality.rank.ranks_within_language`) compared with that count; only per-language and per-partition counts
come back to the driver. The ranks live in a narrow frame (no text) that gives the tallies, the
histogram and the drops in one pass; docs_curated is `scored` filtered by each language's cut (its
last kept document, one row per language: `quality.rank.within_cuts`), never joined with the ranks.
Scoring is a pandas UDF of (lang, text): the other columns never cross to Python, and only the
score and the model's name come back.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_engine import lake, tracking
from data_engine.batches import batch_chars
from data_engine.digests import file_digest
from data_engine.drops import drop_rows
from data_engine.errors import ConfigError
from data_engine.quality.config import QualityScoreConfig
from data_engine.quality.rank import keep_count, rank_score, ranks_within_language, within_cuts
from data_engine.quality.train import META_FILE, MODEL_FILE
from data_engine.stage import Counts, Output, ReconcileError, StagePlan, commit_plan, read_input
from data_engine.tables import DOCS_CLEAN, DOCS_CURATED, DOCS_DEDUP, DOCS_SCORED, DROPS

STAGE = "quality"
REASON = "below_quality_cutoff"
REASON_NO_MODEL = "no_quality_model"  # score.without_model: drop
BINS = 20


@dataclass
class ScoreResult:
    input_table: str
    input_version: int
    records: int = 0
    kept: int = 0
    dropped: int = 0
    by_lang: dict[str, dict[str, Any]] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)  # lang → "<name>/<version>"
    tables: dict[str, int] = field(default_factory=dict)
    histograms: dict[str, list[int]] = field(default_factory=dict)
    cuts: dict[str, float] = field(default_factory=dict)


def _resolve_versions(work_dir: Path, langs: list[str], cfg: QualityScoreConfig) -> dict[str, tracking.ModelVersion]:
    """lang → the registered version to score it with: the pinned one (`score.models`), else the latest.

    Every pin is checked, also for languages absent from this input, so a typo is found on the
    first run. Only the registry saying "no such model" means a language has no model; a registry
    that cannot be read raises (from `tracking`) and the job stops before writing anything.
    """
    chosen: dict[str, tracking.ModelVersion] = {}
    problems = []
    for lang in sorted(set(langs) | set(cfg.models)):
        name = f"{cfg.registry_prefix}-{lang}"
        pin = cfg.models.get(lang)
        found = tracking.latest_version(work_dir, name) if pin is None else tracking.model_version(work_dir, name, pin)
        if found is None and pin is not None:
            latest = tracking.latest_version(work_dir, name)
            have = f"the latest is {latest.version}" if latest else "it has no registered version"
            problems.append(f"{lang}: {name} has no version {pin} ({have})")
        elif found is not None and lang in langs:
            chosen[lang] = found
    if problems:
        raise ConfigError("score.models: " + "; ".join(problems))
    return chosen


def _fetch_models(spark: Any, lake_dir: str, langs: list[str],
                  cfg: QualityScoreConfig) -> dict[str, tuple[str, str, int]]:
    """lang → (file name shipped with addFile, "<model>/<version>", max_chars)."""
    import json

    work_dir = tracking.work_dir_for(lake_dir)
    versions = _resolve_versions(work_dir, langs, cfg)
    staging = Path(tempfile.mkdtemp(prefix="sailyard-models-"))
    found = {}
    for lang, version in sorted(versions.items()):
        local = tracking.download(work_dir, version, staging / f"{lang}-v{version.version}")
        # Named by content: a long-lived session may score several lakes whose registries both hold a
        # "v1" for this language, and Spark refuses a second, different file under a shipped name.
        digest = file_digest(local / MODEL_FILE, "xxh3_64")
        shipped = (local / MODEL_FILE).rename(staging / f"quality-{lang}-v{version.version}-{digest}.bin")
        meta = json.loads((local / META_FILE).read_text())
        spark.sparkContext.addFile(str(shipped))
        found[lang] = (shipped.name, f"{version.name}/{version.version}", int(meta.get("max_chars", 4000)))
    return found


def _score_udf(models: dict[str, tuple[str, str, int]], max_chars: int) -> Any:
    """A pandas UDF (lang, text) → (quality_score, quality_model): only the text crosses to Python
    and only the two results come back; the other columns stay in the JVM."""
    import pandas as pd
    from pyspark.sql.functions import pandas_udf

    def score(lang: pd.Series, text: pd.Series) -> pd.DataFrame:
        from pyspark import SparkFiles

        from data_engine import fasttext_model
        from data_engine.batches import chunks
        from data_engine.quality.train import score_texts

        scores: list[float | None] = [None] * len(lang)
        names: list[str | None] = [None] * len(lang)
        frame = pd.DataFrame({"lang": lang.to_numpy(), "text": text.to_numpy()})
        first = 0
        for piece in chunks(frame, max_chars):
            for lang_code, rows in piece.groupby("lang", sort=False).indices.items():
                if lang_code not in models:
                    continue
                file_name, model_name, model_chars = models[lang_code]
                model = fasttext_model.load(SparkFiles.get(file_name))  # once per Python worker
                column = piece["text"].to_numpy()
                texts = [t if isinstance(t, str) else "" for t in column[rows]]
                for p, v in zip(rows.tolist(), score_texts(model, texts, model_chars), strict=True):
                    scores[first + p], names[first + p] = round(v, 6), model_name
            first += len(piece)
        return pd.DataFrame({"quality_score": pd.Series(scores, dtype="float64"), "quality_model": names})

    # the hints as objects (this module's annotations are strings): Spark reads the UDF's kind from them
    score.__annotations__ = {"lang": pd.Series, "text": pd.Series, "return": pd.DataFrame}
    return pandas_udf(score, "quality_score double, quality_model string")  # type: ignore[call-overload]


def plan_score(spark: Any, lake_dir: str, cfg: QualityScoreConfig = QualityScoreConfig(), *,
               input_version: int | None = None, run: Any = None) -> StagePlan:
    """Score and rank every document, decide the cut per language; nothing is written."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    table = cfg.input_table or lake.first_existing(lake_dir, (DOCS_DEDUP, DOCS_CLEAN), purpose="score")
    source = read_input(spark, lake_dir, table, input_version)
    result = ScoreResult(table, source.version)
    base_scored, base_curated = lake.table_version(lake_dir, DOCS_SCORED), lake.table_version(lake_dir, DOCS_CURATED)
    base_drops = lake.table_version(lake_dir, DROPS)
    columns = [c for c in source.df.columns if c not in ("quality_score", "quality_model")]
    counts = {r.lang: r["count"] for r in source.df.groupBy("lang").count().collect()}
    models = _fetch_models(spark, lake_dir, sorted(counts), cfg)  # before any write: a registry error commits nothing
    result.models = {lang: m[1] for lang, m in models.items()}
    if run is not None:
        run.set_tags({f"model.{lang}": m for lang, m in result.models.items()}
                     | {f"model.{lang}.pinned": str(lang in cfg.models).lower() for lang in result.models})
    result_col = _score_udf(models, batch_chars(spark))("lang", "text")
    scored = (source.df.select(*columns).withColumn("_quality", result_col)
              .select(*columns, "_quality.quality_score", "_quality.quality_model")
              .persist(StorageLevel.MEMORY_AND_DISK))
    cached = [scored]

    def release() -> None:
        for frame in cached:
            frame.unpersist()

    try:
        keep = {}
        for lang, n in counts.items():
            if lang in models:
                keep[lang] = keep_count(n, cfg.percent(lang))
            else:
                keep[lang] = n if cfg.without_model == "keep" else 0
        keep_df = F.broadcast(spark.createDataFrame([(lang, k, counts[lang]) for lang, k in sorted(keep.items())],
                                                    "lang string, _keep long, _n long"))
        # Ranks, scores and the keep decision travel in a narrow frame (no text): the tallies, the
        # histogram and the drops come from it, and each language's last kept document (its cut)
        # selects docs_curated from `scored` with a broadcast of one row per language, no join
        # of the documents with their ranks.
        ranks = ranks_within_language(spark, scored, carry=("lang", "quality_score"))
        cached.append(ranks)
        ranked = ranks.join(keep_df, "lang").withColumn("_drop", F.col("_rank") > F.col("_keep"))
        # one pass for the tallies, the histogram and the cuts: per language, kept or not, and score bin
        score = rank_score()
        bins = F.least(F.floor(F.col("quality_score") * BINS), F.lit(BINS - 1)).alias("bin")
        at_cut = F.when(F.col("_rank") == F.col("_keep"), F.struct(score.alias("s"), F.col("doc_id").alias("d")))
        tally = Counts()
        cuts = []
        for r in ranked.groupBy("lang", "_drop", bins).agg(
                F.count(F.lit(1)).alias("n"), F.min("quality_score").alias("low"),
                F.max(at_cut).alias("cut")).collect():
            tally.add(r.lang, "dropped" if r._drop else "kept", r.n)
            if not r._drop and r.low is not None and r.lang in models:
                result.cuts[r.lang] = min(result.cuts.get(r.lang, float(r.low)), float(r.low))
            if r.bin is not None:
                result.histograms.setdefault(r.lang, [0] * BINS)[int(r.bin)] += r.n
            if r.cut is not None:
                cuts.append((r.lang, r.cut.s, r.cut.d))
        missing = sum(counts.values()) - tally.records
        if missing:  # a document lost between scoring and ranking would otherwise vanish silently
            raise ReconcileError(f"score_quality: {missing} of {sum(counts.values())} documents were lost "
                                 "between scoring and ranking; nothing was committed")
        result.by_lang = tally.by_lang
        result.records, result.kept, result.dropped = tally.records, tally.kept, tally.dropped
        curated = within_cuts(spark, scored, cuts)
        unscored = F.col("quality_score").isNull()
        drops = drop_rows(
            ranked.where(F.col("_drop")), stage=STAGE,
            reason=F.when(unscored, F.lit(REASON_NO_MODEL)).otherwise(F.lit(REASON)),
            detail=F.when(unscored, F.lit("no classifier for this language")).otherwise(
                F.format_string("score %.4f, rank %d of %d, top %d kept", "quality_score", "_rank", "_n", "_keep")))
    except BaseException:
        release()
        raise
    outputs = [Output(DROPS, drops, rows=tally.dropped, partition_by=("stage",),
                      replace_partitions={"stage": STAGE}, base_version=base_drops),
               Output(DOCS_SCORED, scored, rows=tally.records, base_version=base_scored),
               Output(DOCS_CURATED, curated, rows=tally.kept, base_version=base_curated)]
    return StagePlan("score_quality", {table: source.version}, outputs, tally,
                     summary={"models": result.models, "by_lang": result.by_lang,
                              "histograms": result.histograms, "cuts": result.cuts},
                     release=release)


def score_and_select(spark: Any, lake_dir: str, cfg: QualityScoreConfig = QualityScoreConfig(), *,
                     input_version: int | None = None, run: Any = None) -> ScoreResult:
    """Plan and commit in one call (tests, notebooks); jobs go through `stage.run_stage`."""
    plan = plan_score(spark, lake_dir, cfg, input_version=input_version, run=run)
    tables = commit_plan(lake_dir, plan, run=run)
    [(table, version)] = plan.inputs.items()
    c, summary = plan.counts, plan.summary
    return ScoreResult(table, version, c.records, c.kept, c.dropped, summary["by_lang"], summary["models"],
                       tables, summary["histograms"], summary["cuts"])


def histogram_png(histograms: dict[str, list[int]], cuts: dict[str, float]) -> Path:
    """One panel per language: the score histogram, the selection cut as a red line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    langs = sorted(histograms)
    cols = min(5, len(langs))
    rows = math.ceil(len(langs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    edges = [i / BINS for i in range(BINS)]
    for ax, lang in zip(axes.flat, langs, strict=False):
        ax.bar(edges, histograms[lang], width=1 / BINS, align="edge", color="#4477aa")
        if lang in cuts:
            ax.axvline(cuts[lang], color="#cc3311", linewidth=1.5)
        ax.set_title(f"{lang} (cut {cuts.get(lang, float('nan')):.2f})", fontsize=9)
        ax.set_xlim(0, 1)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(langs):]:
        ax.axis("off")
    fig.suptitle("quality score per language; red: lowest score kept", fontsize=10)
    fig.tight_layout()
    path = Path(tempfile.mkdtemp(prefix="sailyard-plots-")) / "quality_histograms.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
