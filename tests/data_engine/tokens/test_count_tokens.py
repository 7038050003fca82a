"""Token accounting: counts equal the tokenizer's own, the exporter's shards and a hand-made top-q% selection."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from data_engine import lake, tracking
from data_engine.errors import ConfigError, SailyardError, TableConflictError, TableNotFoundError
from data_engine.export.config import ExportConfig
from data_engine.export.shards import export_shards
from data_engine.stage import commit_plan
from data_engine.tokenizer import QWEN_EOD_ID, identity, ship, tokenizer_dir
from data_engine.tokens import LangTokens, TokenCountConfig, plan_count_tokens, read_token_counts
from data_engine.tokens.job import count_tokens_job

TEXTS = {
    "tha": ["ภาษาไทยเขียนติดกันโดยไม่มีช่องว่าง", "สวัสดีครับ", "ข่าววันนี้: ฝนตกหนักในกรุงเทพ", ""],
    "lao": ["ມະນຸດທຸກຄົນເກີດມາມີກຽດ", "ສະບາຍດີ", " \n\t "],
    "khm": ["មនុស្សទាំងអស់កើតមកមានសេរីភាព", "សួស្តី"],
    "mya": ["လူတိုင်းသည်တူညီလွတ်လပ်သောဂုဏ်သိက္ခာဖြင့်", "မင်္ဂလာပါ"],
    "zho": ["中文没有空格。", "人人生而自由，在尊严和权利上一律平等。", "你好"],
    "vie": ["Tất cả mọi người sinh ra đều được tự do.", "Xin chào", None],
    "und": ["??? unknown language"],
}
SOURCES = ("cc", "wiki", None)
SCHEMA = "doc_id string, lang string, source string, text string"


def _tokenizer():
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tokenizer_dir("qwen2.5") / "tokenizer.json"))


TOK = _tokenizer()


def n_ids(text: str | None) -> int:
    return len(TOK.encode(text or "", add_special_tokens=False).ids)


def truth(rows, min_tokens: int = 1, key=lambda r: r[1]) -> dict:
    """key → [docs, tokens (+1 EOD each), dropped], straight from the tokenizers library."""
    out: dict = {}
    for r in rows:
        n = n_ids(r[3])
        entry = out.setdefault(key(r), [0, 0, 0])
        if n >= min_tokens:
            entry[0] += 1
            entry[1] += n + 1
        else:
            entry[2] += 1
    return out


def doc_rows(texts=TEXTS, prefix=""):
    return [(f"{prefix}{lang}-{i:03d}", lang, SOURCES[i % 3], t) for lang, ts in texts.items()
            for i, t in enumerate(ts)]


def write(spark, lake_dir, table, rows, schema=SCHEMA, mode="error"):
    lake.write_table(spark.createDataFrame(rows, schema), lake_dir, table, mode=mode)


def count(spark, lake_dir, cfg=TokenCountConfig(), input_version=None) -> dict[str, int]:
    """A count committed without an MLflow run (each test's fresh MLflow store costs seconds)."""
    return commit_plan(lake_dir, plan_count_tokens(spark, lake_dir, cfg, input_version=input_version))


def stored(lake_dir, **match) -> list[dict]:
    rows = lake.read_arrow(lake_dir, "token_counts").to_pylist()
    return sorted((r for r in rows if all(r[k] == v for k, v in match.items())),
                  key=lambda r: (r["table"], r["version"], r["lang"], r["source"] or "", r["quality_band"] or 0))


def test_counts_are_the_tokenizers_and_the_exporters(spark, lake_dir, tmp_path):
    rows = doc_rows()
    write(spark, lake_dir, "docs_curated", rows)
    summary = count_tokens_job(spark, lake_dir)
    expected = truth(rows)
    assert summary["by_lang"] == {lang: {"docs": d, "tokens": t} for lang, (d, t, _) in expected.items()}
    assert summary["in"] == len(rows) == summary["kept"] + summary["dropped"]
    assert summary["dropped"] == 2  # "" and None; a whitespace-only text has tokens and is kept
    assert summary["tables"] == {"token_counts": 0} and summary["tables_read"] == {"docs_curated": 0}
    assert summary["tokenizer"]["digest"] == identity("qwen2.5").digest

    table = stored(lake_dir)
    assert {r["table"] for r in table} == {"docs_curated"} and {r["version"] for r in table} == {0}
    assert all(r["quality_band"] is None for r in table)  # no quality_score column: no bands
    totals = {r["lang"]: [r["docs"], r["tokens"], r["dropped_docs"]] for r in table if r["source"] is None}
    assert totals == expected
    by_source = {(r["lang"], r["source"]): [r["docs"], r["tokens"], r["dropped_docs"]]
                 for r in table if r["source"] is not None}
    assert by_source == truth(rows, key=lambda r: (r[1], r[2] or "(none)"))
    assert {(r["tokenizer"], r["eod_id"], r["band_percent"], r["mlflow_run_id"]) for r in table} == {
        ("qwen2.5", QWEN_EOD_ID, 1, summary["mlflow_run_id"])}

    counts = read_token_counts(lake_dir, "docs_curated")
    assert (counts.version, counts.counts_version, counts.tokenizer_digest) == (0, 0, identity("qwen2.5").digest)
    assert counts.tokens() == {lang: t for lang, (_, t, _) in expected.items()}
    assert counts.by_source[("tha", "wiki")] == LangTokens(*truth([r for r in rows if r[0] == "tha-001"])["tha"][:2])
    assert counts.bands == {}

    from mlflow.tracking import MlflowClient

    run = MlflowClient(tracking.tracking_uri(tmp_path)).get_run(summary["mlflow_run_id"])
    assert run.data.metrics["tokens.zho"] == expected["zho"][1] and run.data.metrics["docs.tha"] == 3
    assert run.data.metrics["dropped.tha"] == 1
    assert run.data.tags["tokenizer"] == "qwen2.5"
    assert run.data.tags["tokenizer_digest"] == identity("qwen2.5").digest

    # The exporter, on the same table version, writes exactly the counted documents and tokens.
    export = export_shards(spark, lake_dir, str(tmp_path / "shards"), "stage1",
                           ExportConfig(input_table="docs_curated"))
    manifest = {r["lang"]: r for r in lake.read_arrow(lake_dir, "shard_manifest").to_pylist()}
    assert set(manifest) == set(expected) - {"und"} and export.source_version == counts.version
    for lang, row in manifest.items():
        assert (row["docs"], row["tokens"]) == (counts.totals[lang].docs, counts.totals[lang].tokens), lang


def test_quality_bands_are_the_top_percent_selections(spark, lake_dir):
    import random

    rnd = random.Random(7)
    words = ["ข่าว", "วันนี้", "ฝนตก", "กรุงเทพ", "ภาษา", "ไทย", "สวัสดี"]
    rows = []
    for i in range(57):  # ties (scores on a coarse grid), an empty text, an unscored document
        score = None if i == 5 else round(rnd.randrange(0, 20) / 20, 2)
        text = "" if i == 9 else "".join(rnd.choice(words) for _ in range(rnd.randrange(1, 12)))
        rows.append((f"t{rnd.randrange(10**6):06d}-{i}", "tha", "cc" if i % 2 else "web", text, score))
    rows += [(f"v{i:02d}", "vie", "cc", f"Văn bản số {i} " * (1 + i % 4), rnd.random()) for i in range(13)]
    rows += [(f"l{i}", "lao", "cc", "ສະບາຍດີ" * (i + 1), None) for i in range(3)]  # no scored document
    write(spark, lake_dir, "docs_scored", rows, SCHEMA + ", quality_score double")

    def top(lang: str, q: float) -> list[int]:
        mine = sorted((r for r in rows if r[1] == lang), key=lambda r: (-(r[4] if r[4] is not None else -1), r[0]))
        chosen = mine[:math.ceil(q * len(mine) / 100)]
        d, t, _ = truth(chosen).get(lang, [0, 0, 0])
        return [d, t]

    count(spark, lake_dir, TokenCountConfig(table="docs_scored"))
    counts = read_token_counts(lake_dir, "docs_scored")
    assert set(counts.bands) == {"tha", "vie"}  # lao has no scored document
    for lang in ("tha", "vie"):
        for q in (1, 2, 5, 10, 33, 50, 64, 99, 100):
            got = counts.top_tokens(lang, q)
            assert [got.docs, got.tokens] == top(lang, q), (lang, q)
        assert counts.top_tokens(lang, 100) == counts.totals[lang]
    table = stored(lake_dir, lang="tha")
    bands = [r for r in table if r["quality_band"] is not None]
    assert all(r["source"] is None for r in bands) and len({r["quality_band"] for r in bands}) == len(bands)
    assert sum(r["dropped_docs"] for r in bands) == 1 and sum(r["docs"] for r in bands) == 56
    with pytest.raises(ConfigError, match="no quality bands for 'lao'.*tha, vie"):
        counts.top_tokens("lao", 10)
    with pytest.raises(ConfigError, match="multiple of the counted band width"):
        counts.top_tokens("tha", 2.5)
    with pytest.raises(ConfigError, match="multiple"):
        counts.top_tokens("tha", 0)

    # Wider bands: re-counting the same version replaces its rows.
    count(spark, lake_dir, TokenCountConfig(table="docs_scored", band_percent=10))
    wide = read_token_counts(lake_dir, "docs_scored")
    assert wide.band_percent == 10 and wide.counts_version == 1 and wide.totals == counts.totals
    assert set(wide.bands["tha"]) <= set(range(10, 101, 10))
    for q in (10, 50, 100):
        assert wide.top_tokens("tha", q) == counts.top_tokens("tha", q)
    with pytest.raises(ConfigError, match=r"band width \(10%\)"):
        wide.top_tokens("tha", 5)
    assert len(stored(lake_dir)) == len({(r["lang"], r["source"], r["quality_band"]) for r in stored(lake_dir)})


def test_a_count_replaces_only_its_table_version(spark, lake_dir):
    first = doc_rows({"tha": TEXTS["tha"], "zho": TEXTS["zho"]})
    write(spark, lake_dir, "docs_curated", first)
    write(spark, lake_dir, "docs_dedup", doc_rows({"khm": TEXTS["khm"]}))
    count(spark, lake_dir)
    v0 = stored(lake_dir, table="docs_curated", version=0)
    second = first + doc_rows({"mya": TEXTS["mya"], "tha": ["ภาษาไทย"]}, prefix="b")
    write(spark, lake_dir, "docs_curated", second, mode="overwrite")
    count(spark, lake_dir)
    v1 = stored(lake_dir, table="docs_curated", version=1)
    assert stored(lake_dir, table="docs_curated", version=0) == v0  # carried over as it was
    assert {r["lang"]: r["tokens"] for r in v1 if r["source"] is None} == {
        lang: t for lang, (_, t, _) in truth(second).items()}

    count(spark, lake_dir, input_version=0)  # an older version again: v1's rows stay
    strip = [{k: v for k, v in r.items() if k != "mlflow_run_id"} for r in v0]
    assert [{k: v for k, v in r.items() if k != "mlflow_run_id"} for r in
            stored(lake_dir, table="docs_curated", version=0)] == strip
    assert stored(lake_dir, table="docs_curated", version=1) == v1
    assert read_token_counts(lake_dir, "docs_curated").version == 1  # the newest version counted
    assert read_token_counts(lake_dir, "docs_curated", 0).tokens() == {
        lang: t for lang, (_, t, _) in truth(first).items()}

    # Two counts of the same table read the same base: the second conflicts instead of dropping
    # the first's rows. A count of another table in between does not.
    a = plan_count_tokens(spark, lake_dir, TokenCountConfig(), input_version=1)
    b = plan_count_tokens(spark, lake_dir, TokenCountConfig(), input_version=0)
    count(spark, lake_dir, TokenCountConfig(table="docs_dedup"))
    commit_plan(lake_dir, a)
    with pytest.raises(TableConflictError):
        commit_plan(lake_dir, b)
    assert {(r["table"], r["version"]) for r in stored(lake_dir)} == {
        ("docs_curated", 0), ("docs_curated", 1), ("docs_dedup", 0)}
    with pytest.raises(ConfigError, match=r"docs_curated v7 was not counted \(counted: docs_curated v0, v1; "
                                          r"docs_dedup v0\)"):
        read_token_counts(lake_dir, "docs_curated", 7)
    with pytest.raises(ConfigError, match="no counts of docs_scored"):
        read_token_counts(lake_dir, "docs_scored")


def test_job_entry_point_prints_the_summary(spark, lake_dir, capsys, tmp_path):
    from jobs.count_tokens import main

    rows = doc_rows()
    write(spark, lake_dir, "docs_dedup", rows)
    cfg = tmp_path / "tokens.yaml"
    cfg.write_text(yaml.safe_dump({"tokens": {"min_tokens": 3, "table": "docs_curated"}}))
    capsys.readouterr()
    assert main(["--lake", lake_dir, "--table", "docs_dedup", "--config", str(cfg), "--tokenizer", "qwen2.5"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    expected = truth(rows, min_tokens=3)
    assert summary["job"] == "count_tokens" and summary["status"] == "ok"
    assert summary["by_lang"] == {lang: {"docs": d, "tokens": t} for lang, (d, t, _) in expected.items()}
    assert summary["dropped"] == sum(x[2] for x in expected.values()) > 3  # short texts dropped too
    assert summary["tables_read"] == {"docs_dedup": 0} and summary["tokenizer"]["name"] == "qwen2.5"
    assert summary["mlflow_run_id"]

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"tokens": {"band_percent": 3}}))
    assert main(["--lake", lake_dir, "--config", str(bad)]) == 2
    failed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert failed["status"] == "error" and "band_percent must divide 100" in failed["error"]
    assert main(["--lake", lake_dir]) == 1  # no docs_curated
    assert "docs_curated" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])["error"]


def test_a_task_refuses_a_tokenizer_file_that_differs_from_the_drivers(spark, lake_dir):
    from pyspark import SparkFiles

    write(spark, lake_dir, "docs_curated", doc_rows({"tha": TEXTS["tha"]}))
    shipped = Path(SparkFiles.get(ship(spark, identity("qwen2.5"))))  # local master: the executors' copy
    original = shipped.read_bytes()
    try:
        shipped.write_bytes(original.replace(b"<|im_end|>", b"<|im_stop|>"))
        with pytest.raises(SailyardError) as err:
            plan_count_tokens(spark, lake_dir)
    finally:
        shipped.write_bytes(original)
    assert str(err.value).startswith("tokenizer mismatch: tokenizer 'qwen2.5' on this executor")
    assert "\n" not in str(err.value) and not lake.exists(lake_dir, "token_counts")


def test_read_without_counts_and_bad_config(lake_dir):
    with pytest.raises(TableNotFoundError, match="no token_counts table"):
        read_token_counts(lake_dir, "docs_curated")
    for bad in ({"band_percent": 3}, {"band_percent": 0}, {"band_percent": 200}, {"min_tokens": -1},
                {"batch_docs": 0}, {"table": ""}, {"table": "../x"}, {"eod_id": -2}):
        with pytest.raises(ConfigError):
            TokenCountConfig(**bad)
    assert TokenCountConfig(band_percent=25).band_percent == 25
