"""A Hugging Face causal LM scored exactly the way lm-evaluation-harness's HFLM scores it.

Scores are only comparable with published lm-eval numbers if every detail matches: which tokens
the continuation gets (trailing context spaces move into it; it is what `enc(ctx + cont)` adds
after `enc(ctx)`), which token stands in for an empty context (BOS, else EOS), how an over-long
request is cut (from the left, keeping `max_length + 1` tokens), and how a document is split into
rolling windows for perplexity (every token predicted exactly once, the first from the prefix
token). This module re-implements HFLM's `loglikelihood`, `loglikelihood_rolling` and
`generate_until` for a causal model (lm-eval 0.4.13, `lm_eval/api/model.py::TemplateLM`,
`lm_eval/models/huggingface.py::HFLM`, `lm_eval/utils.py::get_rolling_token_windows`), without
lm-eval's `Instance` plumbing, so the harness can call it on plain tuples;
tests/eval/test_lm_eval_agreement.py checks it against HFLM itself.

Two deliberate differences, neither of which changes a float32 score: log-softmax is taken in
float32 whatever the model's dtype (HFLM uses the model's dtype unless told otherwise), and only
the positions a batch actually scores go through the output layer (`logits_to_keep`), which is
what keeps a 152k-token vocabulary from needing batch × length × vocab floats of memory.
Generation is plain greedy decoding: a checkpoint's `generation_config.json` (an instruct
model's `repetition_penalty`, say) is ignored, where HFLM would apply it.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_engine.errors import ConfigError, InputError

#: The longest context used when neither the config nor the caller says otherwise. Sailor2
#: trains at 4096; a Qwen2.5 config.json says 32768, more than a CPU or a small GPU can score.
MAX_LENGTH_CAP = 4096
#: Bytes of float32 logits one scoring batch may hold; above it the output layer runs on slices of
#: `POSITION_CHUNK` positions of one request at a time (memory bounded by configuration, not by the data).
LOGITS_BUDGET = 1 << 30
POSITION_CHUNK = 512
_DTYPES = ("float32", "bfloat16", "float16")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


@dataclass(frozen=True)
class ModelConfig:
    """How a checkpoint is run for scoring."""

    batch_size: int = 8  # requests per forward pass (after lm-eval's longest-first sort)
    max_length: int | None = None  # None: config.json's max_position_embeddings, capped at 4096
    device: str | None = None  # None: "cuda" when available, else "cpu"
    dtype: str = "float32"  # "bfloat16" on a GPU is the user's choice; scores then move by ~1e-2
    max_gen_toks: int = 64  # generate_until's default when a request does not name max_gen_toks

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"ModelConfig.batch_size must be at least 1, got {self.batch_size}")
        if self.max_length is not None and self.max_length < 2:
            raise ConfigError(f"ModelConfig.max_length must be at least 2 (or None), got {self.max_length}")
        if self.dtype not in _DTYPES:
            raise ConfigError(f"ModelConfig.dtype must be one of {', '.join(_DTYPES)}, got {self.dtype!r}")
        if self.max_gen_toks < 1:
            raise ConfigError(f"ModelConfig.max_gen_toks must be at least 1, got {self.max_gen_toks}")


def rolling_windows(tokens: Sequence[int], prefix_token: int, max_length: int) -> list[tuple[list[int], list[int]]]:
    """lm-eval's disjoint rolling windows with context_len=1: (input context, tokens to predict).

    The first window predicts up to `max_length` tokens from the prefix token on; each later one
    predicts the next ≤ `max_length` tokens with the `max_length` tokens before them as input, so
    every token is predicted exactly once (`get_rolling_token_windows` + `make_disjoint_window`).
    """
    tokens = list(tokens)
    if not tokens:
        return []
    first = min(max_length, len(tokens))
    windows = [([prefix_token], tokens[:first])]
    predicted = first
    while predicted < len(tokens):
        n = min(len(tokens) - predicted, max_length)
        end = predicted + n
        context = tokens[max(end - max_length - 1, 0):end - 1]
        windows.append((context[:len(context) - (n - 1)], tokens[end - n:end]))
        predicted = end
    return windows


def cut_at_stop(text: str, until: Sequence[str]) -> str:
    """`text` up to the first occurrence of any non-empty stop string (lm-eval's post-processing)."""
    for stop in until:
        if stop:
            text = text.split(stop)[0]
    return text


class CausalLM:
    """A causal LM from a Hugging Face directory (config.json, weights, tokenizer files)."""

    def __init__(self, hf_dir: str | Path, config: ModelConfig = ModelConfig()) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(hf_dir)
        if not (path / "config.json").is_file():
            raise InputError(f"{path} is not a Hugging Face model directory (no config.json)")
        if not any((path / name).is_file() for name in _TOKENIZER_FILES):
            raise InputError(f"{path} holds no tokenizer (none of {', '.join(_TOKENIZER_FILES)}); copy the "
                             "tokenizer files beside the weights")
        device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"ModelConfig.device is {device!r} but this machine has no usable CUDA GPU; "
                              "use device 'cpu' (or leave it unset)")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, **_tokenizer_kwargs(path))
        except (OSError, ValueError, TypeError) as e:
            raise InputError(f"{path} holds no usable tokenizer ({type(e).__name__}: {e}); "
                             "copy tokenizer.json and tokenizer_config.json beside the weights") from e
        self.config = config
        self.device = torch.device(device)
        try:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, config.dtype))
        except (OSError, ValueError) as e:
            raise InputError(f"cannot load the model in {path} ({type(e).__name__}: {e})") from e
        self.model = model.to(self.device).eval()
        self._keeps_logits = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        self._vocab = int(self.model.get_output_embeddings().weight.shape[0])
        tok = self.tokenizer
        self.eot_token_id: int | None = tok.eos_token_id
        prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        if prefix is None:
            raise InputError(f"the tokenizer in {path} has neither a BOS nor an EOS token to stand for an empty "
                             "context")
        self.prefix_token_id: int = prefix
        # configure_pad_token's order: the tokenizer's pad, else unk, else eos.
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.unk_token_id
        self.pad_token_id: int = pad if pad is not None else prefix
        self._prefix_text = tok.decode([self.prefix_token_id])
        self._max_length = config.max_length or min(self._config_max_length(), MAX_LENGTH_CAP)

    def _config_max_length(self) -> int:
        cfg = getattr(self.model.config, "text_config", None) or self.model.config
        for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
            value = getattr(cfg, attr, None)
            if value is not None:
                return int(value)
        return 2048  # lm-eval's default

    @property
    def max_length(self) -> int:
        return self._max_length

    # ------------------------------------------------------------------ tokenising

    def tok_encode(self, text: str, *, add_special_tokens: bool | None = None) -> list[int]:
        """HFLM.tok_encode for a causal model: the tokenizer's own default for special tokens
        (Qwen2 adds none), and none at all when the text already starts with the prefix token."""
        kwargs: dict[str, bool] = {}
        if add_special_tokens is not None:
            kwargs["add_special_tokens"] = add_special_tokens
        elif text.startswith(self._prefix_text):
            kwargs["add_special_tokens"] = False
        return list(self.tokenizer.encode(text, **kwargs))

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens each text is scored as by `loglikelihood_rolling` (for token perplexity)."""
        return [len(self.tok_encode(t)) for t in texts]

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """TemplateLM's split of a request into context and continuation tokens."""
        if context == "":
            cont = self.tok_encode(continuation, add_special_tokens=False)
            if cont and cont[0] == self.prefix_token_id:
                return cont[:1], cont[1:]
            return [self.prefix_token_id], cont
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        whole = self.tok_encode(context + continuation)
        ctx = self.tok_encode(context)
        return ctx, whole[len(ctx):]

    # ------------------------------------------------------------------ scoring

    def loglikelihood(self, requests: Sequence[tuple[str, str]], *, progress: bool = False) -> list[tuple[float, bool]]:
        """(log p(continuation | context), whether greedy decoding would produce it) per request."""
        pairs = []
        for i, request in enumerate(requests):
            if not (isinstance(request, tuple | list) and len(request) == 2
                    and all(isinstance(s, str) for s in request)):
                raise ValueError(f"loglikelihood request {i} must be a (context, continuation) pair of strings, "
                                 f"got {request!r:.80}")
            ctx, cont = self.encode_pair(*request)
            if not cont:
                raise ValueError(f"loglikelihood request {i} has a continuation with no tokens "
                                 f"(continuation {request[1]!r:.40})")
            pairs.append((ctx, cont))
        return self._score_tokens(pairs, progress=progress, desc="loglikelihood")

    def loglikelihood_rolling(self, texts: Sequence[str], *, progress: bool = False) -> list[float]:
        """log p(text) of each document over lm-eval's disjoint rolling windows (0.0 for "")."""
        windows: list[tuple[list[int], list[int]]] = []
        owner: list[int] = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(f"loglikelihood_rolling document {i} must be a string, got {type(text).__name__}")
            doc_windows = rolling_windows(self.tok_encode(text), self.prefix_token_id, self.max_length)
            windows.extend(doc_windows)
            owner.extend([i] * len(doc_windows))
        totals = [0.0] * len(texts)
        for i, (ll, _) in zip(owner, self._score_tokens(windows, progress=progress, desc="rolling windows"),
                              strict=True):
            totals[i] += ll
        return totals

    def _score_tokens(self, pairs: Sequence[tuple[list[int], list[int]]], *, progress: bool,
                      desc: str) -> list[tuple[float, bool]]:
        """Sum of continuation log-probs per (context, continuation) token pair, batched.

        Inputs are cut as HFLM cuts them, deduplicated (requests sharing an input share one
        forward pass, as lm-eval's one-token-continuation cache does), sorted longest first,
        right-padded (padding after the real tokens cannot reach them through causal attention,
        so no mask is needed and a batch scores exactly what single requests score), and put back
        in request order.
        """
        import torch
        from tqdm import tqdm

        L = self.max_length
        inputs: dict[tuple[int, ...], list[int]] = {}
        jobs: list[tuple[tuple[int, ...], list[int]]] = []
        for i, (ctx, cont) in enumerate(pairs):
            if len(cont) > L:
                raise ValueError(f"request {i}: the continuation has {len(cont)} tokens, more than "
                                 f"max_length {L}")
            inp = tuple((ctx + cont)[-(L + 1):][:-1])
            inputs.setdefault(inp, []).append(i)
            jobs.append((inp, cont))
        order = sorted(inputs, key=lambda t: (-len(t), t))
        results: list[tuple[float, bool] | None] = [None] * len(pairs)
        with tqdm(total=len(pairs), desc=desc, disable=not progress, file=sys.stderr) as bar:
            for start in range(0, len(order), self.config.batch_size):
                batch = order[start:start + self.config.batch_size]
                width = len(batch[0])
                # The earliest scored position in the batch decides how many positions need logits.
                keep = max(width - len(inp) + max(len(jobs[i][1]) for i in inputs[inp]) for inp in batch)
                ids = torch.zeros((len(batch), width), dtype=torch.long)
                for row, inp in enumerate(batch):
                    ids[row, :len(inp)] = torch.tensor(inp, dtype=torch.long)
                if len(batch) * keep * self._vocab * 4 > LOGITS_BUDGET:
                    # long windows: the output layer a slice of positions at a time, never the
                    # whole [batch, keep, vocab] (8 × 4,096 × 152k float32 logits are 20 GB)
                    hidden = self._hidden(ids.to(self.device), keep)
                    for row, inp in enumerate(batch):
                        end = keep - (width - len(inp))
                        for i in inputs[inp]:
                            cont = jobs[i][1]
                            results[i] = self._chunked_score(hidden[row, end - len(cont):end], cont)
                            bar.update(1)
                    del hidden
                    continue
                logits = self._logits(ids.to(self.device), keep)  # [batch, keep, vocab]
                for row, inp in enumerate(batch):
                    end = keep - (width - len(inp))
                    for i in inputs[inp]:
                        cont = jobs[i][1]
                        # one request's rows at a time: a batch's log-softmax would double the memory
                        rows = torch.log_softmax(logits[row, end - len(cont):end].float(), dim=-1)
                        target = torch.tensor(cont, dtype=torch.long, device=rows.device)
                        ll = float(rows.gather(1, target[:, None]).sum())
                        greedy = bool((rows.argmax(dim=-1) == target).all())
                        results[i] = (ll, greedy)
                        bar.update(1)
                del logits
        return [r for r in results if r is not None]

    def _hidden(self, ids: Any, keep: int) -> Any:
        """The decoder's last hidden states at the last `keep` positions ([batch, keep, hidden])."""
        import torch

        with torch.no_grad():
            return self.model.get_decoder()(input_ids=ids).last_hidden_state[:, -keep:]

    def _chunked_score(self, hidden: Any, cont: Sequence[int]) -> tuple[float, bool]:
        """(Σ log p, greedy) of `cont` from its positions' hidden states, `POSITION_CHUNK` positions
        through the output layer at a time."""
        import torch

        head = self.model.get_output_embeddings()
        target = torch.tensor(list(cont), dtype=torch.long, device=hidden.device)
        total, greedy = 0.0, True
        with torch.no_grad():
            for start in range(0, len(cont), POSITION_CHUNK):
                rows = torch.log_softmax(head(hidden[start:start + POSITION_CHUNK]).float(), dim=-1)
                t = target[start:start + POSITION_CHUNK]
                total += float(rows.gather(1, t[:, None]).sum())
                greedy = greedy and bool((rows.argmax(dim=-1) == t).all())
        return total, greedy

    def _logits(self, ids: Any, keep: int) -> Any:
        """The output layer's logits at the last `keep` positions of each row."""
        import torch

        with torch.no_grad():
            if self._keeps_logits:
                return self.model(ids, logits_to_keep=keep).logits
            return self.model(ids).logits[:, -keep:]

    # ------------------------------------------------------------------ generation

    def generate_until(self, requests: Sequence[tuple[str, Mapping[str, Any]]], *,
                       progress: bool = False) -> list[str]:
        """Greedy continuation of each context, cut at the first stop string.

        gen kwargs: `until` (a string or list of strings; the EOS text is always added, as lm-eval
        does) and `max_gen_toks` (default `ModelConfig.max_gen_toks`); others are rejected rather
        than silently ignored. Contexts are left-truncated to `max_length - max_gen_toks` tokens.
        """
        from tqdm import tqdm

        groups: dict[tuple[tuple[str, ...], int], list[int]] = {}
        for i, request in enumerate(requests):
            until, max_gen = self._gen_kwargs(i, request)
            groups.setdefault((until, max_gen), []).append(i)
        out: list[str] = [""] * len(requests)
        with tqdm(total=len(requests), desc="generate_until", disable=not progress, file=sys.stderr) as bar:
            for (until, max_gen), members in groups.items():
                members.sort(key=lambda i: (-len(self.tok_encode(requests[i][0])), requests[i][0]))
                for batch in _chunks(members, self.config.batch_size):
                    texts = self._generate([requests[i][0] for i in batch], until, max_gen)
                    for i, text in zip(batch, texts, strict=True):
                        out[i] = text
                    bar.update(len(batch))
        return out

    def _gen_kwargs(self, i: int, request: Any) -> tuple[tuple[str, ...], int]:
        if not (isinstance(request, tuple | list) and len(request) == 2 and isinstance(request[0], str)
                and isinstance(request[1], Mapping)):
            raise ValueError(f"generate_until request {i} must be a (context, gen_kwargs) pair, got {request!r:.80}")
        kwargs = dict(request[1])
        unknown = set(kwargs) - {"until", "max_gen_toks", "do_sample", "temperature"}
        if unknown or kwargs.get("do_sample") or kwargs.get("temperature", 0.0) not in (0, 0.0):
            raise ValueError(f"generate_until request {i}: only greedy decoding with 'until' and 'max_gen_toks' "
                             f"is supported, got {sorted(kwargs)}")
        until = kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        if not all(isinstance(s, str) for s in until):
            raise ValueError(f"generate_until request {i}: 'until' must be a string or a list of strings")
        if self.eot_token_id is not None:
            eos = self.tokenizer.decode([self.eot_token_id])
            if eos not in until:
                until.append(eos)
        max_gen = kwargs.get("max_gen_toks", self.config.max_gen_toks)
        if not isinstance(max_gen, int) or max_gen < 1 or max_gen >= self.max_length:
            raise ValueError(f"generate_until request {i}: max_gen_toks must be an integer from 1 to "
                             f"max_length - 1 = {self.max_length - 1}, got {max_gen!r}")
        return tuple(until), max_gen

    def _generate(self, contexts: list[str], until: tuple[str, ...], max_gen: int) -> list[str]:
        import torch
        from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

        encoded = [self.tok_encode(c)[-(self.max_length - max_gen):] or [self.prefix_token_id] for c in contexts]
        width = max(len(e) for e in encoded)
        ids = torch.full((len(encoded), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, enc in enumerate(encoded):  # left padding: every row's next token is at the end
            ids[row, width - len(enc):] = torch.tensor(enc, dtype=torch.long)
            mask[row, width - len(enc):] = 1
        tokenizer = self.tokenizer
        stops = [s for s in until if s]

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                texts = tokenizer.batch_decode(input_ids[:, width:])
                return torch.tensor([any(s in t for s in stops) for t in texts], device=input_ids.device)

        gen = GenerationConfig(do_sample=False, max_new_tokens=max_gen, pad_token_id=self.pad_token_id,
                               eos_token_id=self.eot_token_id, bos_token_id=self.prefix_token_id)
        with torch.no_grad():
            output = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                         generation_config=gen, use_model_defaults=False,
                                         stopping_criteria=StoppingCriteriaList([_Stop()]))
        texts = tokenizer.batch_decode(output[:, width:].tolist(), skip_special_tokens=True)
        return [cut_at_stop(t, until) for t in texts]


def _tokenizer_kwargs(path: Path) -> dict[str, Any]:
    """transformers 4.57.3–4.x warns that *any* local tokenizer saved by those versions has
    "an incorrect regex pattern" (a check meant for Mistral's); saying "no fix" for a model that
    is not Mistral's silences the false alarm and changes nothing."""
    import json

    try:
        model_type = json.loads((path / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError):
        return {}
    return {} if model_type in _MISTRAL_TYPES else {"fix_mistral_regex": False}


_MISTRAL_TYPES = ("mistral", "mistral3", "voxtral", "ministral", "pixtral")


def _chunks(items: list[int], n: int) -> Iterator[list[int]]:
    for start in range(0, len(items), n):
        yield items[start:start + n]
