"""Sweeps of real proxies in spawned workers, recorded in a real MLflow store; a real SIGKILL and resume."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from data_engine import lake
from data_engine.errors import ConfigError
from data_engine.export.shards import export_shards
from data_engine.sample.corpus import load_udhr
from trainer.proxy import load_shards, proxy_config, train_proxy
from trainer.sweep import SweepConfig, run_sweep, sweep_results

REPO = Path(__file__).resolve().parents[2]
STAGE_LANGS = ("eng", "ind", "tha", "vie")
LANGS = ["ind", "tha", "vie"]  # the mixture's columns; eng is in the stage with weight 0
MIXTURES = np.array([[0.6, 0.2, 0.2], [0.1, 0.9, 0.0], [0.3, 0.3, 0.4]])
PROXY = {"steps": 8, "val_batches": 1, "split": "80,20,0"}
META = {"sampler": {"seed": 42}, "note": "test"}


@pytest.fixture(scope="module")
def udhr_lake(spark, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    lake_dir = root / "lake"
    rows = [(f"{lang}-{i:03d}", lang, para) for lang in STAGE_LANGS
            for i, para in enumerate(p for section in load_udhr(lang) for p in section)]
    lake.write_table(spark.createDataFrame(rows, "doc_id string, lang string, text string"), str(lake_dir),
                     "docs_curated", mode="error")
    export_shards(spark, str(lake_dir), str(root / "shards"), "proxy")
    return lake_dir


def client_for(lake_dir: Path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{lake_dir.parent / 'mlflow' / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri)


def children(lake_dir: Path, parent_id: str) -> list[Any]:
    client = client_for(lake_dir)
    exp = client.get_run(parent_id).info.experiment_id
    return list(client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent_id}'", max_results=1000))


def finished_by_index(lake_dir: Path, parent_id: str) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for r in children(lake_dir, parent_id):
        if r.info.status == "FINISHED":
            out.setdefault(int(r.data.tags["sailyard.proxy_index"]), []).append(r.info.run_id)
    return out


def expected_sweep_id(langs: list[str], mixtures: np.ndarray, meta: dict[str, Any], cfg: SweepConfig) -> str:
    config = {"preset": cfg.preset, "proxy": dataclasses.asdict(proxy_config(cfg.preset, cfg.proxy)),
              "runs": cfg.runs, "stage": cfg.stage}
    doc = {"langs": langs, "mixtures": mixtures.tolist(), "meta": meta, "config": config}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@pytest.fixture(scope="module")
def sweep(udhr_lake: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("out") / "sweep"
    cfg = SweepConfig(preset="tiny", proxy=PROXY, workers=2, runs=3, stage="proxy")
    lines: list[str] = []
    result = run_sweep(udhr_lake, out, LANGS, MIXTURES, cfg, meta=META, log=lines.append)
    return {"out": out, "cfg": cfg, "result": result, "lines": lines}


def test_sweep_writes_one_finished_child_run_per_proxy(udhr_lake: Path, sweep: dict[str, Any]):
    result, cfg = sweep["result"], sweep["cfg"]
    assert (result.proxies, result.finished, result.ran, result.skipped) == (3, 3, 3, 0)
    assert result.proxies_per_minute > 0 and result.seconds_per_proxy > 0
    doc = json.loads((sweep["out"] / "sweep.json").read_text())
    assert doc["sweep_id"] == result.sweep_id == expected_sweep_id(LANGS, MIXTURES, META, cfg)
    assert doc["mixtures"] == MIXTURES.tolist() and doc["langs"] == LANGS and doc["meta"] == META

    client = client_for(udhr_lake)
    parent = client.get_run(result.mlflow_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["sailyard.kind"] == "sweep"
    assert parent.data.tags["sailyard.sweep_id"] == result.sweep_id
    assert parent.data.metrics["proxies_finished"] == 3 and parent.data.metrics["proxies_per_minute"] > 0
    runs = children(udhr_lake, result.mlflow_run_id)
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)
    by_index = {int(r.data.tags["sailyard.proxy_index"]): r for r in runs}
    assert sorted(by_index) == [0, 1, 2]
    for i, r in by_index.items():
        assert r.data.tags["sailyard.sweep_id"] == result.sweep_id
        assert r.data.tags["sailyard.kind"] == "proxy"
        assert {lang: float(r.data.params[f"w.{lang}"]) for lang in LANGS} == dict(zip(LANGS, MIXTURES[i], strict=True))
        assert r.data.params["proxy.steps"] == "8" and r.data.params["proxy.hidden_size"] == "64"
        assert {k for k in r.data.metrics if k.startswith("val_loss.")} == {f"val_loss.{x}" for x in STAGE_LANGS}
        assert r.data.metrics["seconds"] > 0 and np.isfinite(r.data.metrics["train_loss"])
    assert sorted(int(m.group(1)) for line in sweep["lines"] if (m := re.search(r"proxy (\d+) finished", line))) \
        == [0, 1, 2]

    # what a worker computed is what this process computes for the same mixture
    data = load_shards(udhr_lake, "proxy", split=PROXY["split"])
    local = train_proxy(data, dict(zip(LANGS, MIXTURES[1], strict=True)), proxy_config("tiny", PROXY))
    for lang, loss in local.val_loss.items():
        assert by_index[1].data.metrics[f"val_loss.{lang}"] == pytest.approx(loss, rel=1e-6)


def test_sweep_results_read_back_the_finished_proxies(udhr_lake: Path, sweep: dict[str, Any]):
    res = sweep_results(sweep["out"])
    runs = {int(r.data.tags["sailyard.proxy_index"]): r for r in children(udhr_lake, sweep["result"].mlflow_run_id)}
    assert res.langs == LANGS and res.indices == [0, 1, 2] and res.proxies == 3
    assert np.array_equal(res.weights, MIXTURES)
    assert set(res.losses) == set(STAGE_LANGS)
    for lang, losses in res.losses.items():
        assert losses.tolist() == [runs[i].data.metrics[f"val_loss.{lang}"] for i in range(3)]
    assert res.run_ids == [runs[i].info.run_id for i in range(3)]
    assert res.meta == META


def test_rerun_is_a_no_op_and_other_inputs_are_refused(udhr_lake: Path, sweep: dict[str, Any]):
    out, cfg = sweep["out"], sweep["cfg"]
    again = run_sweep(udhr_lake, out, LANGS, MIXTURES, dataclasses.replace(cfg, workers=1), meta=META,
                      log=lambda _: None)
    assert (again.ran, again.skipped, again.finished) == (0, 3, 3)
    assert again.mlflow_run_id == sweep["result"].mlflow_run_id
    assert len(children(udhr_lake, again.mlflow_run_id)) == 3
    with pytest.raises(ConfigError, match="holds another sweep"):
        run_sweep(udhr_lake, out, LANGS, MIXTURES[:2], cfg, meta=META, log=lambda _: None)
    with pytest.raises(ConfigError, match="holds another sweep"):
        run_sweep(udhr_lake, out, LANGS, MIXTURES, SweepConfig(proxy={**PROXY, "steps": 9}, runs=3), meta=META,
                  log=lambda _: None)
    assert len(children(udhr_lake, again.mlflow_run_id)) == 3


def test_bad_inputs_are_config_errors(udhr_lake: Path, tmp_path: Path):
    cfg = SweepConfig(proxy=PROXY, runs=3)
    with pytest.raises(ConfigError, match="n × 3 array"):
        run_sweep(udhr_lake, tmp_path, LANGS, MIXTURES[:, :2], cfg, meta={}, log=lambda _: None)
    with pytest.raises(ConfigError, match="no shards in stage"):
        run_sweep(udhr_lake, tmp_path, ["ind", "tha", "khm"], MIXTURES, cfg, meta={}, log=lambda _: None)
    with pytest.raises(ConfigError, match="workers: must be positive"):
        SweepConfig(workers=0)
    with pytest.raises(ConfigError, match="unknown key"):
        SweepConfig(proxy={"layers": 3})
    assert not (tmp_path / "sweep.json").exists()


SCRIPT = """
import json, sys
import numpy as np
from trainer.sweep import SweepConfig, run_sweep

if __name__ == "__main__":
    a = json.load(open(sys.argv[1]))
    run_sweep(a["lake"], a["out"], a["langs"], np.array(a["mixtures"]), SweepConfig(**a["cfg"]), meta=a["meta"],
              log=lambda m: print(m, flush=True))
"""


def test_a_killed_sweep_resumes_and_finishes_every_proxy_exactly_once(udhr_lake: Path, tmp_path: Path):
    mixtures = np.array([[0.5, 0.25, 0.25], [0.2, 0.2, 0.6], [0.9, 0.1, 0.0], [0.4, 0.4, 0.2]])
    proxy = {**PROXY, "steps": 25}
    args = {"lake": str(udhr_lake), "out": str(tmp_path / "out"), "langs": LANGS, "mixtures": mixtures.tolist(),
            "cfg": {"proxy": proxy, "workers": 1, "runs": 4}, "meta": META}
    (tmp_path / "args.json").write_text(json.dumps(args))
    (tmp_path / "sweep_script.py").write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "SAILYARD_PARENT_RUN_ID")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    stderr = open(tmp_path / "stderr.txt", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, str(tmp_path / "sweep_script.py"), str(tmp_path / "args.json")],
                            stdout=subprocess.PIPE, stderr=stderr, text=True, env=env, start_new_session=True)
    seen: list[int] = []
    try:
        for line in proc.stdout:
            match = re.search(r"proxy (\d+) finished", line)
            if match:
                seen.append(int(match.group(1)))
                os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its workers, mid-run
                break
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        stderr.close()
    assert proc.returncode == -signal.SIGKILL and seen, (tmp_path / "stderr.txt").read_text()[-3000:]

    doc = json.loads((tmp_path / "out" / "sweep.json").read_text())
    before = finished_by_index(udhr_lake, doc["mlflow_run_id"])
    assert set(seen) <= set(before) and len(before) < 4  # killed with proxies left to train
    assert client_for(udhr_lake).get_run(doc["mlflow_run_id"]).info.status == "RUNNING"  # nobody closed it

    result = run_sweep(udhr_lake, tmp_path / "out", LANGS, mixtures, SweepConfig(**args["cfg"]), meta=META,
                       log=lambda _: None)
    assert result.mlflow_run_id == doc["mlflow_run_id"]
    assert (result.ran, result.skipped, result.finished) == (4 - len(before), len(before), 4)
    after = finished_by_index(udhr_lake, doc["mlflow_run_id"])
    assert sorted(after) == [0, 1, 2, 3] and all(len(ids) == 1 for ids in after.values())
    assert all(after[i] == before[i] for i in before)  # the proxies finished before the kill were not re-run
    parent = client_for(udhr_lake).get_run(doc["mlflow_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.metrics["proxies_finished"] == 4
