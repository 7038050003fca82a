"""The trainer reads a plan's exported NeMo data config (`data.paths_file`) as it is.

The end-to-end test exports a two-group plan with Spark in small parts (several per language),
then, in a fresh process as a launcher would start one, runs the trainer's `setup` with
`data.paths_file` and builds NeMo's `PreTrainingDataModule` from the recipe exactly as
`trainer.pretrain.run` does, and Megatron's blended datasets from it on the CPU
(`build_pretraining_datamodule`, no Lightning trainer): every part is a dataset of the blend,
drawn in its share, and each language's parts together keep the plan's weight.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from data_engine import lake as lake_io
from data_engine.errors import ConfigError
from data_engine.export.manifest import manifest_digest
from data_engine.tokenizer import QWEN_EOD_ID, load_fast
from trainer.config import TrainConfig
from trainer.data import blend_from_data_config

REPO = Path(__file__).resolve().parents[2]
ShardFactory = Callable[..., dict[str, Any]]
ManifestWriter = Callable[..., None]


def write_config(path: Path, paths: list[Any], **extra: Any) -> Path:
    path.write_text(yaml.safe_dump({"stage": "stage1", "plan_digest": "0" * 64, "manifest_version": 0,
                                    "paths": paths, **extra}), encoding="utf-8")
    return path


def test_paths_are_taken_as_they_are(tmp_path: Path, make_shard: ShardFactory,
                                     write_manifest: ManifestWriter) -> None:
    lake = tmp_path / "lake"
    a, b = make_shard("stage1", "ind", seed=1), make_shard("stage1", "ind", seed=2, name="ind2")
    c, d = make_shard("hq", "tha", seed=3), make_shard("stage1", "vie", seed=4)
    write_manifest(lake, [a, b, c, d])
    paths = [0.1, a["prefix"], 0.2, b["prefix"], 0.3, c["prefix"]]
    blend = blend_from_data_config(lake, write_config(tmp_path / "s.data.yaml", paths), "qwen2.5", "60,40,0")
    assert blend.paths == paths  # not re-weighted, not re-ordered; vie is not in the file
    assert blend.lang_weights == pytest.approx({"ind": 0.5, "tha": 0.5})
    # the rows used, in the exporter's canonical order (stage, language, prefix)
    canonical = sorted([a, b, c], key=lambda r: (r["stage"], r["lang"], r["prefix"]))
    assert blend.digest == manifest_digest(canonical) and blend.manifest_version == 0
    assert blend.manifest_path == (lake / "shard_manifest").resolve()


def test_a_prefix_not_in_the_manifest_is_refused(tmp_path: Path, make_shard: ShardFactory,
                                                 write_manifest: ManifestWriter) -> None:
    lake = tmp_path / "lake"
    a, gone = make_shard("stage1", "ind", seed=1), make_shard("stage1", "vie", seed=2)
    write_manifest(lake, [a])  # the vie shard exists on disk, but the current manifest no longer names it
    path = write_config(tmp_path / "s.data.yaml", [0.5, a["prefix"], 0.5, gone["prefix"]])
    with pytest.raises(ConfigError, match=rf"names shards that shard_manifest v0 .* does not: {gone['prefix']}; "
                                          r"re-export the plan"):
        blend_from_data_config(lake, path)


def test_the_file_checks_and_format_checks_apply(tmp_path: Path, make_shard: ShardFactory,
                                                 write_manifest: ManifestWriter) -> None:
    lake = tmp_path / "lake"
    a = make_shard("stage1", "ind", seed=1)
    write_manifest(lake, [a])
    good = write_config(tmp_path / "good.data.yaml", [1.0, a["prefix"]])
    data = bytearray(Path(a["prefix"] + ".bin").read_bytes())
    data[40] ^= 0xFF
    Path(a["prefix"] + ".bin").write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="does not match the manifest's checksum"):
        blend_from_data_config(lake, good)
    for bad, match in [([a["prefix"]], "non-empty list"), ([0, a["prefix"]], "positive number"),
                       ([0.5, a["prefix"], 0.5, a["prefix"]], "listed twice")]:
        with pytest.raises(ConfigError, match=match):
            blend_from_data_config(lake, write_config(tmp_path / "bad.data.yaml", bad))
    with pytest.raises(ConfigError, match="cannot read data config"):
        blend_from_data_config(lake, tmp_path / "none.data.yaml")


def test_paths_file_in_the_train_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_config(tmp_path / "stage1.data.yaml", [1.0, "/x"])
    cfg = TrainConfig.from_dict({"data": {"paths_file": "stage1.data.yaml"}})
    assert cfg.data.paths_file == tmp_path / "stage1.data.yaml"
    with pytest.raises(ConfigError, match="data.weights: must be null with data.paths_file"):
        TrainConfig.from_dict({"data": {"paths_file": "stage1.data.yaml", "weights": {"tha": 1}}})
    with pytest.raises(ConfigError, match="data.paths_file: no data config at"):
        TrainConfig.from_dict({"data": {"paths_file": "missing.data.yaml"}})


# --- end to end: export a plan, load its data config in NeMo ----------------------------------

BUILD = r"""
import json, os, sys
from pathlib import Path

import numpy as np

from trainer.config import TrainConfig
from trainer.pretrain import build_recipe, setup

cfg = TrainConfig.from_dict(json.loads(sys.argv[1]))
prepared = setup(cfg)  # data.paths_file → trainer.data.blend_from_data_config
recipe = build_recipe(prepared.cfg, prepared.blend, gpu=prepared.gpu)

from nemo.collections.llm.gpt.data.pre_training import PreTrainingDataModule, build_pretraining_datamodule

args = dict(recipe.data)
surplus = args.pop("mid_level_dataset_surplus")
data = PreTrainingDataModule(tokenizer=prepared.tokenizer, **args)  # as trainer.pretrain.run builds it
data.build_kwargs["mid_level_dataset_surplus"] = surplus
build_pretraining_datamodule(data, trainer_max_steps=cfg.schedule.max_steps,
                             trainer_val_check_interval=cfg.val_check_interval,
                             trainer_limit_val_batches=cfg.limit_val_batches, trainer_limit_test_batches=0)
out = {"blend": prepared.blend.paths, "lang_weights": prepared.blend.lang_weights, "splits": {}}
for name, ds in (("train", data._train_ds), ("validation", data._validation_ds)):
    samples = [ds[i] for i in range(len(ds))]
    out["splits"][name] = {
        "prefixes": [d.dataset_path for d in ds.datasets], "weights": [float(w) for w in ds.weights],
        "size": len(ds), "counts": np.bincount(ds.dataset_index, minlength=len(ds.datasets)).tolist(),
        "samples": [[int(s["dataset_id"]), s["tokens"].tolist()] for s in samples],
        "eod_labels": [float(m) for s in samples for lab, m in zip(s["labels"].tolist(), s["loss_mask"].tolist())
                       if lab == prepared.tokenizer.eod]}
Path(sys.argv[2]).write_text(json.dumps(out))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PART_BYTES = 800  # stage 1: about three parts a language; the top halves: two


@pytest.fixture(scope="module")
def parted_export(spark: Any, plan_export: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """conftest's plan (its documents, groups and blends) over a lake of its own, exported in parts."""
    from data_engine.export.config import ExportConfig
    from data_engine.export.plan_export import export_plan
    from data_engine.mixture.plan import plan_digest

    root = tmp_path_factory.mktemp("parted")
    lake = str(root / "lake")
    for table in ("docs_curated", "docs_scored"):
        lake_io.write_table(spark.createDataFrame(plan_export["rows"], "doc_id string, lang string, text string, "
                                                  "quality_score double"), lake, table, mode="error")
    doc = yaml.safe_load(plan_export["plan"].read_text(encoding="utf-8"))
    doc["lake"] = lake
    doc["plan_digest"] = plan_digest(doc)
    plan = root / "plan.yaml"
    plan.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    result = export_plan(spark, lake, str(root / "shards"), plan, ExportConfig(part_bytes=PART_BYTES))
    return {**plan_export, "root": root, "lake": lake, "plan": plan,
            "data_config": Path(result.data_configs["stage2"]), "groups": result.groups}


def test_the_exported_data_config_loads_in_nemo_pretraining_data_module(parted_export: dict[str, Any]) -> None:
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    plan_export = parted_export
    root, path = plan_export["root"], plan_export["data_config"]
    cfg = {"name": "dc", "work_dir": str(root / "work"), "val_check_interval": 3, "limit_val_batches": 1,
           "model": {"seq_length": 32},
           "data": {"lake": plan_export["lake"], "paths_file": str(path), "seq_length": 32,
                    "micro_batch_size": 1, "global_batch_size": 4, "split": "80,20,0"},
           "schedule": {"max_steps": 3}}
    script = root / "build_data.py"
    script.write_text(BUILD, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "SAILYARD_PARENT_RUN_ID")}
    env |= {"PYTHONPATH": os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    out = root / "built.json"
    proc = subprocess.run([sys.executable, str(script), json.dumps(cfg), str(out)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    built = json.loads(out.read_text())

    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    prefixes, weights = doc["paths"][1::2], doc["paths"][0::2]
    assert built["blend"] == doc["paths"]  # the trainer hands NeMo the file's paths as they are
    assert built["lang_weights"] == pytest.approx({"tha": 0.6, "vie": 0.4})
    tok = load_fast("qwen2.5")
    rows = {r["prefix"]: r for r in lake_io.read_arrow(plan_export["lake"], "shard_manifest").to_pylist()}
    groups = plan_export["groups"]
    assert all(groups[g][lang]["parts"] >= 2 for g in groups for lang in groups[g])  # several parts each
    assert len(prefixes) == sum(groups[g][lang]["parts"] for g in groups for lang in groups[g])
    for lang, _, entry, w in plan_export["stage2_blend"]:  # each language keeps its plan weight over its parts
        group = entry.split("/")[0]
        mine = [k for k, p in enumerate(prefixes) if (rows[p]["stage"], rows[p]["lang"]) == (group, lang)]
        assert len(mine) == groups[group][lang]["parts"] and sum(weights[k] for k in mine) == pytest.approx(w)
        tokens = sum(rows[prefixes[k]]["tokens"] for k in mine)
        for k in mine:
            assert weights[k] == pytest.approx(w * rows[prefixes[k]]["tokens"] / tokens)
    for split in ("train", "validation"):
        got = built["splits"][split]
        assert got["prefixes"] == prefixes
        assert got["weights"] == pytest.approx(weights)
        for k, w in enumerate(weights):  # Megatron's blend draws each shard in its weight's share
            assert abs(got["counts"][k] - w * got["size"]) <= 1.5
        for k, prefix in enumerate(prefixes):  # every sample of shard k is made of that shard's tokens
            ds = IndexedDataset(prefix)
            vocab = {t for i in range(len(ds)) for t in ds[i].tolist()}  # EOD included: it is not the pad
            assert ds.sequence_lengths.sum() == rows[prefix]["tokens"]
            for dataset_id, tokens in got["samples"]:
                if dataset_id == k:
                    assert set(tokens) <= vocab
        # Document ends are learned: EOD is a label with loss (the pad is not EOD), and stays EOD in the input.
        assert got["eod_labels"] and all(m == 1.0 for m in got["eod_labels"])
        assert any(QWEN_EOD_ID in tokens for _, tokens in got["samples"])
    # the hq shards hold the top half by score; their tokens are the tokenizer's ids of those texts
    hq_tha = sorted((r for r in rows.values() if (r["stage"], r["lang"]) == ("stage2-hq", "tha")),
                    key=lambda r: r["part"])
    top = sorted((r for r in plan_export["rows"] if r[1] == "tha"), key=lambda r: (-r[3], r[0]))[:15]
    got = []
    for r in hq_tha:  # part after part
        ds = IndexedDataset(r["prefix"])
        got += [ds[i].tolist() for i in range(len(ds))]
    assert got == [tok.encode(text, add_special_tokens=False).ids + [QWEN_EOD_ID] for _, _, text, _ in sorted(top)]
