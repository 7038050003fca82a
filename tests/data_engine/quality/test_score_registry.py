"""Scoring and the model registry: an unreadable registry is an error, never "no model"; pinned versions."""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from data_engine import lake, tracking
from data_engine.config import from_dict
from data_engine.errors import ConfigError, SailyardError
from data_engine.jobrun import run_job
from data_engine.quality.config import QualityScoreConfig, QualityTrainConfig
from data_engine.quality.job import score_quality_job, train_quality_job
from data_engine.quality.score import score_and_select
from data_engine.sample.corpus import load_udhr

SCHEMA = "doc_id string, lang string, text string"
OUTPUTS = ("docs_scored", "docs_curated", "drops")


def _junk(rng: random.Random, n: int) -> list[str]:
    menu = ["หน้าแรก", "เข้าสู่ระบบ", "ตะกร้า", "ลดราคา", "ติดต่อเรา", "Home", "Login", "FAQ", "© 2024"]
    return [" | ".join(rng.choice(menu) for _ in range(12)) for _ in range(n)]


@pytest.fixture()
def registered(spark, lake_dir, tmp_path):
    """A lake with Thai (two registered classifier versions) and Lao (none) documents to score."""
    rng = random.Random(11)
    paragraphs = [p for s in load_udhr("tha") for p in s]
    positives = tmp_path / "tha.txt"
    positives.write_text("\n".join(p.replace("\n", " ") for p in paragraphs[:40]) + "\n", encoding="utf-8")
    negatives = [(f"n{i:02d}", "tha", t) for i, t in enumerate(_junk(rng, 40))]
    rows = ([(f"tha-j{i:02d}", "tha", t) for i, t in enumerate(_junk(rng, 20))]
            + [(f"tha-r{i:02d}", "tha", t) for i, t in enumerate(paragraphs[40:50])]
            + [(f"lao-{i}", "lao", t) for i, t in enumerate(_junk(rng, 5))])
    lake.write_table(spark.createDataFrame(negatives, SCHEMA), lake_dir, "docs_clean", mode="error")
    lake.write_table(spark.createDataFrame(rows, SCHEMA), lake_dir, "docs_dedup", mode="error")
    for seed in (13, 14):
        train_quality_job(spark, lake_dir, "tha", str(positives),
                          QualityTrainConfig(max_negatives=30, epoch=25, seed=seed, min_examples=5))
    return lake_dir, rows


def _versions(lake_dir: str) -> dict[str, int | None]:
    return {name: lake.table_version(lake_dir, name) for name in OUTPUTS}


def test_an_unreadable_registry_fails_the_job_and_commits_nothing(spark, registered, capsys):
    lake_dir, rows = registered
    work = tracking.work_dir_for(lake_dir)
    db = tracking.tracking_uri(work).removeprefix("sqlite:///")
    before = _versions(lake_dir)
    assert before == {"docs_scored": None, "docs_curated": None, "drops": None}

    # Another process holds the registry database locked (as a parallel training job's commit does):
    # that is not "Lao has no model" — the job must stop, not keep 100% of Lao.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time\n"
         f"c = sqlite3.connect({db!r}, isolation_level=None)\nc.execute('BEGIN EXCLUSIVE')\n"
         "print('locked', flush=True)\ntime.sleep(300)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(SailyardError) as err:
            score_and_select(spark, lake_dir, QualityScoreConfig())
    finally:
        holder.kill()
        holder.wait()
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"model registry sqlite:///{db} could not be read (versions of sailyard-quality-lao)")
    assert "database is locked" in message
    assert _versions(lake_dir) == before

    # A registry whose tables are broken, through the job and its one-line error: exit 1, run FAILED.
    with sqlite3.connect(db) as conn:
        conn.execute("ALTER TABLE model_versions RENAME TO model_versions_lost")
    capsys.readouterr()
    assert run_job("score_quality", lambda: score_quality_job(spark, lake_dir, QualityScoreConfig())) == 1
    err_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert err_line.startswith("sailyard score_quality: error: model registry sqlite:///")
    assert "no such table: model_versions" in err_line
    assert _versions(lake_dir) == before
    client = MlflowClient(tracking.tracking_uri(work))
    (failed,) = client.search_runs([client.get_experiment_by_name("sailyard").experiment_id],
                                   "tags.`sailyard.job` = 'score_quality'")
    assert failed.info.status == "FAILED"


def test_a_pinned_version_is_used_and_recorded(spark, registered):
    lake_dir, rows = registered
    client = MlflowClient(tracking.tracking_uri(tracking.work_dir_for(lake_dir)))

    latest = score_quality_job(spark, lake_dir, QualityScoreConfig(keep_percent=50))
    assert latest["models"] == {"tha": "sailyard-quality-tha/2"}

    cfg = from_dict(QualityScoreConfig, {"keep_percent": 50, "models": {"tha": 1}}, "score")
    pinned = score_quality_job(spark, lake_dir, cfg)
    assert pinned["models"] == {"tha": "sailyard-quality-tha/1"}
    scored = lake.read_arrow(lake_dir, "docs_scored").to_pylist()
    assert {r["quality_model"] for r in scored if r["lang"] == "tha"} == {"sailyard-quality-tha/1"}
    assert {r["quality_model"] for r in scored if r["lang"] == "lao"} == {None}  # no model: kept unscored
    assert len(scored) == len(rows)
    run = client.get_run(pinned["mlflow_run_id"])
    assert run.data.tags["model.tha"] == "sailyard-quality-tha/1"
    assert run.data.tags["model.tha.pinned"] == "true"
    assert run.data.params["score.models.tha"] == "1"
    assert client.get_run(latest["mlflow_run_id"]).data.tags["model.tha.pinned"] == "false"

    before = _versions(lake_dir)
    with pytest.raises(ConfigError, match=r"score.models: tha: sailyard-quality-tha has no version 7 "
                                          r"\(the latest is 2\)"):
        score_and_select(spark, lake_dir, QualityScoreConfig(models={"tha": 7}))
    # A pin for a language absent from this input is checked too.
    with pytest.raises(ConfigError, match="ind: sailyard-quality-ind has no version 1 "
                                          r"\(it has no registered version\)"):
        score_and_select(spark, lake_dir, QualityScoreConfig(models={"ind": 1}))
    assert _versions(lake_dir) == before


@pytest.mark.parametrize(("models", "message"), [
    ({"fra": 1}, "'fra' is not one of the 15 languages"),
    ({"th": 1}, "'th' is not one of the 15 languages"),
    ({"tha": 0}, r"score.models.tha: a registered model version is an integer ≥ 1, got 0"),
])
def test_pins_outside_the_languages_or_not_versions_are_config_errors(models, message):
    with pytest.raises(ConfigError, match=message):
        QualityScoreConfig(models=models)


def test_yaml_pins_are_typed():
    with pytest.raises(ConfigError, match=r"score.models.tha: expected int, got 'latest'"):
        from_dict(QualityScoreConfig, {"models": {"tha": "latest"}}, "score")
