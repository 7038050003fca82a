"""Token accounting's configuration (the `tokens:` section)."""

from __future__ import annotations

from dataclasses import dataclass

from data_engine.errors import ConfigError


@dataclass(frozen=True)
class TokenCountConfig:
    table: str = "docs_curated"
    """Table to count (any docs table of the lake: docs_curated, docs_scored, …)."""
    tokenizer: str = "qwen2.5"
    """The training tokenizer, named as the exporter takes it: counts are only exact for that one."""
    eod_id: int | None = None
    """Recorded with the counts (every document counts one EOD); default: the tokenizer's <|endoftext|>."""
    min_tokens: int = 1
    """Documents with fewer text tokens are counted as dropped, as the exporter drops them."""
    band_percent: int = 1
    """Width of a quality band in percent; must divide 100, so "top q%" is a whole number of bands."""
    batch_docs: int = 256
    """Documents per tokenizer batch on the executors."""

    def __post_init__(self) -> None:
        for name in ("table", "tokenizer"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"tokens.{name} must be a non-empty name, got {value!r}")
        if "/" in self.table or self.table.startswith((".", "_")):
            raise ConfigError(f"tokens.table must be a table name such as 'docs_curated', got {self.table!r}")
        for name, low in (("min_tokens", 0), ("batch_docs", 1), ("band_percent", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"tokens.{name} must be an integer of at least {low}, got {value!r}")
        if self.eod_id is not None and (not isinstance(self.eod_id, int) or isinstance(self.eod_id, bool)
                                        or self.eod_id < 0):
            raise ConfigError(f"tokens.eod_id must be a token id (0 or more) or unset, got {self.eod_id!r}")
        if self.band_percent > 100 or 100 % self.band_percent:
            raise ConfigError(f"tokens.band_percent must divide 100 (1, 2, 4, 5, 10, 20, 25, 50, 100), "
                              f"got {self.band_percent}")
