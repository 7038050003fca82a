"""Quality classifiers on real text vs synthetic junk, the MLflow registry, exact top-p% selection."""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path

import fasttext
import pytest
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from data_engine import lake, tracking
from data_engine.errors import InputError, TableNotFoundError
from data_engine.quality.config import QualityScoreConfig, QualityTrainConfig
from data_engine.quality.features import fasttext_lines
from data_engine.quality.job import score_quality_job, train_quality_job
from data_engine.quality.rank import keep_count
from data_engine.quality.train import MODEL_FILE, read_positives, score_texts
from data_engine.sample.corpus import load_udhr

SCHEMA = "doc_id string, lang string, text string"


def junk(rng: random.Random, lang: str, n: int) -> list[str]:
    """Web junk of the kinds quality filters exist for: menus, SEO spam, keyword stuffing, character soup,
    code, footers. (Shuffled real words are not here: a bag-of-n-grams model cannot see word order.)"""
    words = " ".join(p for s in load_udhr(lang) for p in s).split() or ["x"]
    chars = [c for c in "".join(words) if not c.isspace()]
    kinds = [
        lambda: "\n".join(rng.sample(["Home", "Login", "Cart", "Sale", "Contact", "FAQ", "Blog", "Shop"], 6)),
        lambda: " ".join(["best price", "buy now", "free shipping", "cheap"][rng.randrange(4)] for _ in range(40)),
        lambda: " | ".join(rng.choice(words[:40]) for _ in range(30)),  # keyword stuffing
        lambda: f"© {rng.randrange(2000, 2026)} All rights reserved. Cookies help us deliver our services. "
                f"Page {rng.randrange(9)} of {rng.randrange(9, 99)} · Terms · Privacy",
        lambda: "".join(rng.choice(chars) for _ in range(200)),
        lambda: "\n".join(f"var a{i} = {rng.randrange(100)}; function f{i}() {{ return a{i}; }}" for i in range(8)),
    ]
    return [kinds[i % len(kinds)]() for i in range(n)]


def test_spaceless_text_becomes_grapheme_tokens_and_spaced_text_words():
    thai, khmer, eng = fasttext_lines(["ที่นี่ ดี", "ខ្មែរ", "Hello   World\nagain"])
    assert thai.split() == ["ที่", "นี่", "ดี"]  # consonant + vowel + tone mark stay one token
    assert khmer.split() == ["ខ្មែ", "រ"]  # a Khmer subscript stack is one cluster
    assert eng == "hello world again"


def test_keep_count_is_the_exact_ceiling():
    assert keep_count(250, 64.4) == 161  # float: 64.4 * 250 / 100 = 161.00000000000003
    assert keep_count(10, 20) == 2 and keep_count(11, 20) == 3 and keep_count(1, 0.5) == 1
    assert keep_count(0, 20) == 0 and keep_count(7, 100) == 7


def test_positives_from_every_format_and_clear_errors_for_bad_ones(tmp_path):
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "pos"
    folder.mkdir()
    (folder / "a.jsonl").write_text('\ufeff{"text": "one"}\n\n{"text": ""}\n{"other": 1}\n', encoding="utf-8")
    (folder / "e.json").write_text('[\n  {"text": "six"},\n  {"text": null}\n]\n', encoding="utf-8")
    with gzip.open(folder / "b.json.gz", "wt", encoding="utf-8") as handle:
        handle.write('{"text": "two"}\n')
    (folder / "c.txt").write_text("three\nfour\n", encoding="utf-8")
    pq.write_table(pa.table({"text": ["five", None]}), folder / "d.parquet")
    (folder / "README.md").write_text("not data", encoding="utf-8")
    assert sorted(read_positives(folder, 100, 1)) == ["five", "four", "one", "six", "three", "two"]
    assert len(read_positives(folder, 3, 1)) == 3 and read_positives(folder, 3, 1) == read_positives(folder, 3, 1)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": broken\n', encoding="utf-8")
    with pytest.raises(InputError, match="line 2: not JSON"):
        read_positives(bad, 10, 1)
    listed = tmp_path / "listed.jsonl"
    listed.write_text('{"text": "ok"}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(InputError, match="record 2: expected a JSON object"):
        read_positives(listed, 10, 1)
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "wrong.parquet")
    with pytest.raises(InputError, match="text"):
        read_positives(tmp_path / "wrong.parquet", 10, 1)
    with pytest.raises(InputError, match="does not exist"):
        read_positives(tmp_path / "missing", 10, 1)


#: The training part of the UDHR (48 Thai paragraphs): the first 36 are positives, the last 12 real text
#: the classifier never saw.
POSITIVES = 36


@pytest.fixture()
def quality_lake(spark, lake_dir, tmp_path):
    rng = random.Random(3)
    rows, negatives, positives = [], [], {}
    for lang in ("tha", "ind"):
        paragraphs = [p for s in load_udhr(lang) for p in s]
        path = tmp_path / f"{lang}.jsonl"
        path.write_text("".join(json.dumps({"text": p}, ensure_ascii=False) + "\n" for p in paragraphs[:POSITIVES]),
                        encoding="utf-8")
        positives[lang] = str(path)
        # docs_clean (where negatives are sampled): junk; docs_dedup (what is scored): junk and real text
        # never seen in training
        negatives += [(f"{lang}-n{i:03d}", lang, t) for i, t in enumerate(junk(rng, lang, 150))]
        rows += [(f"{lang}-j{i:03d}", lang, t) for i, t in enumerate(junk(rng, lang, 60))]
        rows += [(f"{lang}-r{i:03d}", lang, t) for i, t in enumerate(paragraphs[POSITIVES:POSITIVES + 12])]
    rows += [(f"lao-{i}", "lao", t) for i, t in enumerate(junk(rng, "lao", 7))]  # no classifier for Lao
    lake.write_table(spark.createDataFrame(negatives, SCHEMA), lake_dir, "docs_clean", mode="error")
    lake.write_table(spark.createDataFrame(rows, SCHEMA), lake_dir, "docs_dedup", mode="error")
    return lake_dir, positives, rows


def test_classifier_ranks_real_text_above_junk_and_is_registered(spark, quality_lake):
    lake_dir, positives, _ = quality_lake
    cfg = QualityTrainConfig(max_negatives=120, epoch=25)
    results = {lang: train_quality_job(spark, lake_dir, lang, positives[lang], cfg) for lang in ("tha", "ind")}
    for lang, r in results.items():
        assert r["metrics"]["auc"] >= 0.9, (lang, r["metrics"])  # held-out fifth of positives and negatives
        assert r["model"] == f"sailyard-quality-{lang}/1"
        # Text neither set saw: real paragraphs beyond the positives vs freshly generated junk.
        model = fasttext.load_model(str(Path(r["model_dir"]) / MODEL_FILE))
        real = [p for s in load_udhr(lang) for p in s][POSITIVES:POSITIVES + 12]
        fresh = junk(random.Random(99), lang, 30)
        scores = score_texts(model, real + fresh, 4000)
        assert roc_auc_score([1] * len(real) + [0] * len(fresh), scores) >= 0.9, lang
    again = train_quality_job(spark, lake_dir, "tha", positives["tha"], cfg)
    assert again["model"] == "sailyard-quality-tha/2"
    assert again["metrics"] == results["tha"]["metrics"]  # same inputs, same seed: same model
    work = tracking.work_dir_for(lake_dir)
    latest = tracking.latest_version(work, "sailyard-quality-tha")
    assert latest is not None and latest.version == 2
    client = MlflowClient(tracking.tracking_uri(work))
    run = client.get_run(again["mlflow_run_id"])
    assert run.data.tags["table.read.docs_clean"].endswith("@v0") and run.data.metrics["auc"] >= 0.9
    assert {a.path for a in client.list_artifacts(run.info.run_id, "model")} >= {"model/quality.bin", "model/meta.json"}


def test_selection_keeps_exactly_the_top_percent_per_language(spark, quality_lake):
    lake_dir, positives, rows = quality_lake
    for lang in ("tha", "ind"):
        train_quality_job(spark, lake_dir, lang, positives[lang], QualityTrainConfig(max_negatives=120, epoch=25))
    cfg = QualityScoreConfig(keep_percent=10, keep_percent_by_lang={"ind": 25})
    summary = score_quality_job(spark, lake_dir, cfg)
    # Fetching the models must not point this process's later jobs at this store.
    assert "MLFLOW_TRACKING_URI" not in os.environ
    n = {lang: sum(1 for r in rows if r[1] == lang) for lang in ("tha", "ind", "lao")}
    assert summary["by_lang"]["tha"]["kept"] == math.ceil(0.10 * n["tha"])
    assert summary["by_lang"]["ind"]["kept"] == math.ceil(0.25 * n["ind"])
    assert summary["by_lang"]["lao"]["kept"] == n["lao"]  # no classifier: kept, unscored
    assert summary["in"] == summary["kept"] + summary["dropped"] == len(rows)
    scored = lake.read_arrow(lake_dir, "docs_scored").to_pylist()
    curated = {r["doc_id"] for r in lake.read_arrow(lake_dir, "docs_curated").to_pylist()}
    tha = sorted((r for r in scored if r["lang"] == "tha"), key=lambda r: (-r["quality_score"], r["doc_id"]))
    assert {r["doc_id"] for r in tha[: math.ceil(0.10 * n["tha"])]} == {d for d in curated if d.startswith("tha")}
    # Real text outranks junk: the kept Thai documents are mostly the real paragraphs.
    assert sum(d.startswith("tha-r") for d in curated) >= 0.8 * len([d for d in curated if d.startswith("tha")])
    drops = [r for r in lake.read_arrow(lake_dir, "drops").to_pylist() if r["stage"] == "quality"]
    assert len(drops) == summary["dropped"] and drops[0]["reason"] == "below_quality_cutoff"
    assert "kept" in drops[0]["detail"]
    # Languages without a classifier can be dropped instead, with their own reason; the run replaces
    # the quality drops rather than adding to them.
    strict = score_quality_job(spark, lake_dir, QualityScoreConfig(keep_percent=10, without_model="drop"))
    assert strict["by_lang"]["lao"] == {"in": n["lao"], "kept": 0, "dropped": n["lao"]}
    drops = [r for r in lake.read_arrow(lake_dir, "drops").to_pylist() if r["stage"] == "quality"]
    assert len(drops) == strict["dropped"]
    assert {r["reason"] for r in drops if r["lang"] == "lao"} == {"no_quality_model"}


def test_one_session_scores_lakes_whose_registries_reuse_a_version_number(spark, quality_lake, tmp_path):
    """Two lakes, each with its own `sailyard-quality-tha/1` of different content, one Spark session."""
    lake_dir, positives, rows = quality_lake
    other = tmp_path / "other" / "lake"
    other.parent.mkdir()
    for target, seed in ((lake_dir, 13), (str(other), 14)):
        if target != lake_dir:
            for table in ("docs_clean", "docs_dedup"):
                lake.write_table(lake.read_table(spark, lake_dir, table).df, str(other), table, mode="error")
        train = train_quality_job(spark, target, "tha", positives["tha"],
                                  QualityTrainConfig(max_negatives=120, epoch=25, seed=seed))
        assert train["model"] == "sailyard-quality-tha/1"
        summary = score_quality_job(spark, target, QualityScoreConfig(keep_percent=50))
        assert summary["models"] == {"tha": "sailyard-quality-tha/1"}
        assert summary["in"] == len(rows)


def test_without_dedup_the_clean_table_is_scored(spark, lake_dir, tmp_path):
    rng = random.Random(5)
    paragraphs = [p for s in load_udhr("vie") for p in s]
    positives = tmp_path / "vie.txt"
    positives.write_text("\n".join(p.replace("\n", " ") for p in paragraphs[:30]), encoding="utf-8")
    rows = [(f"j{i:02d}", "vie", t) for i, t in enumerate(junk(rng, "vie", 30))]
    lake.write_table(spark.createDataFrame(rows, SCHEMA), lake_dir, "docs_clean", mode="error")
    with pytest.raises(TableNotFoundError, match="docs_dedup, docs_clean"):
        score_quality_job(spark, str(tmp_path / "empty" / "lake"))
    train = train_quality_job(spark, lake_dir, "vie", str(positives), QualityTrainConfig(epoch=25))
    assert train["tables_read"] == {"docs_clean": 0}
    summary = score_quality_job(spark, lake_dir)
    assert summary["tables_read"] == {"docs_clean": 0} and summary["kept"] == math.ceil(0.2 * len(rows))


def test_ranks_are_exact_when_a_language_spans_many_partitions(spark):
    from data_engine.quality.rank import ranks_within_language

    rng = random.Random(2)
    rows = [(f"d{i:05d}", rng.choice(["tha", "vie", "lao"]),
             None if i % 50 == 0 else rng.choice([0.1, 0.5, 0.5, 0.9, rng.random()])) for i in range(3000)]
    df = spark.createDataFrame(rows, "doc_id string, lang string, quality_score double").repartition(7)
    previous = spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", "9")
    try:
        ranks = ranks_within_language(spark, df)
        got = {r.doc_id: r._rank for r in ranks.collect()}
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", previous)
    expected = {}
    for lang in ("tha", "vie", "lao"):
        ordered = sorted((r for r in rows if r[1] == lang), key=lambda r: (r[2] is None, -(r[2] or 0), r[0]))
        expected.update({r[0]: i + 1 for i, r in enumerate(ordered)})
    assert got == expected


def test_cut_selection_keeps_exactly_the_ranks_within_the_count(spark):
    """docs_curated comes from each language's cut (its last kept document), not from a join with
    the ranks: with ties across partitions, unscored documents and languages keeping all or none,
    the two must name the same documents."""
    from pyspark.sql import functions as F

    from data_engine.quality.rank import rank_score, ranks_within_language, within_cuts

    rng = random.Random(4)
    rows = [(f"d{i:05d}", rng.choice(["tha", "vie", "lao", "khm"]),
             None if i % 40 == 0 else rng.choice([0.25, 0.5, 0.5, 0.75, 1.00001, round(rng.random(), 6)]))
            for i in range(2000)]
    df = spark.createDataFrame(rows, "doc_id string, lang string, quality_score double").repartition(5)
    n = {lang: sum(1 for r in rows if r[1] == lang) for lang in ("tha", "vie", "lao", "khm")}
    keep = {"tha": 37, "vie": n["vie"], "lao": 0, "khm": 1}
    ranks = ranks_within_language(spark, df, carry=("lang", "quality_score"))
    try:
        keep_df = spark.createDataFrame(list(keep.items()), "lang string, _keep long")
        ranked = ranks.join(keep_df, "lang")
        cuts = [(r.lang, r.s, r.doc_id) for r in ranked.where(F.col("_rank") == F.col("_keep"))
                .select("lang", rank_score().alias("s"), "doc_id").collect()]
        got = {r.doc_id for r in within_cuts(spark, df, cuts).collect()}
    finally:
        ranks.unpersist()
    expected = set()
    for lang, k in keep.items():  # the truth from the rows themselves: score desc, unscored last, doc_id asc
        ordered = sorted((r for r in rows if r[1] == lang), key=lambda r: (r[2] is None, -(r[2] or 0), r[0]))
        expected |= {r[0] for r in ordered[:k]}
    assert got == expected
    assert sum(d in got for d, lang, _ in rows if lang == "lao") == 0
