"""Shard export's configuration (the `export:` section)."""

from __future__ import annotations

from dataclasses import dataclass

from data_engine.errors import ConfigError


@dataclass(frozen=True)
class ExportConfig:
    input_table: str | None = None
    """Table to export; default: the most curated one present (docs_curated, else docs_dedup)."""
    tokenizer: str = "qwen2.5"
    """'qwen2.5' (bundled, offline), a directory with tokenizer.json, or a Hugging Face name."""
    eod_id: int | None = None
    """End-of-document token appended to every document; default: the tokenizer's <|endoftext|>."""
    langs: tuple[str, ...] = ()
    """Languages to export, as ingest reads tags (`th`, `th_TH` and `tha` are all Thai); each must
    have documents in the table. Default: every language in it except `und`. With a selection, only
    those languages' shards of the stage are replaced; without, the whole stage."""
    batch_docs: int = 256
    """Documents per tokenizer batch on the executors."""
    min_tokens: int = 1
    """Documents with fewer tokens (before EOD) are left out and counted as dropped."""

    def __post_init__(self) -> None:
        if isinstance(self.langs, str):  # `langs: tha` in YAML would otherwise select t, h, a
            raise ConfigError(f"export.langs must be a list of language codes, got {self.langs!r}")
        empty = [x for x in self.langs if not isinstance(x, str) or not x.strip()]
        if empty:
            raise ConfigError(f"export.langs: empty or non-text language code in {list(self.langs)!r}")
        if self.batch_docs < 1:
            raise ConfigError(f"export.batch_docs must be at least 1, got {self.batch_docs}")
        if self.min_tokens < 0:
            raise ConfigError(f"export.min_tokens must be 0 or more, got {self.min_tokens}")
