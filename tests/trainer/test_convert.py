"""HF Qwen2 → NeMo → HF on a tiny random model, with real NeMo, on the CPU.

The model is built from a `transformers.Qwen2Config` (2 layers, hidden 64, 4 heads, 2 KV heads,
ffn 128, vocab 1024, max_position_embeddings 131,072, fp32) with every norm and bias random, so
that a norm left at 1.0 (NeMo's import without transformer_engine) shows; it is saved in several
safetensors shards with the bundled Qwen tokenizer. NeMo starts once: one subprocess runs the
import and export jobs' `main()`, NeMo's own forward pass on the imported checkpoint, and NeMo's
stock importer on the same directory; everything else compares files in this process.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from data_engine.errors import SailyardError

REPO = Path(__file__).resolve().parents[2]
SEQ_LENGTH = 128
LAYERS, HIDDEN, HEADS, GROUPS, FFN, VOCAB = 2, 64, 4, 2, 128, 1024
HEAD_DIM = HIDDEN // HEADS
TOKENS = [[1, 2, 3, 500, 77, 1023, 0, 9, 64, 128], [1000, 5, 5, 5, 300, 301, 302, 17, 18, 19]]
EXPANSION = {"old_layers": 1, "new_layers": 2, "new_layer_indices": [1]}  # as `sailyard expand` writes

DRIVER = r'''
import json, sys
from pathlib import Path

def main():
    args = json.loads(sys.argv[1])
    from jobs import export_hf, import_hf
    codes = {"import": import_hf.main(args["import"]), "export": export_hf.main(args["export"]),
             "export_bad_base": export_hf.main(args["export_bad_base"])}
    import torch
    from trainer import convert
    from trainer.pretrain import stdout_to_stderr
    with stdout_to_stderr():
        llm = convert._prepare_nemo()
        ckpt = Path(args["checkpoint"])
        model, _ = llm.Qwen2Model.exporter(convert.CONNECTOR, ckpt).nemo_load(ckpt)  # NeMo's own loader
        ids = torch.tensor(args["tokens"])
        module = model.module.eval()
        with torch.no_grad():
            logits = module(input_ids=ids, position_ids=torch.arange(ids.shape[1]).expand_as(ids),
                            attention_mask=None)
        torch.save(logits, args["nemo_logits"])
        # NeMo's stock importer, as the notes describe it: norms left at 1.0 without transformer_engine
        cfg = convert.nemo_qwen2_config(Path(args["hf"]), seq_length=64)
        llm.import_ckpt(model=llm.Qwen2Model(cfg), source="hf://" + args["hf"], output_path=args["stock"])
    Path(args["codes"]).write_text(json.dumps(codes))

if __name__ == "__main__":
    main()
'''


def build_tiny_qwen2(out: Path, *, seed: int = 0) -> Any:
    """Save a random tiny Qwen2 (norms and biases random too) with a tokenizer; return the model."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from data_engine.tokenizer import tokenizer_dir

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
                      num_attention_heads=HEADS, num_key_value_heads=GROUPS, max_position_embeddings=131072,
                      tie_word_embeddings=False, rope_theta=1e6, bos_token_id=151643, eos_token_id=151645,
                      dtype="float32")
    model = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.copy_(torch.rand_like(param) + 0.5)
            elif name.endswith(".bias"):
                param.normal_()
    model.save_pretrained(out, max_shard_size="200KB")
    for path in tokenizer_dir("qwen2.5").iterdir():
        shutil.copy(path, out)
    return model


def read_safetensors(root: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for path in sorted(root.glob("*.safetensors")):
        out.update(load_file(path))
    return out


def read_checkpoint(ckpt: Path) -> dict[str, torch.Tensor]:
    """Every model tensor of a NeMo checkpoint, read with torch.distributed.checkpoint alone."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    reader = dcp.FileSystemReader(str(ckpt / "weights"))
    meta = reader.read_metadata().state_dict_metadata
    state = {k: torch.empty(v.size, dtype=v.properties.dtype) for k, v in meta.items()
             if k.startswith("module.") and isinstance(v, TensorStorageMetadata)}
    dcp.load(state, storage_reader=reader, no_dist=True)
    return {k.removeprefix("module."): v for k, v in state.items()}


@pytest.fixture(scope="module")
def hf(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("convert")
    model_dir = root / "hf"
    model = build_tiny_qwen2(model_dir)
    (model_dir / "expansion.json").write_text(json.dumps(EXPANSION), encoding="utf-8")
    with torch.no_grad():
        logits = model(torch.tensor(TOKENS)).logits
    return {"root": root, "dir": model_dir, "model": model, "logits": logits}


@pytest.fixture(scope="module")
def nemo(hf: dict[str, Any]) -> dict[str, Any]:
    """One NeMo process: import, export, a refused export, NeMo's forward, the stock import."""
    root = hf["root"]
    other = root / "other_model"  # a base config that is not this model
    other.mkdir()
    cfg = json.loads((hf["dir"] / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**cfg, "hidden_size": 128, "num_hidden_layers": 4}))
    paths = {k: root / k for k in ("nemo", "hf_out", "hf_refused", "stock")}
    args = {
        "import": ["--model", str(hf["dir"]), "--out", str(paths["nemo"]), "--seq-length", str(SEQ_LENGTH)],
        "export": ["--checkpoint", str(paths["nemo"]), "--out", str(paths["hf_out"])],
        "export_bad_base": ["--checkpoint", str(paths["nemo"]), "--out", str(paths["hf_refused"]),
                            "--base", str(other)],
        "checkpoint": str(paths["nemo"]), "tokens": TOKENS, "hf": str(hf["dir"]), "stock": str(paths["stock"]),
        "nemo_logits": str(root / "nemo_logits.pt"), "codes": str(root / "codes.json"),
    }
    script = root / "driver.py"
    script.write_text(DRIVER, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "SAILYARD_PARENT_RUN_ID")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, str(script), json.dumps(args)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 3, f"stdout should hold the three job summaries only, got: {proc.stdout[-2000:]}"
    summaries = dict(zip(("import", "export", "export_bad_base"), map(json.loads, lines), strict=True))
    return {**paths, "summaries": summaries, "codes": json.loads(Path(args["codes"]).read_text()),
            "nemo_logits": torch.load(args["nemo_logits"])}


# --- the import -------------------------------------------------------------------------------


def test_import_uses_the_training_sequence_length(nemo: dict[str, Any]) -> None:
    summary = nemo["summaries"]["import"]
    assert nemo["codes"]["import"] == 0 and summary["status"] == "ok"
    # what training reads back: the checkpoint's context, not the model's 131,072 positions
    context = yaml.safe_load((nemo["nemo"] / "context" / "model.yaml").read_text())
    assert context["config"]["seq_length"] == SEQ_LENGTH
    assert context["config"]["num_layers"] == LAYERS
    assert summary["seq_length"] == SEQ_LENGTH
    # NeMo's stock importer, for contrast, ignores the config it is handed (seq_length 64 in the
    # driver) and takes max_position_embeddings
    stock = yaml.safe_load((nemo["stock"] / "context" / "model.yaml").read_text())
    assert stock["config"]["seq_length"] == 131072


def test_import_record(hf: dict[str, Any], nemo: dict[str, Any]) -> None:
    record = json.loads((nemo["nemo"] / "sailyard_import.json").read_text())
    weight_files = sorted(p.name for p in hf["dir"].iterdir() if "safetensors" in p.name)
    assert len(weight_files) > 2  # sharded, with an index
    assert record["files"] == {name: hashlib.sha256((hf["dir"] / name).read_bytes()).hexdigest()
                               for name in [*weight_files, "config.json"]}
    assert record["source"] == str(hf["dir"])
    assert record["expansion"] == EXPANSION
    assert record["hf_config"] == json.loads((hf["dir"] / "config.json").read_text())
    nc = record["nemo_config"]
    assert (nc["num_layers"], nc["hidden_size"], nc["ffn_hidden_size"], nc["num_attention_heads"],
            nc["num_query_groups"], nc["seq_length"], nc["vocab_size"]) == (LAYERS, HIDDEN, FFN, HEADS, GROUPS,
                                                                           SEQ_LENGTH, VOCAB)
    assert nc["share_embeddings_and_output_weights"] is False and nc["params_dtype"] == "float32"
    # every HF tensor was compared: 12 per layer, embedding, final norm, lm_head
    assert record["accounting"]["hf_tensors"] == 12 * LAYERS + 3
    assert record["accounting"]["elements"] == sum(p.numel() for p in hf["model"].parameters())


def test_checkpoint_holds_the_hf_norms_and_fused_weights(hf: dict[str, Any], nemo: dict[str, Any]) -> None:
    ckpt, src = read_checkpoint(nemo["nemo"]), read_safetensors(hf["dir"])
    for i in range(LAYERS):
        layer = f"model.layers.{i}."
        assert torch.equal(ckpt["decoder.layers.self_attention.linear_qkv.layer_norm_weight"][i],
                           src[layer + "input_layernorm.weight"])
        assert torch.equal(ckpt["decoder.layers.mlp.linear_fc1.layer_norm_weight"][i],
                           src[layer + "post_attention_layernorm.weight"])
        assert torch.equal(ckpt["decoder.layers.mlp.linear_fc1.weight"][i],
                           torch.cat([src[layer + "mlp.gate_proj.weight"], src[layer + "mlp.up_proj.weight"]]))
        # Megatron's QKV: per KV group, its query heads, then its key head, then its value head
        q, k, v = (src[layer + f"self_attn.{p}_proj.weight"] for p in "qkv")
        per = HEADS // GROUPS
        blocks = []
        for g in range(GROUPS):
            blocks += [q[g * per * HEAD_DIM:(g + 1) * per * HEAD_DIM], k[g * HEAD_DIM:(g + 1) * HEAD_DIM],
                       v[g * HEAD_DIM:(g + 1) * HEAD_DIM]]
        assert torch.equal(ckpt["decoder.layers.self_attention.linear_qkv.weight"][i], torch.cat(blocks))
    assert torch.equal(ckpt["decoder.final_layernorm.weight"], src["model.norm.weight"])


def test_nemo_forward_matches_hf(hf: dict[str, Any], nemo: dict[str, Any]) -> None:
    assert nemo["nemo_logits"].shape == hf["logits"].shape
    assert (nemo["nemo_logits"] - hf["logits"]).abs().max().item() <= 1e-5


# --- the export -------------------------------------------------------------------------------


def test_round_trip_logits(hf: dict[str, Any], nemo: dict[str, Any]) -> None:
    from transformers import AutoModelForCausalLM

    assert nemo["codes"]["export"] == 0 and nemo["summaries"]["export"]["status"] == "ok"
    back = AutoModelForCausalLM.from_pretrained(nemo["hf_out"]).eval()
    with torch.no_grad():
        logits = back(torch.tensor(TOKENS)).logits
    assert (logits - hf["logits"]).abs().max().item() <= 1e-5


def test_round_trip_every_tensor_and_config_field(hf: dict[str, Any], nemo: dict[str, Any]) -> None:
    before, after = read_safetensors(hf["dir"]), read_safetensors(nemo["hf_out"])
    assert sorted(after) == sorted(before)
    assert [k for k in before if not torch.equal(before[k], after[k]) or before[k].dtype != after[k].dtype] == []
    config_in = json.loads((hf["dir"] / "config.json").read_text())
    config_out = json.loads((nemo["hf_out"] / "config.json").read_text())
    assert config_out == config_in  # max_position_embeddings 131072 and bos/eos included
    generation = json.loads((nemo["hf_out"] / "generation_config.json").read_text())
    assert (generation["bos_token_id"], generation["eos_token_id"]) == (151643, 151645)
    record = json.loads((nemo["hf_out"] / "sailyard_export.json").read_text())
    assert record["checkpoint"] == str(nemo["nemo"]) and record["base"].endswith("sailyard_import.json")


def test_export_refuses_a_base_of_another_model(nemo: dict[str, Any]) -> None:
    summary = nemo["summaries"]["export_bad_base"]
    assert nemo["codes"]["export_bad_base"] == 2 and summary["status"] == "error"
    assert "hidden_size 128 there, 64 in the checkpoint" in summary["error"]
    assert "num_hidden_layers 4 there, 2 in the checkpoint" in summary["error"]
    assert not nemo["hf_refused"].exists()


# --- the accounting ---------------------------------------------------------------------------


def test_stock_import_trap_is_caught(hf: dict[str, Any], nemo: dict[str, Any]) -> None:
    from trainer.convert import verify

    stock = read_checkpoint(nemo["stock"])  # NeMo's own importer without transformer_engine
    assert torch.all(stock["decoder.layers.self_attention.linear_qkv.layer_norm_weight"] == 1.0)
    with pytest.raises(SailyardError) as err:
        verify(hf["dir"], nemo["stock"])
    for i in range(LAYERS):
        assert f"model.layers.{i}.input_layernorm.weight" in str(err.value)
        assert f"model.layers.{i}.post_attention_layernorm.weight" in str(err.value)
    assert "model.norm.weight" not in str(err.value)  # the final norm does land


def test_account_names_a_reset_norm(hf: dict[str, Any], nemo: dict[str, Any]) -> None:
    from trainer.convert import Layout, account

    layout = Layout.from_hf_config(json.loads((hf["dir"] / "config.json").read_text()))
    src, ckpt = read_safetensors(hf["dir"]), read_checkpoint(nemo["nemo"])
    assert account(src, ckpt, layout).hf_tensors == len(src)
    norms = ckpt["decoder.layers.mlp.linear_fc1.layer_norm_weight"].clone()
    norms[1] = 1.0
    with pytest.raises(SailyardError, match=r"1 HF tensors not equal.*model\.layers\.1\.post_attention_layernorm"):
        account(src, {**ckpt, "decoder.layers.mlp.linear_fc1.layer_norm_weight": norms}, layout)


def test_account_names_unused_missing_and_unset_tensors(hf: dict[str, Any], nemo: dict[str, Any]) -> None:
    from trainer.convert import Layout, account

    layout = Layout.from_hf_config(json.loads((hf["dir"] / "config.json").read_text()))
    src, ckpt = read_safetensors(hf["dir"]), read_checkpoint(nemo["nemo"])
    extra = {**src, "model.layers.0.self_attn.q_norm.weight": torch.ones(HEAD_DIM)}
    with pytest.raises(SailyardError, match=r"1 HF tensors that no NeMo parameter takes: model\.layers\.0\.self_attn"):
        account(extra, ckpt, layout)
    missing = {k: v for k, v in src.items() if k != "model.layers.1.mlp.up_proj.weight"}
    with pytest.raises(SailyardError, match=r"1 HF tensors missing: model\.layers\.1\.mlp\.up_proj\.weight"):
        account(missing, ckpt, layout)
    unset = {**ckpt, "decoder.layers.self_attention.q_layernorm.weight": torch.ones(LAYERS, HEAD_DIM)}
    with pytest.raises(SailyardError, match=r"1 NeMo tensors that no HF tensor sets: decoder\.layers\.self_att"):
        account(src, unset, layout)
    # an HF checkpoint's recomputed RoPE buffer is no weight: allowed, and reported
    derived = {**src, "model.layers.0.self_attn.rotary_emb.inv_freq": torch.ones(HEAD_DIM // 2)}
    assert account(derived, ckpt, layout).derived == ("model.layers.0.self_attn.rotary_emb.inv_freq",)


# --- refusals before NeMo starts ----------------------------------------------------------------


def _import_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    from jobs import import_hf

    code = import_hf.main(list(args))
    return code, json.loads(capsys.readouterr().out.splitlines()[-1])


@pytest.mark.parametrize("change, message", [
    ({"model_type": "llama"}, "only Qwen2 models"),
    ({"use_sliding_window": True}, "sliding-window attention"),
    ({"rope_scaling": {"type": "yarn", "factor": 4.0}}, "rope_scaling"),
    ({"vocab_size": 1000}, "not a multiple of 128"),
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"max_position_embeddings": 64}, "exceeds the model's max_position_embeddings (64)"),
])
def test_import_refuses_what_nemo_cannot_hold(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              change: dict[str, Any], message: str) -> None:
    model_dir = tmp_path / "hf"
    model_dir.mkdir()
    cfg = {"model_type": "qwen2", "hidden_size": HIDDEN, "num_attention_heads": HEADS, "num_key_value_heads": GROUPS,
           "num_hidden_layers": LAYERS, "intermediate_size": FFN, "vocab_size": VOCAB,
           "max_position_embeddings": 131072, "hidden_act": "silu", "rope_scaling": None}
    (model_dir / "config.json").write_text(json.dumps({**cfg, **change}))
    code, summary = _import_main(capsys, "--model", str(model_dir), "--out", str(tmp_path / "nemo"),
                                 "--seq-length", str(SEQ_LENGTH))
    assert code == 2 and summary["status"] == "error"
    assert message in summary["error"]
    assert not (tmp_path / "nemo").exists()


def test_import_refuses_missing_files_and_an_existing_out(hf: dict[str, Any], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    bare = tmp_path / "no_tokenizer"
    bare.mkdir()
    shutil.copy(hf["dir"] / "config.json", bare)
    code, summary = _import_main(capsys, "--model", str(bare), "--out", str(tmp_path / "a"))
    assert code == 2 and "no tokenizer" in summary["error"]
    shutil.copy(hf["dir"] / "tokenizer.json", bare)
    code, summary = _import_main(capsys, "--model", str(bare), "--out", str(tmp_path / "a"))
    assert code == 2 and "no model.safetensors" in summary["error"]
    (tmp_path / "taken").mkdir()
    code, summary = _import_main(capsys, "--model", str(hf["dir"]), "--out", str(tmp_path / "taken"))
    assert code == 2 and "exists" in summary["error"] and "--overwrite" in summary["error"]
    code, summary = _import_main(capsys, "--model", str(hf["dir"]), "--out", str(hf["dir"].parent), "--overwrite")
    assert code == 2 and "contains the input" in summary["error"]


def test_export_refuses_a_directory_without_checkpoint(hf: dict[str, Any], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from jobs import export_hf

    code = export_hf.main(["--checkpoint", str(hf["dir"]), "--out", str(tmp_path / "out")])
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert code == 2 and "neither a NeMo checkpoint" in summary["error"]


def test_a_failed_conversion_leaves_out_as_it_was(tmp_path: Path) -> None:
    from trainer.convert import _staged

    out = tmp_path / "out"
    out.mkdir()
    (out / "old").write_text("previous checkpoint")
    with pytest.raises(SailyardError), _staged(out) as staging:
        (staging / "half").mkdir(parents=True)
        raise SailyardError("verification failed")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (out / "old").is_file()
    with _staged(out) as staging:
        staging.mkdir()
        (staging / "new").write_text("checked checkpoint")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and [p.name for p in out.iterdir()] == ["new"]
