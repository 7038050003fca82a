"""The strict config loader: defaults run, every problem is reported at once with its key."""

from __future__ import annotations

import pytest

from data_engine.config import from_dict, section
from data_engine.dedup.config import DedupConfig
from data_engine.errors import ConfigError
from trainer.pipeline import PipelineConfig


def test_demo_yaml_loads_and_defaults_run(tmp_path):
    cfg = PipelineConfig.from_yaml("configs/demo.yaml")
    assert cfg.dedup.stages == ("url", "exact", "near", "lines") and cfg.export.tokenizer == "qwen2.5"
    assert cfg.dedup.near.bands * cfg.dedup.near.rows == 120
    assert PipelineConfig() == from_dict(PipelineConfig, {})


def test_all_problems_are_reported_with_their_keys():
    with pytest.raises(ConfigError) as err:
        from_dict(PipelineConfig, {"dedup": {"stages": ["exact", "bogus"], "typo": 1},
                                   "ingest": {"split_bytes": "big"}, "work_dir": 3}, source="p.yaml")
    message = str(err.value)
    assert message.startswith("p.yaml: 4 problem(s)")
    for part in ("dedup.typo: unknown key", "unknown stage(s) ['bogus']", "ingest.split_bytes: expected int",
                 "work_dir: expected str"):
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


def test_a_pipeline_yaml_without_the_jobs_section_is_an_error(tmp_path):
    other = tmp_path / "pipeline.yaml"
    other.write_text("clean:\n  input_table: docs_raw\nexport:\n  tokenizer: qwen2.5\n")
    with pytest.raises(ConfigError, match="no 'dedup:' section"):
        section(other, "dedup", DedupConfig)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("dedup: exact\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        section(scalar, "dedup", DedupConfig)


def test_pipeline_sections_are_the_pipeline_configs_sections():
    import dataclasses

    from data_engine.config import PIPELINE_SECTIONS

    nested = [f.name for f in dataclasses.fields(PipelineConfig) if f.default_factory is not dataclasses.MISSING]
    assert sorted(PIPELINE_SECTIONS) == sorted(nested)


def test_every_stage_config_rejects_bad_values():
    from data_engine.clean.config import LidConfig
    from data_engine.export.config import ExportConfig
    from data_engine.ingest.config import IngestConfig

    for bad in ({"min_score": 1.5}, {"cld2_below": -0.1}, {"max_chars": 0}, {"mismatch_score": 2},
                {"confusable": [["ind", "xx"]]}):
        with pytest.raises(ConfigError):
            from_dict(LidConfig, bad, "clean.lid")
    with pytest.raises(ConfigError):
        from_dict(IngestConfig, {"split_bytes": 0}, "ingest")
    with pytest.raises(ConfigError):
        from_dict(ExportConfig, {"langs": "tha"}, "export")


def test_the_data_engine_never_imports_the_trainer():
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "data_engine"
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(root)}: {n}" for n in names if n.split(".")[0] in ("trainer", "eval")]
    assert offenders == []
