"""Fixtures for the evaluation tests: one tiny random Qwen2 checkpoint for the whole session."""

from __future__ import annotations

from pathlib import Path

import pytest

#: The tiny model's shape: the trainer's 2-layer default (hidden 64, the real 151,936-token
#: vocabulary, so the bundled Qwen2.5 tokenizer applies), random weights from a fixed seed.
TINY_SEED = 1234


@pytest.fixture(scope="session")
def tiny_hf_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hugging Face directory (config.json, safetensors, Qwen2.5 tokenizer) of a random Qwen2."""
    from trainer.base_model import write_random_qwen2
    from trainer.config import ModelArgs

    return write_random_qwen2(tmp_path_factory.mktemp("eval-model") / "tiny-qwen2",
                              ModelArgs(num_layers=2, seq_length=128), seed=TINY_SEED)
