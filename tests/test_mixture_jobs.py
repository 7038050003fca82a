"""The mixture study through its commands: count_tokens → mixture sweep/fit/search → plan → export --plan.

Each command's `main()` is what `sailyard <command>` and spark-submit run: the JSON summary is the
last stdout line, bad input exits 2 with one line saying what to fix.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from data_engine import lake
from data_engine.sample.corpus import load_udhr
from jobs import count_tokens, export_shards, mixture, plan

LANGS = ["eng", "khm", "tha", "vie"]
LOW = ["lao"]


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def study(spark, tmp_path_factory):
    """A lake with docs_scored/docs_curated in four stage-1 languages and one low-resource one."""
    root = tmp_path_factory.mktemp("study")
    lake_dir = str(root / "lake")
    rows = []
    for lang in LANGS + LOW:
        paragraphs = [p for section in load_udhr(lang) for p in section][:30]
        rows += [(f"{lang}-{i:03d}", lang, "sample", text, (i * 37 % 100) / 100.0)
                 for i, text in enumerate(paragraphs)]
    df = spark.createDataFrame(rows, "doc_id string, lang string, source string, text string, quality_score double")
    lake.write_table(df, lake_dir, "docs_scored", mode="error")
    lake.write_table(df.where(df.lang != "lao"), lake_dir, "docs_curated", mode="error")
    cfg = root / "mixture.yaml"
    cfg.write_text(yaml.safe_dump({"mixture": {
        "langs": LANGS, "runs": 6, "budget_stage1": 20000, "budget_stage2": 20000,
        "sweep": {"preset": "tiny", "workers": 2, "proxy": {"steps": 6, "val_batches": 1, "split": "80,20,0"}},
        "search": {"samples": 3000, "top": 16}, "plan": {"hq_percent": 40}}}))
    return {"root": root, "lake": lake_dir, "config": str(cfg)}


def test_the_study_end_to_end_through_its_commands(study, capsys):
    root, lake_dir, cfg = study["root"], study["lake"], study["config"]
    assert export_shards.main(["--lake", lake_dir, "--out", str(root / "shards"), "--stage", "proxy"]) == 0
    exported = _last_json(capsys)
    for table in ("docs_curated", "docs_scored"):
        assert count_tokens.main(["--lake", lake_dir, "--table", table]) == 0
        counted = _last_json(capsys)
        assert counted["status"] == "ok" and counted["tables_read"] == {table: 0}
    # The sweep needs the planned budget for its caps; here it comes from the config.
    sweep_dir = str(root / "sweep")
    assert mixture.main(["sweep", "--lake", lake_dir, "--out", sweep_dir, "--config", cfg]) == 0
    swept = _last_json(capsys)
    assert swept["status"] == "ok" and swept["finished"] == 6 and swept["tables_read"] == {"docs_curated": 0}
    assert mixture.main(["fit", "--sweep", sweep_dir, "--config", cfg]) == 0
    fitted = _last_json(capsys)
    assert fitted["runs"] == 6 and set(fitted["rho"]) == set(LANGS)
    out = root / "mixture.out.yaml"
    # Six proxies cannot rank mixtures: refused (exit 2, nothing written) unless forced.
    assert mixture.main(["search", "--sweep", sweep_dir, "--out", str(out), "--config", cfg]) == 2
    refused = _last_json(capsys)
    assert refused["status"] == "error" and "min_rho" in refused["error"] and not out.exists()
    assert mixture.main(["search", "--sweep", sweep_dir, "--out", str(out), "--config", cfg, "--force"]) == 0
    searched = _last_json(capsys)
    assert searched["forced"] and sorted(searched["weights"]) == LANGS
    doc = yaml.safe_load(out.read_text())
    assert doc["weights"] == pytest.approx(searched["weights"], abs=1e-6)
    assert doc["provenance"]["table"] == "docs_curated" and doc["provenance"]["version"] == 0
    for lang, w in doc["weights"].items():  # within the caps the sweep used
        assert w <= doc["caps"][lang] + 1e-9
    plan_path = root / "plan.yaml"
    assert plan.main(["--mixture", str(out), "--out", str(plan_path), "--config", cfg]) == 0
    planned = _last_json(capsys)
    p = yaml.safe_load(plan_path.read_text())
    assert planned["plan_digest"] == p["plan_digest"]
    hq = {e["lang"] for e in p["stages"]["stage2"]["blend"] if e["kind"] == "hq"}
    assert hq == set(LANGS + LOW)  # the low-resource language enters in stage 2 only
    assert "lao" not in {e["lang"] for e in p["stages"]["stage1"]["blend"]}
    assert export_shards.main(["--lake", lake_dir, "--out", str(root / "shards"), "--plan", str(plan_path)]) == 0
    written = _last_json(capsys)
    assert written["plan_digest"] == p["plan_digest"] and sorted(written["data_configs"]) == ["stage1", "stage2"]
    # The exporter's tokens for the same table version are the counted ones.
    for lang, shard in written["groups"]["stage1"].items():
        assert shard["tokens"] == exported["shards"][lang]["tokens"]
    assert set(written["groups"]["stage2-hq"]) == set(LANGS + LOW)
    assert Path(written["data_configs"]["stage2"]).is_file()


def test_sweep_refuses_counts_that_do_not_describe_the_shards(study, capsys, spark):
    root, lake_dir, cfg = study["root"], study["lake"], study["config"]
    # A newer docs_curated exported but not counted: the prior would describe other data.
    df = lake.read_table(spark, lake_dir, "docs_curated").df
    lake.write_table(df.where(~df.doc_id.endswith("7")), lake_dir, "docs_curated", mode="overwrite")
    assert export_shards.main(["--lake", lake_dir, "--out", str(root / "shards2"), "--stage", "proxy2",
                               "--input-version", "1"]) == 0
    capsys.readouterr()
    code = mixture.main(["sweep", "--lake", lake_dir, "--out", str(root / "sweep2"), "--stage", "proxy2",
                         "--config", cfg])
    err = _last_json(capsys)
    assert code == 2 and "v1 was not counted" in err["error"]
    # Without a budget there are no caps to sample under.
    code = mixture.main(["sweep", "--lake", lake_dir, "--out", str(root / "sweep3"), "--stage", "proxy"])
    err = _last_json(capsys)
    assert code == 2 and "--budget-stage1" in err["error"]
