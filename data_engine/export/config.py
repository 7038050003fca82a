"""Shard export's configuration (the `export:` section)."""

from __future__ import annotations

from dataclasses import dataclass

from data_engine.errors import ConfigError

DEFAULT_PART_BYTES = 1 << 30  # 1 GiB: a few hundred MB of text per part, few files per language
MIN_PART_BYTES = 16  # a handful of tokens: small enough for tests to get several parts from a few documents


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
    part_bytes: int | None = DEFAULT_PART_BYTES
    """Bound on one part's `.bin`: each language is written as ⌈bytes / part_bytes⌉ near-equal parts
    `<lang>-<digest>_text_document_<k>`, each by its own Spark task, so no task, file or driver ever
    holds a whole language. A part can exceed it by at most its last document. null: one part per
    language, however large (what exports before parts wrote; reproductions of their rows use it)."""

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
        if self.part_bytes is not None and self.part_bytes < MIN_PART_BYTES:
            raise ConfigError(f"export.part_bytes must be at least {MIN_PART_BYTES} (or null for one part per "
                              f"language), got {self.part_bytes}")
