"""Export for a mixture plan: every shard group the plan names (a top-percent selection included),
rows stamped with the plan's digest, one NeMo data config per plan stage weighting each language's
parts by their tokens; bad plans change nothing. Parts are small here (`PARTS`): stage 1's languages
have several each."""

from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from data_engine import lake, tracking
from data_engine.errors import ConfigError
from data_engine.export.config import ExportConfig
from data_engine.export.job import plan_export_job
from data_engine.export.shards import export_shards
from data_engine.tokenizer import QWEN_EOD_ID, identity, load_fast

SCHEMA = "doc_id string, lang string, text string, quality_score double"
WORDS = {"tha": "ภาษาไทยเอกสารที่", "vie": "Văn bản số", "ceb": "Ang balita karon"}
SIZES = {"tha": 12, "vie": 15, "ceb": 9}
TOP = {"ceb": 50, "tha": 25, "vie": 10}
STAGE1 = {"tha": 0.6, "vie": 0.4}
STAGE2 = [("tha", "replay", "stage1/tha", 0.12), ("vie", "replay", "stage1/vie", 0.08),
          ("tha", "hq", "stage2-hq/tha", 0.3), ("vie", "hq", "stage2-hq/vie", 0.2),
          ("ceb", "hq", "stage2-hq/ceb", 0.3)]
PARTS = ExportConfig(part_bytes=256)


def scored_rows() -> list[tuple[str, str, str, float | None]]:
    """Scores with many ties (broken by doc_id, which is not the index order) and one unscored document."""
    rows = []
    for lang, n in SIZES.items():
        for i in range(n):
            doc_id = hashlib.md5(f"{lang}-{i}".encode()).hexdigest()[:12]
            score = None if (lang, i) == ("tha", 0) else ((i * 7) % 5) / 5
            rows.append((doc_id, lang, f"{WORDS[lang]} {i} " * (1 + i % 4), score))
    return rows


def top_docs(rows: list[tuple], lang: str, percent: float) -> list[tuple]:
    """The top percent of a language by score (unscored last, ties by doc_id), in plain Python."""
    docs = sorted((r for r in rows if r[1] == lang), key=lambda r: (r[3] is None, -(r[3] or 0.0), r[0]))
    return docs[:math.ceil(percent * len(docs) / 100)]


def digest_of(doc: dict[str, Any]) -> str:
    rest = {k: v for k, v in doc.items() if k != "plan_digest"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, separators=(",", ":"),
                                     ensure_ascii=False).encode("utf-8")).hexdigest()


def make_plan(lake_dir: str, path: Path, **changes: Any) -> dict[str, Any]:
    tok = identity("qwen2.5")
    doc: dict[str, Any] = {
        "lake": lake_dir, "tokenizer": "qwen2.5", "tokenizer_digest": tok.digest,
        "mixture": {"path": "/nowhere/mixture.yaml", "digest": "0" * 64},
        "shards": {"stage1": {"table": "docs_curated", "version": 0, "langs": ["tha", "vie"], "top_percent": None},
                   "stage2-hq": {"table": "docs_scored", "version": 0, "langs": ["ceb", "tha", "vie"],
                                 "top_percent": dict(TOP)}},
        "stages": {
            "stage1": {"budget_tokens": 1000, "blend": [
                {"lang": lang, "kind": "base", "prefix": f"stage1/{lang}", "weight": w, "tokens_available": 1,
                 "epochs": 1.0} for lang, w in STAGE1.items()]},
            "stage2": {"budget_tokens": 200, "replay_fraction": 0.2, "blend": [
                {"lang": lang, "kind": kind, "prefix": prefix, "weight": w, "tokens_available": 1, "epochs": 1.0}
                for lang, kind, prefix, w in STAGE2]},
        },
        "token_counts": {}, "warnings": [],
    }
    for key, value in changes.items():
        doc[key] = value
    doc["plan_digest"] = digest_of(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return doc


@pytest.fixture(scope="module")
def exported(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("plan")
    lake_dir = str(root / "lake")
    rows = scored_rows()
    curated = [r for lang in SIZES if lang != "ceb" for r in top_docs(rows, lang, 75)]
    lake.write_table(spark.createDataFrame(rows, SCHEMA), lake_dir, "docs_scored", mode="error")
    lake.write_table(spark.createDataFrame(curated, SCHEMA), lake_dir, "docs_curated", mode="error")
    out = root / "shards"
    export_shards(spark, lake_dir, str(out), "proxy")  # a plain export the plan export must leave alone
    plan_path = root / "plan.yaml"
    plan = make_plan(lake_dir, plan_path)
    summary = plan_export_job(spark, lake_dir, str(out), str(plan_path), PARTS)
    return {"root": root, "lake": lake_dir, "out": out, "rows": rows, "curated": curated, "plan": plan,
            "plan_path": plan_path, "summary": summary}


def manifest(lake_dir: str) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(stage, lang) → its rows, one per part, in part order."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in sorted(lake.read_arrow(lake_dir, "shard_manifest").to_pylist(), key=lambda r: r["part"]):
        out.setdefault((r["stage"], r["lang"]), []).append(r)
    return out


def snapshot(ex: dict[str, Any]) -> tuple[int | None, dict[str, str]]:
    files = {str(p.relative_to(ex["out"])): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(ex["out"].rglob("*")) if p.is_file()}
    return lake.table_version(ex["lake"], "shard_manifest"), files


def test_every_group_is_exported_with_its_selection(exported):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    tok = load_fast("qwen2.5")
    rows, curated = exported["rows"], exported["curated"]
    expected = {("stage1", lang): [r for r in curated if r[1] == lang] for lang in ("tha", "vie")}
    expected |= {("stage2-hq", lang): top_docs(rows, lang, p) for lang, p in TOP.items()}
    assert [len(expected["stage2-hq", x]) for x in ("ceb", "tha", "vie")] == [5, 3, 2]  # ⌈p·n/100⌉
    assert rows[0][3] is None and rows[0] not in expected["stage2-hq", "tha"]  # unscored ranks last
    shown, rows_of = exported["summary"]["groups"], manifest(exported["lake"])
    for (group, lang), docs in expected.items():
        parts = rows_of[group, lang]
        assert shown[group][lang]["parts"] == len(parts) and [r["part"] for r in parts] == list(range(len(parts)))
        got = []
        for r in parts:
            assert r["prefix"] == f"{shown[group][lang]['prefix']}_{r['part']}"
            assert Path(r["prefix"]).parent == exported["out"] / group
            ds = IndexedDataset(r["prefix"])
            got += [ds[i].tolist() for i in range(len(ds))]
        want = [tok.encode(text, add_special_tokens=False).ids + [QWEN_EOD_ID] for _, _, text, _ in sorted(docs)]
        assert got == want  # exactly the top documents, in doc_id order, part after part
        assert shown[group][lang]["docs"] == len(want) and shown[group][lang]["tokens"] == sum(map(len, want))
    assert shown["stage1"]["tha"]["parts"] > 1 and shown["stage1"]["vie"]["parts"] > 1
    assert exported["summary"]["selected"]["stage2-hq"]["vie"] == {"docs": 15, "kept": 2}


def test_manifest_rows_carry_the_plan_digest(exported):
    rows = manifest(exported["lake"])
    digest = exported["plan"]["plan_digest"]
    assert digest == exported["summary"]["plan_digest"]
    plan_rows = {k: r for k, r in rows.items() if k[0] != "proxy"}
    assert set(plan_rows) == {("stage1", "tha"), ("stage1", "vie"), ("stage2-hq", "ceb"),
                              ("stage2-hq", "tha"), ("stage2-hq", "vie")}
    assert {r["plan_digest"] for rs in plan_rows.values() for r in rs} == {digest}
    assert {r["source_table"] for r in plan_rows["stage2-hq", "tha"]} == {"docs_scored"}
    assert {r["part_bytes"] for rs in plan_rows.values() for r in rs} == {PARTS.part_bytes}
    assert {r["plan_digest"] for k, rs in rows.items() if k[0] == "proxy" for r in rs} == {None}  # plain: null


def test_data_configs_weight_shards_as_the_plan_says(exported):
    rows = manifest(exported["lake"])
    version = lake.table_version(exported["lake"], "shard_manifest")
    blends = {"stage1": [(lang, f"stage1/{lang}", w) for lang, w in STAGE1.items()],
              "stage2": [(lang, prefix, w) for lang, _, prefix, w in STAGE2]}
    assert set(exported["summary"]["data_configs"]) == set(blends)
    for stage, blend in blends.items():
        path = Path(exported["summary"]["data_configs"][stage])
        assert path == exported["out"] / f"{stage}.data.yaml"
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert doc["stage"] == stage and doc["plan_digest"] == exported["plan"]["plan_digest"]
        assert doc["manifest_version"] == version
        weights, prefixes = doc["paths"][0::2], doc["paths"][1::2]
        assert sum(weights) == pytest.approx(1.0, abs=1e-12)
        want = {}
        for lang, prefix, w in blend:
            group = prefix.split("/")[0]
            shards = rows[group, lang]
            total = sum(r["tokens"] for r in shards)
            want |= {r["prefix"]: w * r["tokens"] / total for r in shards}
            got = sum(x for p, x in zip(prefixes, weights, strict=True) if p in {r["prefix"] for r in shards})
            assert got == pytest.approx(w, abs=1e-12)  # the language's weight is the plan's, over its parts
        assert dict(zip(prefixes, weights, strict=True)) == pytest.approx(want, abs=1e-12)
        assert len(prefixes) == len(want) > len(blend)  # every part, in part order
        assert prefixes == [r["prefix"] for lang, prefix, _ in blend for r in rows[prefix.split("/")[0], lang]]


def test_the_run_is_tracked_with_the_plan_digest_and_data_configs(exported):
    from mlflow.tracking import MlflowClient

    summary = exported["summary"]
    client = MlflowClient(tracking_uri=tracking.tracking_uri(exported["root"]))
    run = client.get_run(summary["mlflow_run_id"])
    assert run.data.tags["plan_digest"] == exported["plan"]["plan_digest"]
    assert run.data.tags["data_config.stage2"] == summary["data_configs"]["stage2"]
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "data_configs")}
    assert logged == {"data_configs/stage1.data.yaml", "data_configs/stage2.data.yaml"}
    assert summary["in"] == summary["kept"] + summary["dropped"]
    assert summary["kept"] == sum(s["docs"] for g in summary["groups"].values() for s in g.values())
    assert summary["tables_read"] == {"docs_curated": 0, "docs_scored": 0}


def _tampered(ex: dict[str, Any], path: Path) -> None:
    doc = copy.deepcopy(ex["plan"])
    doc["stages"]["stage1"]["blend"][0]["weight"] = 0.7
    doc["stages"]["stage1"]["blend"][1]["weight"] = 0.3  # still sums to 1; the digest is now stale
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")


@pytest.mark.parametrize("case, match", [
    ("tampered", "does not match its content"),
    ("missing_version", r"docs_scored v9 does not exist"),
    ("other_tokenizer", "counted tokens with"),
    ("unknown_prefix", "names no shard group"),
    ("weights", "sum to 1.1"),
])
def test_a_bad_plan_is_refused_and_changes_nothing(spark, exported, case, match):
    path = exported["root"] / f"bad-{case}.yaml"
    plan = exported["plan"]
    if case == "tampered":
        _tampered(exported, path)
    elif case == "missing_version":
        shards = copy.deepcopy(plan["shards"])
        shards["stage2-hq"]["version"] = 9
        make_plan(exported["lake"], path, shards=shards)
    elif case == "other_tokenizer":
        make_plan(exported["lake"], path, tokenizer_digest="0" * 64)
    else:
        stages = copy.deepcopy(plan["stages"])
        if case == "unknown_prefix":
            stages["stage1"]["blend"][0]["prefix"] = "stage9/tha"
        else:
            stages["stage1"]["blend"][0]["weight"] = 0.7
        make_plan(exported["lake"], path, stages=stages)
    before = snapshot(exported)
    with pytest.raises(ConfigError, match=match):
        plan_export_job(spark, exported["lake"], str(exported["out"]), str(path))
    assert snapshot(exported) == before


def test_rerunning_gives_the_same_files(spark, exported):
    def shard_files() -> set[str]:
        return {str(p.relative_to(exported["out"])) for p in exported["out"].rglob("*_text_document_*")}

    def paths(stage: str) -> list:
        return yaml.safe_load(Path(exported["summary"]["data_configs"][stage]).read_text(encoding="utf-8"))["paths"]

    files, before = shard_files(), {s: paths(s) for s in ("stage1", "stage2")}
    again = plan_export_job(spark, exported["lake"], str(exported["out"]), str(exported["plan_path"]), PARTS)
    assert shard_files() == files and len(files) > 2 * (len(STAGE1) + len(TOP))
    assert again["data_configs"] == exported["summary"]["data_configs"]
    assert again["groups"] == exported["summary"]["groups"]
    assert {s: paths(s) for s in ("stage1", "stage2")} == before
    assert not list(exported["out"].rglob("_tmp-*")) and not list(exported["out"].glob(".*.tmp"))


def test_selection_errors(spark, exported):
    lake_dir, out = exported["lake"], str(exported["root"] / "other")
    rows = [(d, lang, text) for d, lang, text, _ in exported["rows"]]
    lake.write_table(spark.createDataFrame(rows, "doc_id string, lang string, text string"), lake_dir,
                     "docs_dedup", mode="overwrite")
    before = snapshot(exported)
    with pytest.raises(ConfigError, match="no quality_score column"):
        export_shards(spark, lake_dir, out, "x", ExportConfig(input_table="docs_dedup"), top_percent={"tha": 10})
    scored = ExportConfig(input_table="docs_scored", langs=("tha",))
    with pytest.raises(ConfigError, match=r"in \(0, 100\]"):
        export_shards(spark, lake_dir, out, "x", scored, top_percent={"tha": 0})
    with pytest.raises(ConfigError, match="not among the languages exported"):
        export_shards(spark, lake_dir, out, "x", scored, top_percent={"vie": 10})
    assert snapshot(exported) == before


def test_stage_and_plan_together_exit_2(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("export_job", Path(__file__).parents[3] / "jobs" / "export_shards.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    for argv in (["--stage", "s1", "--plan", "p.yaml"], [], ["--plan", "p.yaml", "--langs", "tha"]):
        with pytest.raises(SystemExit) as exc:
            job.main(["--lake", str(tmp_path), "--out", str(tmp_path), *argv])
        assert exc.value.code == 2
    assert "--stage and --plan" in capsys.readouterr().err
    assert job.main(["--lake", str(tmp_path), "--out", str(tmp_path), "--stage", "s1", "--part-bytes", "8"]) == 2
    assert "export.part_bytes must be at least 16" in capsys.readouterr().err
