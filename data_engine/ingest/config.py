"""Ingest's configuration (the `ingest:` section of a pipeline YAML)."""

from __future__ import annotations

from dataclasses import dataclass

from data_engine.errors import ConfigError


@dataclass(frozen=True)
class IngestConfig:
    split_bytes: int = 128 * 1024 * 1024
    """The largest byte range one task reads of a plain JSONL or Parquet file (larger files are cut;
    ranges are smaller when fewer of them than cores would leave cores idle). Gzip is never cut."""
    max_record_bytes: int = 16 * 1024 * 1024
    """A record above this size is quarantined as `record_too_large` (and never fully loaded)."""
    max_payload_bytes: int = 64 * 1024
    """How much of a bad record the quarantine row keeps."""

    def __post_init__(self) -> None:
        for name in ("split_bytes", "max_record_bytes", "max_payload_bytes"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"ingest.{name} must be positive, got {getattr(self, name)}")
