"""The strict config loader: defaults run, every problem is reported at once with its key."""

from __future__ import annotations

import pytest

from data_engine.config import DedupConfig, PipelineConfig, from_dict, section
from data_engine.errors import ConfigError


def test_demo_yaml_loads_and_defaults_run(tmp_path):
    cfg = PipelineConfig.from_yaml("configs/demo.yaml")
    assert cfg.dedup.stages == ("url", "exact", "near", "lines") and cfg.export.tokenizer == "qwen2.5"
    assert cfg.dedup.near.bands * cfg.dedup.near.rows == 120
    assert PipelineConfig() == from_dict(PipelineConfig, {})


def test_all_problems_are_reported_with_their_keys():
    with pytest.raises(ConfigError) as err:
        from_dict(PipelineConfig, {"dedup": {"stages": ["exact", "bogus"], "typo": 1},
                                   "ingest": {"split_bytes": "big"}, "stage": 3}, source="p.yaml")
    message = str(err.value)
    assert message.startswith("p.yaml: 4 problem(s)")
    for part in ("dedup.typo: unknown key", "unknown stage(s) ['bogus']", "ingest.split_bytes: expected int",
                 "stage: expected str"):
        assert part in message


def test_a_section_of_a_pipeline_yaml_or_the_section_alone(tmp_path):
    whole = tmp_path / "pipeline.yaml"
    whole.write_text("dedup:\n  stages: [exact]\n  exact: {lowercase: true}\n")
    alone_text = "stages: [exact]\nexact: {lowercase: true}\n"
    alone = tmp_path / "dedup.yaml"
    alone.write_text(alone_text)
    assert section(whole, "dedup", DedupConfig) == section(alone, "dedup", DedupConfig)
    assert section(alone, "dedup", DedupConfig).exact.lowercase is True
    with pytest.raises(ConfigError, match="does not exist"):
        section(tmp_path / "missing.yaml", "dedup", DedupConfig)
