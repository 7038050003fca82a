"""From the shard manifest to the blend NeMo's `PreTrainingDataModule(paths=...)` takes.

The mixture is decided per language (RegMix, or by token count); Megatron blends per shard — and
the exporter writes each language as several parts (`<lang>-<digest>_text_document_<k>`, one
manifest row each), so a language's weight is shared by its parts in proportion to their tokens and
its total stays what the mixture says. This module turns one into the other and refuses to train on
shards that cannot be right: tokenised with another tokenizer, missing on disk, not the files the
manifest describes (document and token counts of the `.idx`, `.bin` size, checksums of `.bin` and
`.idx`), or absent for a language the mixture asks for. The rows it used are hashed, so an MLflow
run names the exact shards its checkpoint saw.

A mixture plan's export writes the blend itself (`<out>/<stage>.data.yaml`); `blend_from_data_config`
takes its paths as they are, after the same checks against the current manifest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_engine import lake as lake_io
from data_engine.config import read_yaml
from data_engine.errors import ConfigError, TableNotFoundError
from data_engine.export.indexed_dataset import file_checksum, index_info
from data_engine.export.manifest import manifest_digest, row_order
from data_engine.tables import SHARD_MANIFEST
from data_engine.tokenizer import identity

MANIFEST_COLUMNS = ("stage", "lang", "prefix", "docs", "tokens", "source_table", "source_version",
                    "tokenizer", "tokenizer_digest", "vocab_size", "eod_id")


@dataclass(frozen=True)
class Blend:
    """The shards one training stage reads, and where that list came from."""

    paths: list[float | str]  # [w1, prefix1, w2, prefix2, ...], weights summing to 1
    lang_weights: dict[str, float]  # normalised weight of each language in the blend
    manifest_path: Path
    manifest_version: int
    # sha256 of the manifest rows used (`manifest_digest`): equal to the exporter's digest of the
    # stage when every language of it is used, so training and export runs can be matched up.
    digest: str
    plan_digest: str | None = None  # the plan a data config was exported for (`export_shards --plan`)
    # The table versions the shards were exported from ("docs_curated@v3"): lineage for the run's tags.
    sources: tuple[str, ...] = ()


def blend_from_manifest(lake: str | Path, stage: str, weights: Mapping[str, float] | None = None, *,
                        tokenizer: str = "qwen2.5", split: str | None = None) -> Blend:
    """Read `<lake>/shard_manifest` and weight the shards of `stage`.

    Args:
        lake: the Delta lake root.
        stage: manifest rows with this `stage` are used; others are ignored.
        weights: language → weight (any positive scale; normalised here). Languages of the stage
            that are not named get no weight. None: every language of the stage, by token count.
        tokenizer: the training tokenizer (a `data_engine.tokenizer` name or directory); the
            shards must have been written with exactly this tokenizer file.
        split: the train,validation,test document split; when given, every part with a positive
            share must get at least one document of every shard (else Megatron loops forever
            building that part).

    Within a language, shards share its weight in proportion to their tokens.

    Raises:
        TableNotFoundError: the lake has no shard manifest.
        ConfigError: no rows for `stage`, a weighted language without shards, a non-positive
            weight, a tokenizer mismatch, a shard whose .bin/.idx is missing, or whose files do not
            match its manifest row (documents, tokens, dtype, size, checksums).
    """
    version, all_rows = _manifest_rows(lake)
    where = f"{SHARD_MANIFEST} v{version} in {Path(lake).resolve()}"
    rows = [r for r in all_rows if r["stage"] == stage]
    if not rows:
        stages = sorted({r["stage"] for r in all_rows})
        raise ConfigError(f"{where} has no shards for stage {stage!r} (stages present: {stages})")

    by_lang: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["tokens"] > 0:  # an empty shard cannot be sampled from; Megatron rejects weight 0
            by_lang.setdefault(row["lang"], []).append(row)
    lang_weights = _language_weights(by_lang, weights, where, stage)
    used = sorted((r for lang in lang_weights for r in by_lang[lang]), key=row_order)
    _check_shards(used, tokenizer, where)
    if split is not None:
        _check_split(used, split, where)

    paths: list[float | str] = []
    for row in used:
        lang_tokens = sum(r["tokens"] for r in by_lang[row["lang"]])
        paths += [lang_weights[row["lang"]] * row["tokens"] / lang_tokens, row["prefix"]]
    return Blend(paths=paths, lang_weights=lang_weights,
                 manifest_path=lake_io.table_path(lake, SHARD_MANIFEST), manifest_version=version,
                 digest=manifest_digest(used), sources=_sources(used))


def _sources(rows: list[dict[str, Any]]) -> tuple[str, ...]:
    return tuple(sorted({f"{r.get('source_table')}@v{r.get('source_version')}" for r in rows}))


def blend_from_data_config(lake: str | Path, paths_file: str | Path, tokenizer: str = "qwen2.5",
                           split: str | None = None) -> Blend:
    """The blend of a data config written by `export_shards --plan`: its `paths` exactly.

    Every prefix must be a row of the current `<lake>/shard_manifest` (a shard the manifest no
    longer names may be deleted or replaced by now) and pass the checks of `blend_from_manifest`.
    `lang_weights` are the file's weights summed per language of those rows, normalised.

    Raises:
        TableNotFoundError: the lake has no shard manifest.
        ConfigError: an unreadable or malformed file (paths not [weight, prefix, ...] with positive
            weights), a prefix twice or not in the manifest, or a shard failing the file checks.
    """
    path = Path(paths_file)
    doc = read_yaml(path, "data config")
    paths = doc.get("paths") if isinstance(doc, Mapping) else None
    pairs = _weighted_prefixes(paths, path)
    version, rows = _manifest_rows(lake)
    where = f"{SHARD_MANIFEST} v{version} in {Path(lake).resolve()}"
    by_prefix = {r["prefix"]: r for r in rows}
    absent = [prefix for _, prefix in pairs if prefix not in by_prefix]
    if absent:
        raise ConfigError(f"data config {path} (manifest v{doc.get('manifest_version')}) names shards that "
                          f"{where} does not: {', '.join(absent)}; re-export the plan "
                          "(export_shards --plan) and train on the data config it writes")
    used = sorted((by_prefix[prefix] for _, prefix in pairs), key=row_order)
    _check_shards(used, tokenizer, where)
    if split is not None:
        _check_split(used, split, where)
    raw: dict[str, float] = {}
    for weight, prefix in pairs:
        lang = by_prefix[prefix]["lang"]
        raw[lang] = raw.get(lang, 0.0) + weight
    total = sum(raw.values())
    out: list[float | str] = []
    for weight, prefix in pairs:
        out += [weight, prefix]
    return Blend(paths=out, lang_weights={lang: raw[lang] / total for lang in sorted(raw)},
                 manifest_path=lake_io.table_path(lake, SHARD_MANIFEST), manifest_version=version,
                 digest=manifest_digest(used), plan_digest=doc.get("plan_digest"), sources=_sources(used))


def _weighted_prefixes(paths: Any, source: Path) -> list[tuple[float, str]]:
    where = f"data config {source}"
    if not isinstance(paths, list) or not paths or len(paths) % 2:
        raise ConfigError(f"{where}: 'paths' must be a non-empty list [weight1, prefix1, weight2, prefix2, ...]")
    pairs, problems = [], []
    for i in range(0, len(paths), 2):
        weight, prefix = paths[i], paths[i + 1]
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight > 0:
            problems.append(f"paths[{i}]: a weight must be a positive number, got {weight!r}")
        elif not isinstance(prefix, str) or not prefix:
            problems.append(f"paths[{i + 1}]: a shard prefix must be a path, got {prefix!r}")
        elif any(prefix == p for _, p in pairs):
            problems.append(f"paths[{i + 1}]: {prefix} is listed twice")
        else:
            pairs.append((float(weight), prefix))
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))
    return pairs


def _manifest_rows(lake: str | Path) -> tuple[int, list[dict[str, Any]]]:
    version = lake_io.table_version(lake, SHARD_MANIFEST)
    if version is None:
        raise TableNotFoundError(f"no {SHARD_MANIFEST} table in lake {Path(lake).resolve()}; "
                                 "export shards first")
    table = lake_io.read_arrow(lake, SHARD_MANIFEST, version=version)
    missing_cols = [c for c in MANIFEST_COLUMNS if c not in table.column_names]
    if missing_cols:
        raise ConfigError(f"{SHARD_MANIFEST} v{version} lacks columns {missing_cols}")
    return version, table.to_pylist()


def _language_weights(by_lang: Mapping[str, list[dict[str, Any]]],
                      weights: Mapping[str, float] | None, where: str, stage: str) -> dict[str, float]:
    if weights is None:
        raw = {lang: float(sum(r["tokens"] for r in shards)) for lang, shards in by_lang.items()}
        if not raw:
            raise ConfigError(f"{where}: every shard of stage {stage!r} is empty")
    else:
        problems = [f"weight of {lang!r} must be positive, got {w}" for lang, w in weights.items()
                    if not w > 0]
        problems += [f"{lang!r} has a weight but no shard with tokens in stage {stage!r} "
                     f"(languages with shards: {sorted(by_lang)})" for lang in weights if lang not in by_lang]
        if problems:
            raise ConfigError(f"{where}: " + "; ".join(problems))
        raw = {lang: float(w) for lang, w in weights.items()}
    total = sum(raw.values())
    return {lang: raw[lang] / total for lang in sorted(raw)}


def split_documents(docs: int, split: str) -> list[int]:
    """Documents of a shard in each part of a 'train,validation,test' split, as Megatron cuts it
    (cumulative shares of the document count, each bound rounded)."""
    shares = [float(x) for x in split.split(",")]
    total = sum(shares)
    bounds, acc = [0], 0.0
    for share in shares:
        acc += share / total
        bounds.append(int(round(acc * docs)))
    return [hi - lo for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]


def _check_split(rows: list[dict[str, Any]], split: str, where: str) -> None:
    names = ("train", "validation", "test")
    shares = [float(x) for x in split.split(",")]
    problems = []
    for row in rows:
        counts = split_documents(row["docs"], split)
        empty = [names[i] for i, n in enumerate(counts) if n == 0 and shares[i] > 0]
        if empty:
            problems.append(f"{row['lang']} shard {row['prefix']} has {row['docs']} documents: split "
                            f"{split!r} leaves its {' and '.join(empty)} part empty")
    if problems:
        fits = [f"{100 - v},{v},0" for v in range(1, 51)
                if all(min(split_documents(r["docs"], f"{100 - v},{v},0")[:2]) > 0 for r in rows)]
        hint = f" (e.g. '{fits[0]}', the least validation share that gives every shard a document)" if fits else ""
        raise ConfigError(f"{where}: " + "; ".join(problems) + f". Give that part a larger share in data.split{hint}, "
                          "set it to 0, or export more documents")


def _check_shards(rows: list[dict[str, Any]], tokenizer: str, where: str) -> None:
    want = identity(tokenizer)
    problems = []
    for row in rows:
        shard = f"{row['lang']} shard {row['prefix']}"
        if row["tokenizer_digest"] != want.digest:
            problems.append(f"{shard} was tokenised with {row['tokenizer']!r} "
                            f"(tokenizer.json sha256 {row['tokenizer_digest'][:12]}…), the trainer uses "
                            f"{tokenizer!r} ({want.digest[:12]}…); re-export the shards")
        elif row["eod_id"] != want.eod_id:
            problems.append(f"{shard} ends documents with id {row['eod_id']}, the tokenizer's EOD "
                            f"is {want.eod_id}")
        missing = [ext for ext in (".bin", ".idx") if not Path(row["prefix"] + ext).is_file()]
        if missing:
            problems.append(f"{shard}: missing {' and '.join(row['prefix'] + e for e in missing)}")
        else:
            problems += _check_files(row, shard)
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))


def _check_files(row: Mapping[str, Any], shard: str) -> list[str]:
    """The files are the ones the manifest describes: document and token counts from the `.idx`,
    the `.bin` size those imply, and the exporter's xxh3-128 checksums of `.bin` (always) and `.idx`
    (recorded since the exporter wrote `idx_checksum`; older rows are checked by counts)."""
    prefix = row["prefix"]
    try:
        info = index_info(prefix + ".idx")
    except ValueError as exc:
        return [f"{shard}: {exc}"]
    problems = []
    if info.documents != row["docs"] or info.sequences != row["docs"]:
        problems.append(f"{shard}: {prefix}.idx holds {info.documents} documents, the manifest says "
                        f"{row['docs']}")
    if info.tokens != row["tokens"]:
        problems.append(f"{shard}: {prefix}.idx holds {info.tokens} tokens, the manifest says {row['tokens']}")
    if row.get("dtype") and info.dtype.name != row["dtype"]:
        problems.append(f"{shard}: {prefix}.idx stores {info.dtype.name} tokens, the manifest says {row['dtype']}")
    size = Path(prefix + ".bin").stat().st_size
    if size != info.tokens * info.dtype.itemsize:
        problems.append(f"{shard}: {prefix}.bin has {size} bytes, its .idx needs "
                        f"{info.tokens * info.dtype.itemsize}")
    elif row.get("bytes") is not None and size != row["bytes"]:
        problems.append(f"{shard}: {prefix}.bin has {size} bytes, the manifest says {row['bytes']}")
    if problems:  # counts already disagree: no need to read the whole .bin
        return problems
    checks = [(".bin", row.get("checksum")), (".idx", row.get("idx_checksum"))]
    if row.get("checksum") is None:
        problems.append(f"{shard}: the manifest records no checksum of {prefix}.bin; re-export the shards")
    for ext, recorded in checks:
        if recorded is not None and file_checksum(prefix + ext) != recorded:
            problems.append(f"{shard}: {prefix}{ext} does not match the manifest's checksum "
                            f"({recorded[:12]}…): the file changed after export; re-export the shards")
    return problems
