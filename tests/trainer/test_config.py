from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from data_engine.errors import ConfigError
from trainer.config import DataArgs, ModelArgs, ParallelArgs, ScheduleArgs, TrainConfig

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "train_tiny.yaml"


def write(tmp_path: Path, doc: object) -> Path:
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def field_tree(cls: type) -> dict[str, object]:
    return {f.name: field_tree(f.default_factory) if dataclasses.is_dataclass(f.default_factory) else None
            for f in dataclasses.fields(cls)}


def key_tree(doc: dict[str, object]) -> dict[str, object]:
    return {k: key_tree(v) if isinstance(v, dict) and k != "weights" else None for k, v in doc.items()}


def test_tiny_yaml_mirrors_the_dataclasses_and_their_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = yaml.safe_load(TINY.read_text(encoding="utf-8"))
    assert key_tree(doc["train"]) == field_tree(TrainConfig)

    monkeypatch.chdir(REPO)
    cfg = TrainConfig.from_yaml(TINY)
    assert cfg.model == ModelArgs()
    assert cfg.schedule == ScheduleArgs()
    assert cfg.parallel == ParallelArgs()  # one device; fp32 and no distributed optimizer on a CPU
    assert cfg.preset == "tiny"
    # The demo's few hundred documents per language need a larger validation share than the default.
    assert cfg.data == DataArgs(lake=REPO / "work" / "lake", split="90,10,0")
    assert cfg.work_dir == REPO / "work"
    assert cfg.checkpoints == REPO / "work" / "checkpoints" / "tiny"


def test_relative_paths_resolve_against_the_current_directory(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, {"train": {"work_dir": "out", "data": {"lake": "../lake"}}})
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig.from_yaml(path)
    assert cfg.work_dir == tmp_path / "out"
    assert cfg.data.lake == tmp_path / ".." / "lake"
    assert cfg.checkpoints == tmp_path / "out" / "checkpoints" / "tiny"


def test_a_file_without_train_section_is_the_section_itself(tmp_path: Path) -> None:
    cfg = TrainConfig.from_yaml(write(tmp_path, {"name": "bare", "schedule": {"max_steps": 3}}))
    assert (cfg.name, cfg.schedule.max_steps) == ("bare", 3)


def test_pipeline_yaml_uses_only_its_train_section(tmp_path: Path) -> None:
    doc = {"ingest": {"anything": 1}, "train": {"name": "from-pipeline", "data": {"stage": "stage2"}}}
    cfg = TrainConfig.from_yaml(write(tmp_path, doc))
    assert (cfg.name, cfg.data.stage) == ("from-pipeline", "stage2")


def test_unknown_keys_are_rejected_with_their_full_name(tmp_path: Path) -> None:
    doc = {"train": {"nmae": "x", "schedule": {"learning_rate": 1.0e-3}}}
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_yaml(write(tmp_path, doc))
    message = str(err.value)
    assert "2 problem(s)" in message
    assert "train.nmae: unknown key" in message
    assert "train.schedule.learning_rate: unknown key (known: clip_grad, decay, hold_ratio, lr," in message


def test_type_errors_and_value_errors_are_all_reported(tmp_path: Path) -> None:
    bad_types = {"train": {"seed": "one", "model": {"num_layers": 2.5, "tie_embeddings": "yes"},
                           "data": {"weights": {"ind": "a lot"}}, "schedule": {"decay": "cosine"}}}
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_yaml(write(tmp_path, bad_types))
    message = str(err.value)
    assert "5 problem(s)" in message
    for expected in ("train.seed: expected int, got 'one'",
                     "train.model.num_layers: expected int, got 2.5",
                     "train.model.tie_embeddings: expected bool, got 'yes'",
                     "train.data.weights.ind: expected float, got 'a lot'",
                     "train.schedule.decay: expected one of 'linear', 'one_minus_square_root', got 'cosine'"):
        assert expected in message

    bad_values = {"train": {
        "name": "a/b", "val_check_interval": 0,
        "model": {"hidden_size": 66, "num_attention_heads": 4, "num_query_groups": 3},
        "data": {"seq_length": 256, "micro_batch_size": 3, "global_batch_size": 4, "split": "98,2",
                 "weights": {"ind": 0}},
        "schedule": {"lr": 1.0e-4, "min_lr": 1.0e-3, "warmup_ratio": 0.5, "hold_ratio": 0.6},
        "restore_from": str(tmp_path / "nowhere"),
    }}
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_yaml(write(tmp_path, bad_values))
    message = str(err.value)
    for expected in ("name: 'a/b' must be a plain folder name",
                     "val_check_interval: must be positive, got 0",
                     "model.hidden_size (66) must be divisible by model.num_attention_heads (4)",
                     "model.num_attention_heads (4) must be divisible by model.num_query_groups (3)",
                     "data.seq_length (256) exceeds model.seq_length (128)",
                     "data.global_batch_size (4) must be a multiple of data.micro_batch_size (3)",
                     "data.split: expected three non-negative numbers",
                     "data.weights.ind: must be positive, got 0",
                     "schedule.min_lr: must be between 0 and lr (0.0001), got 0.001",
                     "schedule: warmup_ratio + hold_ratio = 1.1 exceeds 1",
                     f"restore_from: no checkpoint directory at {tmp_path / 'nowhere'}"):
        assert expected in message
    assert "11 problem(s)" in message


def test_yaml_1_1_exponent_floats_are_read_as_numbers(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text("train:\n  schedule:\n    lr: 3e-4\n    min_lr: 3e-5\n", encoding="utf-8")
    cfg = TrainConfig.from_yaml(path)
    assert (cfg.schedule.lr, cfg.schedule.min_lr) == (3e-4, 3e-5)


def test_unreadable_and_malformed_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        TrainConfig.from_yaml(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [unclosed", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        TrainConfig.from_yaml(broken)
    with pytest.raises(ConfigError, match="train: expected a mapping of keys, got list"):
        TrainConfig.from_yaml(write(tmp_path, {"train": [1, 2]}))


def test_to_dict_round_trips(tmp_path: Path) -> None:
    cfg = TrainConfig(name="rt", work_dir=tmp_path, data=DataArgs(weights={"ind": 2.0, "vie": 1.0}))
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert TrainConfig.from_dict(yaml.safe_load(cfg.to_yaml())["train"]) == cfg
