"""The training tokenizer as NeMo wants it: a `TokenizerSpec` that travels inside the checkpoint.

NeMo's `AutoTokenizer` wraps a Hugging Face tokenizer directory and is registered with
`nemo.lightning.io.track_io`, which copies that directory into every checkpoint's `context/`; a
stage-2 run, an export or an evaluation then reads the exact tokenizer the weights were trained
with, not whatever sits in a cache at the time. The directory comes from
`data_engine.tokenizer`, the same files the shard exporter tokenised with, offline.
"""

from __future__ import annotations

from typing import Any

from data_engine.errors import ConfigError
from data_engine.tokenizer import identity, tokenizer_dir

#: Qwen2's padding token for training. Its Hugging Face config pads with `<|endoftext|>`, the
#: end-of-document token; Megatron's GPTDataset masks the loss wherever the label is the pad id and
#: writes 0 into the input there, so with pad = EOD every document boundary would be a hole: never
#: predicted, and read as token 0 (a "!") by the next document. `<|fim_pad|>` (151662) is a
#: special token that plain text never produces.
PAD_TOKEN = "<|fim_pad|>"


def build_tokenizer(name: str = "qwen2.5", *, vocab_size: int) -> Any:
    """A NeMo `AutoTokenizer` for `name` (see `data_engine.tokenizer.tokenizer_dir`).

    Args:
        name: "qwen2.5" (bundled) or a directory with tokenizer.json.
        vocab_size: the model's embedding rows; the tokenizer's ids must fit below it.

    Raises:
        ConfigError: the tokenizer's end-of-document id differs from the one the shards were
            written with, or its vocabulary does not fit the model.
    """
    from nemo.collections.common.tokenizers import AutoTokenizer

    want = identity(name)
    tok = AutoTokenizer(str(tokenizer_dir(name)), use_fast=True, pad_token=PAD_TOKEN)
    if tok.eod != want.eod_id:
        # Megatron's GPTDataset and loss masking use `eod`; it must be the id the exporter appended.
        raise ConfigError(f"tokenizer {name!r}: NeMo sees end-of-document id {tok.eod}, the exporter "
                          f"appends {want.eod_id}; fix eos_token in tokenizer_config.json")
    if tok.pad == tok.eod:
        raise ConfigError(f"tokenizer {name!r} pads with its end-of-document id {tok.eod}: Megatron would mask "
                          "every document end out of the loss")
    if tok.vocab_size > vocab_size:
        raise ConfigError(f"tokenizer {name!r} has {tok.vocab_size} tokens, more than "
                          f"model.vocab_size ({vocab_size})")
    return tok
