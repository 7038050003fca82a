"""The command line's failure paths: a one-line reason on stderr, a JSON summary last on stdout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from trainer.pretrain import main


def summary(out: str) -> dict[str, object]:
    return json.loads(out.strip().splitlines()[-1])


def test_bad_config_exits_2_naming_the_key(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({"train": {"data": {"wieghts": {"ind": 1}}}}), encoding="utf-8")
    assert main(["--config", str(path)]) == 2
    out, err = capfd.readouterr()
    result = summary(out)
    assert (result["job"], result["status"], result["error_type"]) == ("train", "error", "ConfigError")
    assert "train.data.wieghts: unknown key" in str(result["error"])
    assert "sailyard train: error:" in err


def test_override_is_validated_too(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({"train": {"work_dir": str(tmp_path)}}), encoding="utf-8")
    assert main(["--config", str(path), "--max-steps", "0"]) == 2
    error = str(summary(capfd.readouterr().out)["error"])
    assert "with command-line overrides" in error and "schedule.max_steps: must be positive, got 0" in error


def test_missing_manifest_exits_1(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({"train": {"work_dir": str(tmp_path / "work"),
                                              "data": {"lake": str(tmp_path / "lake")}}}), encoding="utf-8")
    assert main(["--config", str(path)]) == 1
    result = summary(capfd.readouterr().out)
    assert result["error_type"] == "TableNotFoundError"
    assert f"no shard_manifest table in lake {tmp_path / 'lake'}" in str(result["error"])
