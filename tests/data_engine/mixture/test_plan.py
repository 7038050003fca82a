"""The two-stage plan: stage-1 mixture within caps, stage 2 = replay share + high-quality tokens."""

from __future__ import annotations

import pyarrow as pa
import pytest
import yaml
from deltalake import write_deltalake

from data_engine.errors import ConfigError
from data_engine.mixture.plan import HQ_GROUP, PlanConfig, make_plan, plan_digest, write_plan
from data_engine.tables import TOKEN_COUNTS

STAGE1 = ("vie", "ind", "tha", "eng", "zho", "mya", "zsm", "tgl", "khm")
LOW = ("jav", "sun", "ceb", "war", "ilo", "lao")
# Curated (stage-1 base) tokens, and per 1% quality band of the scored table (so top q% = q × band).
BASE = {"eng": 4_000_000, "zho": 3_000_000, "ind": 1_000_000, "vie": 1_000_000, "tha": 500_000,
        "zsm": 200_000, "tgl": 150_000, "mya": 100_000, "khm": 50_000}
BAND = {lang: 5 * n // 100 for lang, n in BASE.items()} | {"jav": 300, "sun": 200, "ceb": 400, "war": 100,
                                                            "ilo": 100, "lao": 250}
MIXTURE = {"eng": 0.3, "zho": 0.2, "ind": 0.1, "vie": 0.1, "tha": 0.1, "zsm": 0.05, "tgl": 0.05, "mya": 0.05,
           "khm": 0.05}


def _rows(table, version, totals, bands=None):
    rows = []
    for lang, tokens in totals.items():
        rows.append({"table": table, "version": version, "lang": lang, "source": None, "quality_band": None,
                     "docs": 100, "tokens": tokens})
        for k in range(1, 101) if bands else ():
            rows.append({"table": table, "version": version, "lang": lang, "source": None, "quality_band": k,
                         "docs": 1, "tokens": bands[lang]})
    for r in rows:
        r.update({"dropped_docs": 0, "tokenizer": "qwen2.5", "tokenizer_digest": "d" * 64, "eod_id": 151643,
                  "band_percent": 1, "mlflow_run_id": "test"})
    return rows


@pytest.fixture()
def lake(tmp_path):
    root = tmp_path / "lake"
    rows = _rows("docs_curated", 3, BASE) + _rows("docs_scored", 2, {k: v * 100 for k, v in BAND.items()}, BAND)
    schema = pa.schema([("table", pa.string()), ("version", pa.int64()), ("lang", pa.string()),
                        ("source", pa.string()), ("quality_band", pa.int32()), ("docs", pa.int64()),
                        ("tokens", pa.int64()), ("dropped_docs", pa.int64()), ("tokenizer", pa.string()),
                        ("tokenizer_digest", pa.string()), ("eod_id", pa.int64()), ("band_percent", pa.int32()),
                        ("mlflow_run_id", pa.string())])
    write_deltalake(str(root / TOKEN_COUNTS), pa.Table.from_pylist(rows, schema), partition_by=["table"])
    return str(root)


def _by(blend, kind):
    return {e["lang"]: e for e in blend if e["kind"] == kind}


def test_stage1_is_the_mixture_when_no_cap_binds(lake):
    plan = make_plan(lake, MIXTURE, 2_000_000, 400_000)
    blend = plan["stages"]["stage1"]["blend"]
    assert {e["lang"]: e["weight"] for e in blend} == pytest.approx(MIXTURE)
    for e in blend:
        assert e["kind"] == "base" and e["prefix"] == f"stage1/{e['lang']}"
        assert e["tokens_available"] == BASE[e["lang"]]
        assert e["epochs"] == pytest.approx(e["weight"] * 2_000_000 / BASE[e["lang"]], rel=1e-5)
    assert sum(e["weight"] for e in blend) == pytest.approx(1.0, abs=1e-12)
    assert plan["shards"]["stage1"] == {"table": "docs_curated", "version": 3, "langs": sorted(STAGE1),
                                        "top_percent": None}


def test_stage2_replay_share_hq_split_and_caps(lake):
    budget1, budget2 = 2_000_000, 400_000
    plan = make_plan(lake, MIXTURE, budget1, budget2, PlanConfig(hq_percent=10, max_epochs=4))
    blend = plan["stages"]["stage2"]["blend"]
    replay, hq = _by(blend, "replay"), _by(blend, "hq")
    assert sum(e["weight"] for e in blend) == pytest.approx(1.0, abs=1e-12)
    assert sum(e["weight"] for e in replay.values()) == pytest.approx(0.2, abs=1e-9)
    # Replay in stage-1 proportions, from the stage-1 shards.
    for lang, e in replay.items():
        assert e["weight"] == pytest.approx(0.2 * MIXTURE[lang], rel=1e-6)
        assert e["prefix"] == f"stage1/{lang}"
    # High quality over all 15 languages; top 10% = 10 bands.
    assert set(hq) == set(STAGE1) | set(LOW)
    for lang, e in hq.items():
        assert e["tokens_available"] == 10 * BAND[lang] and e["prefix"] == f"{HQ_GROUP}/{lang}"
    # Low-resource languages take what 4 epochs of their high-quality tokens allow...
    for lang in LOW:
        assert hq[lang]["weight"] == pytest.approx(4 * 10 * BAND[lang] / budget2, rel=1e-6)
        assert hq[lang]["epochs"] == pytest.approx(4.0, rel=1e-6)
    # ...and the stage-1 languages share the rest in their stage-1 proportions, as far as caps allow.
    high = {lang: hq[lang]["weight"] for lang in STAGE1}
    assert sum(high.values()) == pytest.approx(0.8 - sum(hq[x]["weight"] for x in LOW), abs=1e-9)
    for e in blend:  # no entry over its cap, replay counting both stages
        assert e.get("epochs_total", e["epochs"]) <= 4.0 + 1e-6
    uncapped = [lang for lang in STAGE1 if hq[lang]["epochs"] < 4 - 1e-6]
    ratios = {lang: high[lang] / MIXTURE[lang] for lang in uncapped}
    assert max(ratios.values()) == pytest.approx(min(ratios.values()), rel=1e-6)
    assert plan["shards"][HQ_GROUP]["top_percent"] == {lang: 10 for lang in sorted(hq)}
    assert plan["shards"][HQ_GROUP]["version"] == 2


def test_binding_cap_in_stage1_is_lowered_and_warned(lake):
    # khm has 50k tokens; 4 epochs of a 2M budget is 0.1 — ask for 0.3.
    mixture = dict(MIXTURE, khm=0.3, eng=0.05)
    plan = make_plan(lake, mixture, 2_000_000, 400_000)
    stage1 = _by(plan["stages"]["stage1"]["blend"], "base")
    assert stage1["khm"]["weight"] == pytest.approx(0.1, rel=1e-9)
    assert stage1["khm"]["epochs"] == pytest.approx(4.0)
    assert any("khm" in w and "stage 1" in w for w in plan["warnings"])


def test_budgets_beyond_the_caps_are_refused(lake):
    with pytest.raises(ConfigError, match="needs more than 4 epochs"):
        make_plan(lake, MIXTURE, 4 * sum(BASE.values()) + 1, 1000)
    with pytest.raises(ConfigError, match="high-quality tokens"):
        make_plan(lake, MIXTURE, 1_000_000, 50_000_000)
    with pytest.raises(ConfigError, match="not stage-1 languages"):
        make_plan(lake, {"lao": 1.0}, 1_000_000, 100_000)


def test_plan_file_digest_round_trip(lake, tmp_path):
    plan = make_plan(lake, MIXTURE, 2_000_000, 400_000)
    path = write_plan(plan, tmp_path / "plan.yaml")
    doc = yaml.safe_load(path.read_text())
    assert list(doc)[0] == "plan_digest"
    assert plan_digest(doc) == doc["plan_digest"]  # what the exporter recomputes
    doc["stages"]["stage1"]["blend"][0]["weight"] += 0.01
    assert plan_digest(doc) != plan["plan_digest"]
    assert make_plan(lake, MIXTURE, 2_000_000, 400_000)["plan_digest"] == plan["plan_digest"]  # deterministic


def test_budgets_are_read_as_people_write_them():
    import argparse

    from data_engine.mixture.budget import parse_tokens

    assert [parse_tokens(x) for x in ("400000", "400e9", "400B", "1.5T", "20M", "1_000")] == [
        400_000, 400 * 10**9, 400 * 10**9, 1_500 * 10**9, 20 * 10**6, 1000]
    for bad in ("x", "0", "1.5", "-3", "2.5k7"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_tokens(bad)
