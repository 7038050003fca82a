"""Lineage and byte-identical shard reproduction, on one real chain.

Two JSONL folders in six languages (Thai, Lao, Khmer, Burmese and Chinese are written without
spaces) are ingested as two batches (docs_raw v0 and v1), then cleaned into docs_clean@v0. A plan
over docs_clean@v0 (tha, vie, zho) is exported with its MLflow run in parts of `PART_BYTES` (Thai
and Vietnamese in two parts each, Chinese in one), and one tiny NeMo stage-1 run (2 steps, in a
subprocess) trains on it. The checkpoint's lineage must reach the plan, the mixture,
the manifest, docs_clean@v0, docs_raw@v1, the two batches and the files with the SHA-256 computed
here; reproduce-shards rebuilds the shards byte for byte, and says which file differs once one byte
of a shard the run read is changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import xxhash
import yaml

from data_engine import lake as lake_io
from data_engine.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
FILES = {"first": {"tha.jsonl": "th", "vie.jsonl": "vi", "lao.jsonl": "lo"},
         "second": {"zho.jsonl": "zh", "khm.jsonl": "km", "mya.jsonl": "my"}}
PLAN_LANGS = ["tha", "vie", "zho"]
DOCS_PER_FILE = 12  # two UDHR articles each (the long preamble left out), so parts of ~5 documents fit
PART_BYTES = 5500  # ≈ 1.4k tokens: two parts of Thai and of Vietnamese, one of Chinese, each ≥ 4 documents
MULTI_PART = {"tha": 2, "vie": 2, "zho": 1}


def _write_inputs(root: Path) -> dict[str, list[Path]]:
    from data_engine.sample.corpus import load_udhr

    out: dict[str, list[Path]] = {}
    for folder, files in FILES.items():
        for name, tag in files.items():
            lang = name.split(".")[0]
            sections = load_udhr(lang)
            rows = [{"text": "\n\n".join(p for s in sections[1 + i * 2:3 + i * 2] for p in s), "lang": tag,
                     "url": f"https://example.{lang}/udhr/{i}"} for i in range(DOCS_PER_FILE)]
            path = root / folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
            out.setdefault(folder, []).append(path)
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _plan(lake: str, root: Path) -> Path:
    from data_engine.mixture.plan import plan_digest, write_plan
    from data_engine.tokenizer import identity

    mixture = root / "mixture.yaml"
    mixture.write_text(yaml.safe_dump({"weights": {"tha": 0.4, "vie": 0.3, "zho": 0.3}}), encoding="utf-8")
    doc: dict[str, Any] = {
        "lake": lake, "tokenizer": "qwen2.5", "tokenizer_digest": identity("qwen2.5").digest,
        "mixture": {"path": str(mixture), "digest": _sha256(mixture)},
        "shards": {"stage1": {"table": "docs_clean", "version": 0, "langs": PLAN_LANGS, "top_percent": None}},
        "stages": {"stage1": {"budget_tokens": 256, "blend": [
            {"lang": "tha", "kind": "base", "prefix": "stage1/tha", "weight": 0.4},
            {"lang": "vie", "kind": "base", "prefix": "stage1/vie", "weight": 0.3},
            {"lang": "zho", "kind": "base", "prefix": "stage1/zho", "weight": 0.3}]}},
    }
    doc["plan_digest"] = plan_digest(doc)
    return write_plan(doc, root / "plan.yaml")


def _train(tmp: Path, work: Path, plan: Path) -> dict[str, Any]:
    train = {"name": "lin", "work_dir": str(work), "val_check_interval": 2, "limit_val_batches": 1,
             "model": {"seq_length": 32},
             "data": {"seq_length": 32, "micro_batch_size": 1, "global_batch_size": 2, "split": "80,20,0"},
             "schedule": {"max_steps": 2, "warmup_steps": 1}}
    config = tmp / "train.yaml"
    config.write_text(yaml.safe_dump({"train": train}), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "SAILYARD_PARENT_RUN_ID")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "trainer.pretrain", "--stage", "1", "--plan", str(plan),
                           "--config", str(config)], cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def chain(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from data_engine.clean.job import clean_job
    from data_engine.export.config import ExportConfig
    from data_engine.export.job import plan_export_job
    from data_engine.ingest.job import ingest_job

    tmp = tmp_path_factory.mktemp("lineage")
    work = tmp / "work"
    lake = str(work / "lake")
    inputs = _write_inputs(tmp / "in")
    first = ingest_job(spark, lake, [str(tmp / "in" / "first")])
    second = ingest_job(spark, lake, [str(tmp / "in" / "second")])
    clean = clean_job(spark, lake)
    plan = _plan(lake, tmp)
    export = plan_export_job(spark, lake, str(tmp / "shards"), str(plan), ExportConfig(part_bytes=PART_BYTES))
    trained = _train(tmp, work, plan)
    return {"tmp": tmp, "work": work, "lake": lake, "inputs": inputs, "plan": plan, "export": export,
            "batches": [first["batch_id"], second["batch_id"]], "clean": clean,
            "trained": trained, "checkpoint": Path(trained["checkpoint"])}


def test_ingest_and_clean_are_traced_to_their_files(chain: dict[str, Any], spark: Any) -> None:
    from data_engine.provenance import RunReader, store_uris, table_provenance

    assert chain["clean"]["tables"]["docs_clean"] == 0 and chain["clean"]["tables_read"] == {"docs_raw": 1}
    reader = RunReader(store_uris([chain["work"]]))
    node = table_provenance(chain["lake"], "docs_clean", 0, runs=reader.summary)
    assert node["commit"]["stage"] == "clean" and node["commit"]["run_id"] == chain["clean"]["mlflow_run_id"]
    assert node["run"]["status"] == "FINISHED" and node["missing"] == []
    (raw,) = node["inputs"]
    assert (raw["table"], raw["version"]) == ("docs_raw", 1)
    # The batches docs_raw@v1 holds, by its rows (Spark), and the files of each, hashed here.
    held = {r.batch_id for r in lake_io.read_table(spark, chain["lake"], "docs_raw", version=1).df
            .select("batch_id").distinct().collect()}
    assert held == set(chain["batches"]) == {b["batch_id"] for b in raw["batches"]}
    for batch, folder in zip(sorted(raw["batches"], key=lambda b: chain["batches"].index(b["batch_id"])),
                             ("first", "second"), strict=True):
        want = {str(p.resolve()): _sha256(p) for p in chain["inputs"][folder]}
        assert {f["path"]: f["sha256"] for f in batch["files"]} == want
        assert all(f["records"] == DOCS_PER_FILE and f["complete"] for f in batch["files"])
        assert batch["run_id"] and batch["source"] == folder
    # The second batch came after version 0.
    earlier = table_provenance(chain["lake"], "docs_raw", 0, runs=reader.summary)
    assert [b["batch_id"] for b in earlier["batches"]] == chain["batches"][:1]


def test_the_checkpoint_leads_to_plan_manifest_tables_and_files(chain: dict[str, Any]) -> None:
    from trainer.lineage import lineage

    out = lineage(str(chain["checkpoint"]), work_dir=chain["work"])
    (stage,) = out["stages"]
    assert stage["stage"] == "stage1" and stage["run_id"] == chain["trained"]["mlflow_run_id"]
    assert [r["this"] for r in stage["runs"]] == [True] and stage["runs"][0]["status"] == "FINISHED"
    plan = yaml.safe_load(chain["plan"].read_text())
    assert (stage["plan"]["path"], stage["plan"]["digest"], stage["plan"]["file"]) == \
        (str(chain["plan"].resolve()), plan["plan_digest"], "matches")
    assert stage["plan"]["mixture"]["digest"] == _sha256(chain["tmp"] / "mixture.yaml")
    assert stage["plan"]["mixture"]["file"] == "matches"
    manifest = stage["manifest"]
    assert manifest["version"] == chain["export"]["tables"]["shard_manifest"] and manifest["digest_matches"]
    data_config = yaml.safe_load(Path(chain["export"]["data_configs"]["stage1"]).read_text())
    assert [s["prefix"] for s in manifest["shards"]] == data_config["paths"][1::2]  # by language, then part
    assert {lang: sum(s["lang"] == lang for s in manifest["shards"]) for lang in PLAN_LANGS} == MULTI_PART
    for s in manifest["shards"]:
        assert s["prefix"].endswith(f"_text_document_{s['part']}") and s["part_bytes"] == PART_BYTES
        assert s["bytes"] == Path(s["prefix"] + ".bin").stat().st_size
        assert s["checksum"] == xxhash.xxh3_128_hexdigest(Path(s["prefix"] + ".bin").read_bytes())
        assert s["idx_checksum"] == xxhash.xxh3_128_hexdigest(Path(s["prefix"] + ".idx").read_bytes())
        assert (s["source_table"], s["source_version"], s["export_run_id"]) == \
            ("docs_clean", 0, chain["export"]["mlflow_run_id"])
    assert sorted({s["lang"] for s in manifest["shards"]}) == PLAN_LANGS
    assert [(t["table"], t["version"], t["stage"]) for t in out["training_tables"]] == [("docs_clean", 0, "stage1")]
    assert out["tables"] == ["docs_clean@v0", "docs_raw@v1"]
    want = {str(p.resolve()): _sha256(p) for folder in ("first", "second") for p in chain["inputs"][folder]}
    assert {f["path"]: f["sha256"] for f in out["source_files"]} == want
    assert out["base"] is None and out["missing"] == []
    # The same chain from the run id, the checkpoint folder and the train-plan run.
    for target in (chain["trained"]["mlflow_run_id"], str(chain["checkpoint"].parent),
                   chain["trained"]["parent_run_id"]):
        again = lineage(target, work_dir=chain["work"])
        assert again["stages"][0]["run_id"] == stage["run_id"] and again["tables"] == out["tables"]


def test_the_command_prints_a_tree_and_json(chain: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    from jobs.lineage import main

    assert main([str(chain["checkpoint"]), "--work-dir", str(chain["work"])]) == 0
    text = capsys.readouterr().out
    digest = _sha256(chain["inputs"]["first"][0])
    lines = text.splitlines()
    raw = next(line for line in lines if line.lstrip().startswith("docs_raw@v1"))
    clean = next(line for line in lines if line.lstrip().startswith("docs_clean@v0"))
    assert len(raw) - len(raw.lstrip()) > len(clean) - len(clean.lstrip())  # docs_raw under docs_clean
    assert "← clean run" in clean and digest in text and "docs_raw@v0" not in text
    assert main([chain["trained"]["mlflow_run_id"], "--json", "--work-dir", str(chain["work"])]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["status"] == "ok" and summary["tables"] == ["docs_clean@v0", "docs_raw@v1"]
    assert summary["training_tables"][0]["path"] == str(Path(chain["lake"]).resolve() / "docs_clean")
    # A data job's run: the tables it wrote.
    assert main([chain["clean"]["mlflow_run_id"], "--work-dir", str(chain["work"])]) == 0
    text = capsys.readouterr().out
    assert "clean run" in text and "docs_raw@v1" in text and digest in text


def test_a_target_that_is_neither_checkpoint_nor_run_exits_2(chain: dict[str, Any], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from jobs.lineage import main
    from trainer.lineage import lineage

    assert main(["0123456789abcdef", "--work-dir", str(chain["work"])]) == 2
    assert "is neither a checkpoint directory nor an MLflow run id" in capsys.readouterr().err
    assert main([str(tmp_path), "--json", "--work-dir", str(chain["work"])]) == 2
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["status"] == "error" and "is neither a NeMo checkpoint" in summary["error"]
    with pytest.raises(ConfigError, match="stores read: none"):
        lineage("0123456789abcdef", work_dir=tmp_path / "nowhere")


def test_missing_links_are_named_not_fatal(chain: dict[str, Any], spark: Any, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from data_engine import tracking
    from data_engine.provenance import RunReader, store_uris, table_provenance

    lake = str(tmp_path / "lake")
    lake_io.write_table(spark.createDataFrame([("a", "tha", "สวัสดี")], "doc_id string, lang string, text string"),
                        lake, "docs_curated")
    node = table_provenance(lake, "docs_curated", 0)
    assert node["inputs"] == [] and "written outside a sailyard stage" in node["missing"][0]
    assert "not in lake" in table_provenance(lake, "docs_curated", 5)["missing"][0]
    client = MlflowClient(tracking.tracking_uri(chain["work"]))
    clean_run = chain["clean"]["mlflow_run_id"]
    client.delete_run(clean_run)
    try:
        reader = RunReader(store_uris([chain["work"]]))
        node = table_provenance(chain["lake"], "docs_clean", 0, runs=reader.summary)
        assert node["inputs"][0]["batches"]  # the commit still says what clean read
        assert node["missing"] == [f"docs_clean@v0: MLflow run {clean_run} of clean is deleted (its record is "
                                   "still read)"]
        gone = table_provenance(chain["lake"], "docs_clean", 0, runs=lambda _: None)
        assert "is not in the store (deleted?)" in gone["missing"][0] and gone["inputs"][0]["table"] == "docs_raw"
    finally:
        client.restore_run(clean_run)


def test_a_stage2_checkpoint_shows_stage1_and_the_expanded_base(chain: dict[str, Any], tmp_path: Path) -> None:
    """Stage 2's run as `trainer.pretrain` tags it (no second NeMo run): restored from stage 1's final
    checkpoint, which was restored from an imported LlamaPro expansion."""
    from mlflow.tracking import MlflowClient

    from data_engine import tracking
    from trainer import checkpoints
    from trainer.lineage import lineage, render

    client = MlflowClient(tracking.tracking_uri(chain["work"]))
    s1 = client.get_run(chain["trained"]["mlflow_run_id"]).data.tags
    imported = tmp_path / "nemo"
    (imported / "weights").mkdir(parents=True)
    (imported / checkpoints.IMPORT_RECORD).write_text(json.dumps({"source": "/models/base-expanded", "expansion": {
        "source": "/models/base", "old_layers": 2, "new_layers": 4, "new_layer_indices": [1, 3]}}))
    work = chain["work"]  # the chain's store; the checkpoints are this test's
    folders, runs = [], []
    for stage, restore in (("stage1", imported), ("stage2", None)):
        folder = tmp_path / "checkpoints" / f"lin-{stage}"
        ckpt = folder / "lin--step=1-last"
        (ckpt / "weights").mkdir(parents=True)
        with tracking.start_run("train", work_dir=work, kind="train") as run:
            run.set_tags({"train.name": f"lin-{stage}", "train.stage": stage, "plan_digest": s1["plan_digest"],
                          "shard_manifest_digest": s1["shard_manifest_digest"], "data_config": s1["data_config"],
                          "table.read.shard_manifest": s1["table.read.shard_manifest"], "checkpoints": folder,
                          "checkpoint": ckpt, "restore_from": restore or folders[0] / "lin--step=1-last"})
        checkpoints.mark_finished(folder, steps=1, checkpoint=ckpt, mlflow_run_id=run.run_id, work_dir=work)
        folders.append(folder)
        runs.append(run.run_id)
    out = lineage(str(folders[1] / "lin--step=1-last"), work_dir=tmp_path / "elsewhere")  # found by its record
    assert [(s["stage"], s["run_id"]) for s in out["stages"]] == [("stage2", runs[1]), ("stage1", runs[0])]
    assert out["base"]["base_model"] == "/models/base-expanded" and out["base"]["checkpoint"] == str(imported)
    assert out["base"]["expansion"]["new_layer_indices"] == [1, 3]
    assert [t["stage"] for t in out["training_tables"]] == ["stage2", "stage1"]
    assert "plan" in out["missing"][0]  # these runs have no train-plan parent: the plan path is not known
    text = render(out)
    assert "LlamaPro 2→4 layers (new: 1, 3)" in text and text.index("stage2") < text.index("  stage1")


def test_reproduce_shards_is_byte_identical_and_names_a_changed_byte(chain: dict[str, Any], tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from jobs.reproduce_shards import main

    target = [str(chain["checkpoint"]), "--work-dir", str(chain["work"])]
    assert main([*target, "--out", str(tmp_path / "again")]) == 0
    *table, last = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(last)
    files = 2 * sum(MULTI_PART.values())  # a .bin and an .idx per part
    assert summary["status"] == "ok" and summary["identical"] and summary["checked"] == files
    assert table[-1] == f"all {files} files byte-identical"
    for f in summary["files"]:  # the same content name, the same bytes
        assert Path(f["rebuilt"]).name == Path(f["file"]).name
        assert Path(f["rebuilt"]).read_bytes() == Path(f["file"]).read_bytes()
    versions = lake_io.table_version(chain["lake"], "shard_manifest")
    assert versions == chain["export"]["tables"]["shard_manifest"]  # nothing committed
    shard = Path(summary["files"][0]["file"])
    original = shard.read_bytes()
    shard.write_bytes(original[:5] + bytes([original[5] ^ 1]) + original[6:])
    try:
        assert main([*target, "--out", str(tmp_path / "again")]) == 1
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert summary["status"] == "error" and summary["differ"] == [str(shard)]
        (bad,) = [f for f in summary["files"] if not f["identical"]]
        assert bad["original"] == "differs at byte 5" and bad["rebuilt_checksum"] == bad["recorded"]
    finally:
        shard.write_bytes(original)
    assert main([*target, "--out", str(Path(chain["export"]["out"]))]) == 2  # never over the run's shards
    assert "holds the shards the run trained on" in capsys.readouterr().out


def test_a_top_percent_selection_is_rebuilt_identically(spark: Any, tmp_path: Path) -> None:
    """A stage-2-like selection (top p% by quality score) of Thai and Khmer in small parts, rebuilt
    from its pinned version part by part; and a one-file shard of an export before parts."""
    import dataclasses

    from data_engine.export.config import ExportConfig
    from data_engine.export.manifest import read_manifest
    from data_engine.export.shards import export_shards
    from data_engine.provenance import ShardSpec, compare_shards, rebuild_shards

    words = {"tha": ["ภาษาไทย", "สวัสดี", "ฝนตกหนัก"], "khm": ["ភាសាខ្មែរ", "សួស្តី", "ភ្លៀងធ្លាក់"]}
    rows = [(f"{lang}{i:02d}", lang, "".join(w[(i + k) % 3] for k in range(2 + i % 4)), (i * 7 % 20) / 20)
            for lang, w in words.items() for i in range(20)]
    lake = str(tmp_path / "lake")
    lake_io.write_table(spark.createDataFrame(rows, "doc_id string, lang string, text string, quality_score double"),
                        lake, "docs_scored")
    top = {"tha": 30, "khm": 50}
    export_shards(spark, lake, str(tmp_path / "shards"), "hq", ExportConfig(input_table="docs_scored", part_bytes=64),
                  input_version=0, top_percent=top)
    _, manifest = read_manifest(lake)
    assert all(sum(r["lang"] == lang for r in manifest) > 1 for lang in top)  # several parts each
    specs = [ShardSpec(group="hq", lang=r["lang"], prefix=r["prefix"], table="docs_scored", version=0,
                       checksum=r["checksum"], idx_checksum=r["idx_checksum"], tokenizer=r["tokenizer"],
                       tokenizer_digest=r["tokenizer_digest"], eod_id=r["eod_id"], top_percent=top[r["lang"]],
                       part=r["part"], part_bytes=r["part_bytes"])
             for r in manifest]
    # Two more: a part the rebuild does not give, and a row of an export before parts (no part, no
    # part_bytes: the language's one file, as it was written).
    beyond = dataclasses.replace(specs[0], prefix=specs[0].prefix + "x", part=99)
    export_shards(spark, lake, str(tmp_path / "old"), "old", ExportConfig(input_table="docs_scored", part_bytes=None,
                                                                        langs=("tha",)), input_version=0)
    (row,) = [r for r in read_manifest(lake)[1] if r["stage"] == "old"]
    legacy = ShardSpec(group="old", lang="tha", prefix=row["prefix"], table="docs_scored", version=0,
                       checksum=row["checksum"], idx_checksum=row["idx_checksum"], tokenizer=row["tokenizer"],
                       tokenizer_digest=row["tokenizer_digest"], eod_id=row["eod_id"])
    rebuilt = rebuild_shards(spark, lake, [*specs, beyond, legacy], tmp_path / "again")
    docs = {lang: sum(rebuilt[s.prefix]["docs"] for s in specs if s.lang == lang) for lang in top}
    assert docs == {"tha": 6, "khm": 10}  # ⌈30% of 20⌉, ⌈50% of 20⌉
    assert all(Path(rebuilt[s.prefix]["prefix"]).name == Path(s.prefix).name for s in specs)
    files = compare_shards(specs, rebuilt)
    assert len(files) == 2 * len(specs) and all(f["identical"] and f["original"] == "same bytes" for f in files)
    assert "the run read part 99" in rebuilt[beyond.prefix]["error"]
    assert all(f["identical"] for f in compare_shards([legacy], rebuilt))
    # A manifest checksum that disagrees with the rebuilt bytes is named.
    wrong = [dataclasses.replace(specs[0], checksum="0" * 32)]
    (bad, idx) = compare_shards(wrong, rebuilt)
    assert not bad["identical"] and "≠ the manifest's 000000000000…" in bad["reason"] and idx["identical"]
