"""Shared fixtures: one real local SparkSession for the whole test session, temp lakes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# MLflow goes to each test's own work dir unless a test sets it; never to a user's server.
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("SAILYARD_PARENT_RUN_ID", None)
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def spark():
    """A real local[2] session shared by every test (start-up costs ~10 s, so once)."""
    from data_engine.spark import get_spark

    session = get_spark("sailyard-tests", conf={"spark.master": "local[2]",
                                                 "spark.sql.shuffle.partitions": "4",
                                                 "spark.default.parallelism": "2"})
    yield session
    session.stop()


@pytest.fixture()
def lake_dir(tmp_path: Path) -> str:
    """A lake root inside a fresh work dir (MLflow then lives in `<tmp>/mlflow`)."""
    path = tmp_path / "lake"
    path.mkdir()
    return str(path)
