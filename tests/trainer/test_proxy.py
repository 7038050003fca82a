"""The lean proxy loop on real shards: the exporter's, from real UDHR text, and hand-built ones whose
token ids name their document (to check the train/validation split from the .idx)."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from data_engine import lake
from data_engine.errors import ConfigError
from data_engine.export.shards import export_shards
from data_engine.sample.corpus import load_udhr
from data_engine.tokenizer import QWEN_EOD_ID, identity
from trainer.proxy import (
    PRESETS,
    build_model,
    load_shards,
    proxy_config,
    train_proxy,
    training_samples,
    validation_windows,
)

LANGS = ("eng", "ind", "tha", "vie")
SPLIT = "80,20,0"


@pytest.fixture(scope="module")
def udhr_lake(spark, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """docs_curated = the UDHR paragraphs of four languages, exported as stage `proxy`."""
    root = tmp_path_factory.mktemp("proxy")
    lake_dir = root / "lake"
    rows = [(f"{lang}-{i:03d}", lang, para) for lang in LANGS
            for i, para in enumerate(p for section in load_udhr(lang) for p in section)]
    lake.write_table(spark.createDataFrame(rows, "doc_id string, lang string, text string"), str(lake_dir),
                     "docs_curated", mode="error")
    export_shards(spark, str(lake_dir), str(root / "shards"), "proxy")
    return lake_dir


def cfg_for(**overrides: Any):
    return proxy_config("tiny", {"split": SPLIT, **overrides})


def shard_docs(prefix: str) -> list[np.ndarray]:
    """A shard's documents as megatron-core reads them."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    ds = IndexedDataset(prefix)
    return [np.asarray(ds[i], dtype=np.int64) for i in range(len(ds))]


def megatron_bounds(docs: int, split: str) -> list[tuple[int, int]]:
    """Document [begin, end) of train, validation, test as megatron-core's dataset builder cuts them."""
    from megatron.core.datasets.blended_megatron_dataset_config import (
        convert_split_vector_to_split_matrix,
        parse_and_normalize_split,
    )

    matrix = convert_split_vector_to_split_matrix(parse_and_normalize_split(split))
    return [(int(round(m[0] * docs)), int(round(m[1] * docs))) if m else (0, 0) for m in matrix]


def manifest_prefixes(lake_dir: Path, lang: str) -> list[str]:
    rows = lake.read_arrow(str(lake_dir), "shard_manifest").to_pylist()
    return sorted(r["prefix"] for r in rows if r["stage"] == "proxy" and r["lang"] == lang)


def strip(result) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(result).items() if k != "seconds"}


def test_same_seed_same_losses_other_seed_other_losses(udhr_lake: Path):
    data = load_shards(udhr_lake, "proxy", split=SPLIT)
    cfg = cfg_for(steps=12)
    weights = {"ind": 0.5, "tha": 0.3, "vie": 0.2}
    first, second = train_proxy(data, weights, cfg), train_proxy(data, weights, cfg)
    assert strip(first) == strip(second)
    assert first.steps == 12 and first.tokens == 12 * cfg.global_batch_size * cfg.seq_length
    other = train_proxy(data, weights, dataclasses.replace(cfg, seed=cfg.seed + 1))
    assert other.val_loss != first.val_loss


def test_weight_zero_languages_are_never_sampled_but_get_a_validation_loss(udhr_lake: Path):
    data = load_shards(udhr_lake, "proxy", split=SPLIT)
    cfg = cfg_for(steps=6)
    result = train_proxy(data, {"ind": 0.75, "vie": 0.25, "tha": 0.0}, cfg)  # eng not named: weight 0 too
    assert set(result.val_loss) == set(LANGS)
    assert all(math.isfinite(v) and v > 0 for v in result.val_loss.values())
    draws = Counter()
    samples = training_samples(data, {"ind": 0.75, "vie": 0.25, "tha": 0.0}, cfg)
    for _ in range(100):
        draws.update(next(samples)[0])
    assert set(draws) == {"ind", "vie"}
    n = sum(draws.values())  # 800 draws: a binomial sd of about 0.015 around 0.75
    assert abs(draws["ind"] / n - 0.75) < 0.06


def test_training_on_a_language_lowers_its_validation_loss_below_the_initial_one(udhr_lake: Path):
    import torch
    import torch.nn.functional as F

    data = load_shards(udhr_lake, "proxy", split=SPLIT)
    cfg = cfg_for(steps=40)
    # The compact vocabulary, from the shards as megatron reads them: every id of the stage, ranked.
    ids = np.unique(np.concatenate([d for lang in LANGS for p in manifest_prefixes(udhr_lake, lang)
                                    for d in shard_docs(p)]))
    rank = {int(t): i for i, t in enumerate(ids)}
    model = build_model(cfg, len(ids)).eval()
    windows = validation_windows(data, cfg)["ind"]
    with torch.no_grad():
        nll = count = 0
        for w in windows:
            x = torch.tensor([[rank[int(t)] for t in w]])
            logits = model(input_ids=x[:, :-1]).logits
            nll += float(F.cross_entropy(logits[0], x[0, 1:], reduction="sum"))
            count += len(w) - 1
    init_loss = nll / count
    assert abs(init_loss - math.log(len(ids))) < 0.5  # a random init is close to uniform

    untrained = train_proxy(data, {"ind": 1.0}, dataclasses.replace(cfg, steps=0))
    assert untrained.val_loss["ind"] == pytest.approx(init_loss, abs=1e-4)
    trained = train_proxy(data, {"ind": 1.0}, cfg)
    assert trained.val_loss["ind"] < init_loss - 1.0
    assert trained.train_loss < init_loss - 1.0


# --- the split, on shards whose token ids name their document -----------------------------------


def write_named_shard(prefix: Path, first_id: int, docs: int, rng: np.random.Generator) -> dict[str, Any]:
    """Document d holds only the id first_id + d (and the EOD); returns its manifest row."""
    import xxhash
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    prefix.parent.mkdir(parents=True, exist_ok=True)
    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=np.int32)
    tokens = 0
    for d in range(docs):
        doc = np.append(np.full(int(rng.integers(5, 90)), first_id + d), QWEN_EOD_ID).astype(np.int32)
        builder.add_document(doc, [len(doc)])
        tokens += len(doc)
    builder.finalize(f"{prefix}.idx")
    tok = identity("qwen2.5")
    return {"stage": "proxy", "lang": prefix.parent.name, "prefix": str(prefix), "docs": docs, "tokens": tokens,
            "checksum": xxhash.xxh3_128_hexdigest(Path(f"{prefix}.bin").read_bytes()),
            "source_table": "docs_curated", "source_version": 0, "tokenizer": tok.name,
            "tokenizer_digest": tok.digest, "vocab_size": tok.vocab_size, "eod_id": tok.eod_id, "dtype": "int32"}


@pytest.fixture
def named_lake(tmp_path: Path, write_manifest) -> Path:
    rng = np.random.default_rng(7)
    rows = [write_named_shard(tmp_path / "shards" / "ind" / "a_text_document", 1000, 37, rng),
            write_named_shard(tmp_path / "shards" / "ind" / "b_text_document", 2000, 23, rng),
            write_named_shard(tmp_path / "shards" / "vie" / "a_text_document", 3000, 41, rng)]
    write_manifest(tmp_path / "lake", rows)
    return tmp_path / "lake"


@pytest.mark.parametrize("split", ["80,20,0", "70,20,10"])
def test_validation_windows_hold_only_validation_documents(named_lake: Path, split: str):
    data = load_shards(named_lake, "proxy", split=split)
    cfg = proxy_config("tiny", {"split": split, "seq_length": 16, "micro_batch_size": 4, "global_batch_size": 4,
                                "val_batches": 3})
    part_ids: dict[str, dict[str, set[int]]] = {}
    val_stream: dict[str, np.ndarray] = {}
    for lang in ("ind", "vie"):
        part_ids[lang] = {"train": set(), "validation": set()}
        pieces = []
        for prefix in manifest_prefixes(named_lake, lang):
            docs = shard_docs(prefix)
            (t0, t1), (v0, v1), _ = megatron_bounds(len(docs), split)
            part_ids[lang]["train"] |= {int(d[0]) for d in docs[t0:t1]}
            part_ids[lang]["validation"] |= {int(d[0]) for d in docs[v0:v1]}
            pieces += docs[v0:v1]
        val_stream[lang] = np.concatenate(pieces)

    windows = validation_windows(data, cfg)
    for lang, ws in windows.items():
        assert len(ws) == cfg.val_batches * cfg.micro_batch_size
        seen = set()
        for w in ws:
            assert len(w) == cfg.seq_length + 1
            ids = set(w.tolist()) - {QWEN_EOD_ID}
            assert ids <= part_ids[lang]["validation"], (lang, ids - part_ids[lang]["validation"])
            # a contiguous piece of the validation documents, in shard order
            assert w.astype(np.int64).tobytes() in val_stream[lang].tobytes()
            seen |= ids
        assert len(seen) > len(part_ids[lang]["validation"]) // 2  # spread over the documents, not one corner

    samples = training_samples(data, {"ind": 0.5, "vie": 0.5}, cfg)
    for _ in range(50):
        langs, batch = next(samples)
        for lang, w in zip(langs, batch, strict=True):
            assert set(w.tolist()) - {QWEN_EOD_ID} <= part_ids[lang]["train"]


def test_a_short_validation_part_gives_one_window_of_all_its_tokens(named_lake: Path):
    data = load_shards(named_lake, "proxy", split="80,20,0")
    cfg = proxy_config("tiny", {"split": "80,20,0", "seq_length": 4096})
    for lang, ws in validation_windows(data, cfg).items():
        total = sum(len(shard_docs(p)[i]) for p in manifest_prefixes(named_lake, lang)
                    for i in range(*megatron_bounds(len(shard_docs(p)), "80,20,0")[1]))
        assert [len(w) for w in ws] == [total], lang


# --- config -------------------------------------------------------------------------------------


def test_presets_and_config_errors(named_lake: Path):
    r = PRESETS["regmix"]
    assert (r.num_layers, r.hidden_size, r.num_attention_heads, r.intermediate_size) == (2, 256, 8, 512)
    assert (r.seq_length, r.global_batch_size, r.steps, r.lr, r.warmup_steps) == (2048, 512, 1000, 4e-4, 100)
    assert (r.beta1, r.beta2, r.weight_decay, r.clip_grad, r.compact_vocab) == (0.9, 0.95, 0.1, 1.0, False)
    small = build_model(r, vocab_size=8)
    non_embedding = sum(p.numel() for n, p in small.named_parameters()
                        if "embed_tokens" not in n and "lm_head" not in n)
    assert 0.9e6 < non_embedding < 1.5e6  # RegMix's "1M" proxy

    with pytest.raises(ConfigError, match="preset 'huge'"):
        proxy_config("huge")
    with pytest.raises(ConfigError, match="unknown key"):
        proxy_config("tiny", {"layers": 3})
    with pytest.raises(ConfigError, match="multiple of num_attention_heads"):
        proxy_config("tiny", {"hidden_size": 66})
    with pytest.raises(ConfigError, match="multiple of micro_batch_size"):
        proxy_config("tiny", {"global_batch_size": 12})
    with pytest.raises(ConfigError, match="validation"):
        proxy_config("tiny", {"split": "100,0,0"})
    data = load_shards(named_lake, "proxy")
    with pytest.raises(ConfigError, match="without shards in the stage.*'tha'"):
        train_proxy(data, {"tha": 1.0}, PRESETS["tiny"])
    with pytest.raises(ConfigError, match="no positive weight"):
        train_proxy(data, {"ind": 0.0}, PRESETS["tiny"])
