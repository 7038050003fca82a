"""LlamaPro expansion on real tiny transformers models: the expanded model computes what the original did.

Truth comes from outside `trainer.expand`: the logits and greedy KV-cache generations of the
unexpanded model, a re-implementation of llama_pro.py's loop, parameter counts from the shapes of
the Qwen2.5 checkpoints, and sha256 computed here.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from data_engine.errors import ConfigError
from trainer.expand import (
    LayerSource,
    copies_after,
    count_parameters,
    expand,
    expand_config,
    expansion_map,
    new_layer_indices,
    parse_size,
)

VOCAB = 1000


def qwen2_config(**kw):
    from transformers import Qwen2Config

    base = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False)
    base.update(kw)
    return Qwen2Config(**base)


def build(path: Path, config, *, dtype=torch.float32, seed: int = 0, **save_kw) -> Path:
    """A random model whose biases and norms are random too (a copied-wrong norm must show)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.copy_(torch.randn_like(p) * 0.1 + (1.0 if "norm" in name else 0.0))
    model.to(dtype).save_pretrained(path, **save_kw)
    return path


def load(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype="auto").eval()


def tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def llamapro_positions(layers: int, num_expand: int) -> list[int]:
    """Megatron-Sailor2 tools/llama_pro.py's loop: the output indices of the cloned layers."""
    assert layers % num_expand == 0
    split, cnt, clones = layers // num_expand, 0, []
    for i in range(layers):
        cnt += 1
        if (i + 1) % split == 0:
            clones.append(cnt)
            cnt += 1
    return clones


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {
        "fp32": build(root / "fp32", qwen2_config()),
        "tied": build(root / "tied", qwen2_config(tie_word_embeddings=True), seed=1),
        "bf16": build(root / "bf16", qwen2_config(), dtype=torch.bfloat16, seed=2),
        "sharded": build(root / "sharded", qwen2_config(), seed=3, max_shard_size="100KB"),
    }


PROMPT = torch.tensor([[11, 250, 7, 999, 42, 3, 77, 512, 1, 640]])


def assert_same_model(src: Path, out: Path, *, atol: float) -> None:
    a, b = load(src), load(out)
    ids = torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        la, lb = a(ids).logits, b(ids).logits
    assert la.dtype == lb.dtype
    torch.testing.assert_close(lb.float(), la.float(), atol=atol, rtol=0)
    ga = a.generate(PROMPT, max_new_tokens=20, min_new_tokens=20, do_sample=False, use_cache=True, pad_token_id=0)
    gb = b.generate(PROMPT, max_new_tokens=20, min_new_tokens=20, do_sample=False, use_cache=True, pad_token_id=0)
    assert ga.shape[1] == PROMPT.shape[1] + 20
    assert torch.equal(ga, gb)


def assert_layers_placed(src: Path, out: Path, old: int, new: int, new_idx: list[int]) -> None:
    """Read the tensors: originals in order, each new layer its predecessor with o_proj/down_proj zero."""
    t_in, t_out = tensors(src), tensors(out)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_hidden_layers"] == new
    src_of, i = [], -1
    for j in range(new):
        if j not in new_idx:
            i += 1
        src_of.append(i)
    assert i == old - 1
    suffixes = sorted(k.split(".", 3)[3] for k in t_in if k.startswith("model.layers.0."))
    assert any("o_proj" in s for s in suffixes) and any("q_proj.bias" in s for s in suffixes)
    for j in range(new):
        for s in suffixes:
            got, ref = t_out[f"model.layers.{j}.{s}"], t_in[f"model.layers.{src_of[j]}.{s}"]
            assert got.dtype == ref.dtype
            if j in new_idx and ("o_proj" in s or "down_proj" in s):
                assert torch.count_nonzero(got) == 0 and got.shape == ref.shape, (j, s)
            else:
                assert torch.equal(got, ref), (j, s)
    for k in t_in:
        if not k.startswith("model.layers."):
            assert torch.equal(t_out[k], t_in[k])
    assert not any(k.startswith(f"model.layers.{new}.") for k in t_out)


# ---- the placement rule ----------------------------------------------------------------------------

@pytest.mark.parametrize(("old", "new", "expected"), [
    (48, 64, list(range(3, 64, 4))),  # Qwen2.5-14B → Sailor2-20B
    (28, 32, [7, 15, 23, 31]),  # Qwen2.5-7B → Sailor2-8B
    (24, 48, list(range(1, 48, 2))),  # Qwen2.5-0.5B → Sailor2-1B
])
def test_sailor2_shapes_are_llamapros(old, new, expected):
    mapping = expansion_map(old, new)
    assert new_layer_indices(mapping) == expected == llamapro_positions(old, new - old)
    assert [s.source for s in mapping if not s.new] == list(range(old))


def test_every_divisible_case_is_llamapros():
    for old in range(1, 65):
        for e in range(1, old + 1):
            if old % e == 0:
                assert new_layer_indices(expansion_map(old, old + e)) == llamapro_positions(old, e), (old, e)


def test_non_divisible_spread():
    # 4 → 7: copies after original layers ceil(4/3)-1 = 1, ceil(8/3)-1 = 2, 3
    assert expansion_map(4, 7) == (LayerSource(0, False), LayerSource(1, False), LayerSource(1, True),
                                   LayerSource(2, False), LayerSource(2, True), LayerSource(3, False),
                                   LayerSource(3, True))
    assert new_layer_indices(expansion_map(4, 6)) == [2, 5]  # E = 2 divides 4: LlamaPro
    assert new_layer_indices(expansion_map(28, 33)) == [6, 13, 19, 26, 32]  # after 5, 11, 16, 22, 27
    for old in range(1, 41):
        for e in range(1, 2 * old + 3):
            m = expansion_map(old, old + e)
            assert len(m) == old + e and sum(s.new for s in m) == e
            assert [s.source for s in m if not s.new] == list(range(old))
            assert [s.source for s in m] == sorted(s.source for s in m)  # a copy sits right after its source
            assert m[-1] == LayerSource(old - 1, True)
            per_layer = [sum(1 for s in m if s.new and s.source == i) for i in range(old)]
            assert set(per_layer) <= {e // old, -(-e // old)}
            if e <= old:  # originals between consecutive copies: as even as integers allow
                copies = [j for j, s in enumerate(m) if s.new]
                gaps = [copies[0]] + [b - a - 1 for a, b in zip(copies, copies[1:], strict=False)]
                assert set(gaps) <= {old // e, -(-old // e)}, (old, e, gaps)


def test_placement_refusals():
    for old, new in [(4, 4), (4, 3), (4, 0)]:
        with pytest.raises(ConfigError, match="larger than"):
            copies_after(old, new)


# ---- parameter arithmetic on the real Qwen2.5 shapes -------------------------------------------------

QWEN25 = {  # hidden, layers, heads, kv heads, ffn, vocab, tied
    "0.5B": (896, 24, 14, 2, 4864, 151936, True),
    "7B": (3584, 28, 28, 4, 18944, 152064, False),
    "14B": (5120, 48, 40, 8, 13824, 152064, False),
}


def qwen25_config(name: str) -> dict:
    h, n, heads, kv, ffn, vocab, tied = QWEN25[name]
    return {"model_type": "qwen2", "hidden_size": h, "num_hidden_layers": n, "num_attention_heads": heads,
            "num_key_value_heads": kv, "intermediate_size": ffn, "vocab_size": vocab, "tie_word_embeddings": tied,
            "max_window_layers": n, "use_sliding_window": False, "sliding_window": 131072}


def own_count(name: str, layers: int, *, tied: bool | None = None) -> int:
    h, _, heads, kv, ffn, vocab, tied0 = QWEN25[name]
    d = h // heads
    q = (h * heads * d + heads * d)  # q_proj weight + bias
    kv_ = 2 * (h * kv * d + kv * d)  # k_proj, v_proj weights + biases
    o = heads * d * h  # o_proj, no bias
    mlp = h * ffn * 2 + ffn * h  # gate, up, down
    layer = q + kv_ + o + mlp + h + h  # input / post-attention RMSNorm
    emb = vocab * h * (1 if (tied0 if tied is None else tied) else 2)
    return emb + layers * layer + h


@pytest.mark.parametrize(("name", "to", "nominal", "tol"), [("7B", 32, 8e9, 0.1), ("14B", 64, 20e9, 0.05)])
def test_parameter_arithmetic_real_configs(name, to, nominal, tol):
    cfg = qwen25_config(name)
    assert count_parameters(cfg) == own_count(name, cfg["num_hidden_layers"])
    expanded = expand_config(cfg, expansion_map(cfg["num_hidden_layers"], to))
    n = count_parameters(expanded)
    assert n == own_count(name, to)
    assert abs(n - nominal) / nominal < tol, n


def test_parameter_arithmetic_half_b():
    cfg = qwen25_config("0.5B")
    assert count_parameters(cfg) == own_count("0.5B", 24) == 494_032_768  # Qwen2.5-0.5B: "0.49B"
    expanded = expand_config(cfg, expansion_map(24, 48))
    assert count_parameters(expanded) == own_count("0.5B", 48) == 851_929_984  # kept tied
    untied = dict(expanded, tie_word_embeddings=False)  # what Sailor2-1B is (988M)
    assert count_parameters(untied) == own_count("0.5B", 48, tied=False)
    assert abs(count_parameters(untied) - 1e9) / 1e9 < 0.02


def test_count_parameters_matches_real_models(models):
    for key in ("fp32", "tied"):
        cfg = json.loads((models[key] / "config.json").read_text())
        model = load(models[key])
        assert count_parameters(cfg) == sum(p.numel() for p in model.parameters())
    from transformers import AutoModelForCausalLM, LlamaConfig

    for bias in (False, True):
        lc = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, attention_bias=bias, mlp_bias=bias)
        model = AutoModelForCausalLM.from_config(lc)
        assert count_parameters(lc.to_dict()) == sum(p.numel() for p in model.parameters())


# ---- expansion of real checkpoints -------------------------------------------------------------------

@pytest.mark.parametrize(("key", "to", "new_idx"), [
    ("fp32", 8, [1, 3, 5, 7]),
    ("fp32", 6, [2, 5]),
    ("fp32", 7, [2, 4, 6]),
    ("tied", 7, [2, 4, 6]),
    ("bf16", 8, [1, 3, 5, 7]),
    ("bf16", 7, [2, 4, 6]),
    ("fp32", 11, [1, 3, 4, 6, 7, 9, 10]),  # E = 7 > L = 4: floor((i+1)*7/4) - floor(i*7/4) = 1, 2, 2, 2 copies
])
def test_expanded_model_is_the_same_function(models, tmp_path, key, to, new_idx):
    src, out = models[key], tmp_path / "out"
    rec = expand(src, to, out)
    assert list(rec.new_layer_indices) == new_idx
    assert_layers_placed(src, out, 4, to, new_idx)
    assert_same_model(src, out, atol=1e-5 if key != "bf16" else 0.0)
    model = load(out)
    assert model.config.num_hidden_layers == to and len(model.model.layers) == to
    assert next(model.parameters()).dtype == (torch.bfloat16 if key == "bf16" else torch.float32)
    names = set(tensors(out))
    if key == "tied":
        assert "lm_head.weight" not in names and model.config.tie_word_embeddings
    else:
        assert "lm_head.weight" in names
    h, ffn, kv = 64, 128, 32
    per_layer = (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * ffn + 2 * h
    assert rec.parameters_after - rec.parameters_before == (to - 4) * per_layer
    assert rec.parameters_after == sum(p.numel() for p in model.parameters())


def test_sharded_in_sharded_out(models, tmp_path):
    src = models["sharded"]
    in_index = json.loads((src / "model.safetensors.index.json").read_text())
    assert len(set(in_index["weight_map"].values())) > 3
    out = tmp_path / "out"
    limit = 150_000
    rec = expand(src, 6, out, max_shard_bytes=limit)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) == len(rec.shards) > 3 and not (out / "model.safetensors").exists()
    from safetensors import safe_open

    seen, total = {}, 0
    for f in files:
        with safe_open(str(out / f), framework="pt") as h:
            size = 0
            for name in h.keys():
                t = h.get_tensor(name)
                seen[name] = f
                size += t.numel() * t.element_size()
            total += size
            assert size <= limit or len(list(h.keys())) == 1
    assert seen == index["weight_map"]  # every tensor mapped, to the file that has it
    assert index["metadata"]["total_size"] == total
    assert len(seen) == len(in_index["weight_map"]) + 2 * len([k for k in seen if k.startswith("model.layers.0.")])
    assert_same_model(src, out, atol=1e-5)
    assert_layers_placed(src, out, 4, 6, [2, 5])


def test_single_output_file_when_it_fits(models, tmp_path):
    out = tmp_path / "out"
    rec = expand(models["sharded"], 8, out)
    assert rec.shards == ("model.safetensors",) and not (out / "model.safetensors.index.json").exists()
    assert_same_model(models["sharded"], out, atol=1e-5)


def test_sliding_window_layers_stay_the_same_layers(tmp_path):
    cfg = qwen2_config(use_sliding_window=True, sliding_window=6, max_window_layers=2)
    src = build(tmp_path / "swa", cfg, seed=4)
    raw = json.loads((src / "config.json").read_text())
    raw.pop("layer_types")  # real Qwen2.5 config.json files have none: derived from max_window_layers
    (src / "config.json").write_text(json.dumps(raw))
    # the window matters for these inputs: without it the model computes something else
    ids = torch.randint(0, VOCAB, (1, 24), generator=torch.Generator().manual_seed(1))
    full = tmp_path / "full"
    shutil.copytree(src, full)
    (full / "config.json").write_text(json.dumps(dict(raw, use_sliding_window=False)))
    with torch.no_grad():
        assert not torch.allclose(load(src)(ids).logits, load(full)(ids).logits, atol=1e-3)
    for to, mwl in [(8, 4), (7, 3)]:  # 4→7: layers 0, 1, 1c | 2, 2c, 3, 3c
        out = tmp_path / f"out{to}"
        expand(src, to, out)
        got = json.loads((out / "config.json").read_text())
        assert got["max_window_layers"] == mwl and "layer_types" not in got
        assert load(out).config.layer_types == ["full_attention"] * mwl + ["sliding_attention"] * (to - mwl)
        assert_same_model(src, out, atol=1e-5)
    # with layer_types written out (transformers ≥ 4.53 saves them) each layer takes its source's type
    raw["layer_types"] = ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]
    (src / "config.json").write_text(json.dumps(raw))
    out = tmp_path / "out_types"
    expand(src, 6, out)
    assert json.loads((out / "config.json").read_text())["layer_types"] == [
        "sliding_attention", "full_attention", "full_attention", "sliding_attention", "full_attention",
        "full_attention"]
    assert_same_model(src, out, atol=1e-5)


def test_llama_with_output_biases(tmp_path):
    from transformers import LlamaConfig

    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, attention_bias=True, mlp_bias=True)
    src = build(tmp_path / "llama", cfg, seed=5)
    out = tmp_path / "out"
    expand(src, 7, out)
    t = tensors(out)
    assert torch.count_nonzero(t["model.layers.2.self_attn.o_proj.bias"]) == 0
    assert torch.count_nonzero(t["model.layers.2.mlp.down_proj.bias"]) == 0
    assert_same_model(src, out, atol=1e-5)


def test_untie_embeddings(models, tmp_path):
    out = tmp_path / "out"
    rec = expand(models["tied"], 8, out, untie_embeddings=True)
    t = tensors(out)
    assert torch.equal(t["lm_head.weight"], t["model.embed_tokens.weight"])
    assert t["lm_head.weight"].data_ptr() != t["model.embed_tokens.weight"].data_ptr()
    assert not json.loads((out / "config.json").read_text())["tie_word_embeddings"]
    assert rec.untied and not rec.tied_embeddings
    assert_same_model(models["tied"], out, atol=1e-5)


def test_record_and_copied_files(models, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(models["sharded"], src)
    (src / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "BPE"}}')
    (src / "tokenizer_config.json").write_text('{"model_max_length": 4096}')
    (src / "pytorch_model.bin").write_bytes(b"old weights: never copied")
    out = tmp_path / "out"
    rec = expand(src, 6, out)
    got = json.loads((out / "expansion.json").read_text())
    assert got["old_layers"] == 4 and got["new_layers"] == 6
    assert got["new_layer_indices"] == [2, 5] and got["new_layer_sources"] == [1, 3]
    assert [x["source"] for x in got["layers"]] == [0, 1, 1, 2, 3, 3]
    assert got["source"] == str(src.resolve()) and "LlamaPro" in got["rule"]
    inputs = sorted(p.name for p in src.glob("model*.safetensors*"))
    assert sorted(got["input_sha256"]) == inputs
    for name in inputs:
        assert got["input_sha256"][name] == hashlib.sha256((src / name).read_bytes()).hexdigest()
    assert got["dtypes"] == ["F32"]
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (out / name).read_bytes() == (src / name).read_bytes()
    assert not (out / "pytorch_model.bin").exists()
    from transformers import GenerationConfig

    assert GenerationConfig.from_pretrained(out).to_dict() == GenerationConfig.from_pretrained(src).to_dict()
    assert set(rec.copied_files) == {"tokenizer.json", "tokenizer_config.json", "generation_config.json"}
    # expanding the expanded model keeps the first record and composes
    again = tmp_path / "again"
    rec2 = expand(out, 12, again)
    assert rec2.source_expansion["new_layer_indices"] == [2, 5]
    assert_same_model(src, again, atol=1e-5)
    assert not list(tmp_path.glob(".*partial*"))


MEMORY_PROBE = """
import sys, threading, time
from pathlib import Path
import torch
from safetensors.torch import load_file
from trainer.expand import expand

def anon():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024

def peak_of(fn):
    base, peak, done = anon(), [0], threading.Event()
    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], anon())
            time.sleep(0.001)
    th = threading.Thread(target=sample)
    th.start()
    try:
        kept = fn()
    finally:
        done.set()
        th.join()
    return max(peak[0], anon()) - base, kept

what, tiny, src, out = sys.argv[1:5]
expand(tiny, 5, out + "-warmup")  # every lazy import and first-use allocation happens here, not below
if what == "expand":
    grow, _ = peak_of(lambda: expand(src, 8, out, max_shard_bytes=8_000_000))
else:  # the control: holding the model once in memory, measured the same way
    grow, kept = peak_of(lambda: {k: v.clone() for k, v in load_file(src + "/model.safetensors").items()})
print(grow)
"""


def test_memory_stays_within_a_few_shards(models, tmp_path):
    """Peak anonymous memory of a fresh process expanding a 67 MB model with 8 MB shards, against loading it once."""
    import subprocess
    import sys

    cfg = qwen2_config(hidden_size=512, intermediate_size=2048, num_hidden_layers=4)
    src = build(tmp_path / "big", cfg, seed=6)
    size = (src / "model.safetensors").stat().st_size
    assert size > 60e6
    grow = {}
    for what in ("expand", "load"):
        res = subprocess.run([sys.executable, "-c", MEMORY_PROBE, what, str(models["fp32"]), str(src),
                              str(tmp_path / f"out-{what}")],
                             capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[2])
        assert res.returncode == 0, res.stderr[-2000:]
        grow[what] = int(res.stdout.strip().splitlines()[-1])
    print(f"peak anonymous growth: expand {grow['expand'] / 1e6:.1f} MB, loading once {grow['load'] / 1e6:.1f} MB,"
          f" model {size / 1e6:.1f} MB")
    assert grow["load"] > 0.9 * size  # the probe sees a whole model in memory when there is one
    assert grow["expand"] < 0.4 * size
    shards = json.loads((tmp_path / "out-expand" / "model.safetensors.index.json").read_text())["weight_map"]
    assert len(set(shards.values())) > 10


# ---- refusals and the job ------------------------------------------------------------------------

def test_refusals(models, tmp_path):
    src = models["fp32"]
    for to in (4, 3):
        with pytest.raises(ConfigError, match="larger than the model's 4 layers"):
            expand(src, to, tmp_path / "x")
    with pytest.raises(ConfigError, match="not a directory"):
        expand(tmp_path / "nope", 8, tmp_path / "x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        expand(tmp_path / "empty", 8, tmp_path / "x")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "a").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        expand(src, 8, busy)
    with pytest.raises(ConfigError, match="differ"):
        expand(src, 8, src)
    gpt = tmp_path / "gpt2"
    gpt.mkdir()
    (gpt / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2}))
    with pytest.raises(ConfigError, match="model_type 'gpt2'"):
        expand(gpt, 4, tmp_path / "x")
    nost = tmp_path / "nost"
    nost.mkdir()
    shutil.copy(src / "config.json", nost / "config.json")
    with pytest.raises(ConfigError, match="safetensors"):
        expand(nost, 8, tmp_path / "x")
    wrong = tmp_path / "wrong"
    shutil.copytree(src, wrong)
    raw = json.loads((wrong / "config.json").read_text())
    (wrong / "config.json").write_text(json.dumps(dict(raw, num_hidden_layers=5, layer_types=None)))
    with pytest.raises(ConfigError, match="do not belong together"):
        expand(wrong, 8, tmp_path / "x")
    empty_out = tmp_path / "empty_out"
    empty_out.mkdir()
    expand(src, 5, empty_out)  # an existing empty directory is fine
    assert (empty_out / "expansion.json").is_file()
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".*partial*"))
    for bad in ("lots", "0", "-1GB"):
        with pytest.raises(ConfigError):
            parse_size(bad)
    assert parse_size("2GB") == 2 * 10**9 and parse_size("100KiB") == 102400


def test_job(models, tmp_path, capsys):
    from jobs.expand import main

    out = tmp_path / "out"
    assert main(["--model", str(models["fp32"]), "--to-layers", "6", "--out", str(out),
                 "--max-shard-size", "50KB"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["status"] == "ok" and summary["job"] == "expand"
    assert summary["old_layers"] == 4 and summary["new_layers"] == 6 and summary["new_layer_indices"] == [2, 5]
    assert summary["parameters_after"] > summary["parameters_before"] > 0
    assert summary["out"] == str(out.resolve()) and summary["shards"] > 1 and "seconds" in summary
    assert main(["--model", str(models["fp32"]), "--to-layers", "4", "--out", str(tmp_path / "o2")]) == 2
    err = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert err["status"] == "error" and "larger than" in err["error"]
