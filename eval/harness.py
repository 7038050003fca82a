"""Run a suite's tasks on one model: items → requests → scores per task and language.

Requests of a task are sent to the model together (it batches and sorts them), so the harness
stays a loop over tasks. What comes back is plain data — `results[task][lang][metric]`, the
normalised scores, per-language and per-task summaries, skipped tasks with the reason — which the
CLI prints as its JSON line and `eval.results` logs to MLflow.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_engine.langs import LANGS
from eval.datasets import DataMissing
from eval.items import ChoiceItem, Item, TextItem
from eval.metrics import choice, corpus, normalise, qa, translation
from eval.suites import SuiteConfig, TaskConfig, task_langs
from eval.tasks import EvalContext, build_items, suite_data_root

#: The SEA average leaves out the two high-resource anchors.
SEA_LANGS = tuple(lang for lang in LANGS if lang not in ("eng", "zho"))


@dataclass
class SuiteResult:
    suite: str
    results: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    normalised: dict[str, dict[str, float]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    items: int = 0
    requests: int = 0
    seconds: float = 0.0
    task_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def by_language(self) -> dict[str, float]:
        """Mean normalised score of each language over the tasks that have it."""
        langs: dict[str, list[float]] = {}
        for per_lang in self.normalised.values():
            for lang, value in per_lang.items():
                langs.setdefault(lang, []).append(value)
        return {lang: round(normalise.aggregate(v), 4) for lang, v in sorted(langs.items(), key=_lang_order)}

    @property
    def by_task(self) -> dict[str, float]:
        """Mean normalised score of each task over its languages (each language counts once)."""
        return {task: round(normalise.aggregate(list(v.values())), 4) for task, v in self.normalised.items() if v}

    @property
    def sea_average(self) -> float | None:
        values = [v for lang, v in self.by_language.items() if lang in SEA_LANGS]
        return round(normalise.aggregate(values), 4) if values else None

    def to_dict(self) -> dict[str, Any]:
        return {"suite": self.suite, "results": self.results, "normalised": self.normalised,
                "by_language": self.by_language, "by_task": self.by_task, "sea_average": self.sea_average,
                "skipped": self.skipped, "items": self.items, "requests": self.requests,
                "seconds": round(self.seconds, 2),
                "items_per_second": round(self.items / self.seconds, 2) if self.seconds else None,
                "task_seconds": self.task_seconds}


def _lang_order(kv: tuple[str, Any]) -> int:
    return LANGS.index(kv[0]) if kv[0] in LANGS else len(LANGS)


def run_suite(model: Any, suite: SuiteConfig, suite_path: Path, *, progress: bool = False,
              log: Callable[[str], None] | None = None, context: EvalContext | None = None) -> SuiteResult:
    """Score every task of `suite` on `model` (an `eval.model.CausalLM`); `context` names the
    checkpoint's training run for the tasks that read its held-out shards."""
    root = suite_data_root(suite, suite_path)
    out = SuiteResult(suite.name)
    started = time.time()
    for task in suite.tasks:
        t0 = time.time()
        items: dict[str, list[Item]] = {}
        missing: list[str] = []
        for lang in task_langs(task):
            try:
                items[lang] = build_items(task, lang, root, suite_path.parent, context)
            except DataMissing as exc:
                missing.append(f"{lang}: {exc}")
        if not items:
            out.skipped[task.name] = "; ".join(missing) or "no items"
            if log:
                log(f"eval: {task.name} skipped: {out.skipped[task.name].split('; ')[0]}")
            continue
        if missing:
            out.skipped[f"{task.name}[{','.join(m.split(':')[0] for m in missing)}]"] = "; ".join(missing)
        if log:
            log(f"eval: {task.name}: {sum(map(len, items.values()))} items in {len(items)} languages")
        scored, requests = score_task(model, task, items, progress=progress)
        out.results[task.name] = scored
        out.items += sum(map(len, items.values()))
        out.requests += requests
        norm = {lang: round(_normalised(task, m), 4) for lang, m in scored.items() if _normalised(task, m) is not None}
        if norm:
            out.normalised[task.name] = norm
        out.task_seconds[task.name] = round(time.time() - t0, 2)
    out.seconds = time.time() - started
    return out


def _normalised(task: TaskConfig, metrics: Mapping[str, float]) -> float | None:
    """SEA-HELM's max(0, (score − chance)/(max − chance))·100 of the task's primary metric."""
    if task.kind == "corpus" or task.primary not in metrics:
        return None
    score = metrics[task.primary]
    if task.kind == "flores":
        return normalise.normalised(score, 0.0, 100.0)
    chance = metrics.get("chance", 0.0)
    return normalise.normalised(score, chance, 1.0)


def score_task(model: Any, task: TaskConfig, items: Mapping[str, Sequence[Item]], *,
               progress: bool = False) -> tuple[dict[str, dict[str, float]], int]:
    """(per-language metrics, requests sent) of one task."""
    flat = [(lang, item) for lang, its in items.items() for item in its]
    if task.kind == "multiple_choice":
        return _score_choice(model, task, flat, progress), sum(len(i.choices) for _, i in flat)  # type: ignore[union-attr]
    if task.kind == "corpus":
        return _score_corpus(model, task, flat, progress), len(flat)
    return _score_generation(model, task, flat, progress), len(flat)


def _score_choice(model: Any, task: TaskConfig, flat: list[tuple[str, Item]], progress: bool) -> dict:
    requests = [(item.context, f"{task.target_delimiter}{c}") for _, item in flat for c in item.choices]  # type: ignore[union-attr]
    lls = [ll for ll, _ in model.loglikelihood(requests, progress=progress)]
    per_lang: dict[str, list[dict[str, float]]] = {}
    k = 0
    for lang, item in flat:
        assert isinstance(item, ChoiceItem)
        n = len(item.choices)
        scores = dict(choice.choice_scores(lls[k:k + n], item.choices, item.gold))
        scores["chance"] = 1.0 / n
        per_lang.setdefault(lang, []).append(scores)
        k += n
    return {lang: _means(rows, task.metric_names + ("chance",)) for lang, rows in per_lang.items()}


def _means(rows: list[Mapping[str, float]], names: Sequence[str]) -> dict[str, float]:
    out = {name: round(sum(r[name] for r in rows) / len(rows), 6) for name in names if name in rows[0]}
    out["n"] = len(rows)
    return out


def _token_count(model: Any, text: str) -> int:
    return len(model.tok_encode(text)) if hasattr(model, "tok_encode") else len(model.tokenizer.encode(text))


def _score_corpus(model: Any, task: TaskConfig, flat: list[tuple[str, Item]], progress: bool) -> dict:
    texts = [item.text for _, item in flat]  # type: ignore[union-attr]
    lls = model.loglikelihood_rolling(texts, progress=progress)
    out: dict[str, dict[str, float]] = {}
    for lang in dict.fromkeys(lang for lang, _ in flat):
        idx = [i for i, (lg, _) in enumerate(flat) if lg == lang]
        lang_texts = [texts[i] for i in idx]
        totals = corpus.corpus_totals([lls[i] for i in idx], lang_texts,
                                      [_token_count(model, t) for t in lang_texts], lang=lang)
        metrics = corpus.corpus_metrics(totals)
        out[lang] = {k: round(v, 6) for k, v in metrics.items() if k in task.metric_names}
        out[lang].update({"n": totals.docs, "bytes": totals.bytes, "tokens": totals.tokens})
    return out


def _score_generation(model: Any, task: TaskConfig, flat: list[tuple[str, Item]], progress: bool) -> dict:
    kwargs = {"until": list(task.until), "max_gen_toks": task.max_gen_toks}
    outputs = model.generate_until([(item.prompt, kwargs) for _, item in flat], progress=progress)  # type: ignore[union-attr]
    out: dict[str, dict[str, float]] = {}
    for lang in dict.fromkeys(lang for lang, _ in flat):
        pairs = [(o.strip(), item) for (lg, item), o in zip(flat, outputs, strict=True) if lg == lang]
        metrics: dict[str, float] = {}
        if task.kind == "xquad":
            if "exact_match" in task.metric_names:
                metrics["exact_match"] = sum(qa.exact_match(p, i.references, lang) for p, i in pairs) / len(pairs)
            if "f1" in task.metric_names:
                metrics["f1"] = sum(qa.f1(p, i.references, lang) for p, i in pairs) / len(pairs)
        else:
            hyps, refs = [p for p, _ in pairs], [i.references[0] for _, i in pairs]
            target = lang if task.direction == "eng-x" else "eng"
            if "chrf_pp" in task.metric_names:
                metrics["chrf_pp"] = translation.chrf_pp(hyps, refs)
            if "bleu" in task.metric_names:
                metrics["bleu"] = translation.bleu(hyps, refs, lang=target)
        out[lang] = {k: round(v, 6) for k, v in metrics.items()}
        out[lang]["n"] = len(pairs)
    return out


def score_items(model: Any, items: Sequence[Item], *, name: str, progress: bool = False) -> SuiteResult:
    """Zero-shot scores of a plain items file (`--mc` / `--corpus`): context used as given."""
    kind = "multiple_choice" if isinstance(items[0], ChoiceItem) else "corpus"
    fmt = "choice_jsonl" if kind == "multiple_choice" else "text_jsonl"
    task = TaskConfig(name=name, type=kind, format=fmt)  # type: ignore[arg-type]
    if any(not isinstance(i, ChoiceItem if kind == "multiple_choice" else TextItem) for i in items):
        raise ValueError(f"{name}: items of mixed kinds")
    grouped: dict[str, list[Item]] = {}
    for item in items:
        grouped.setdefault(item.lang, []).append(item)
    started = time.time()
    out = SuiteResult(name)
    scored, out.requests = score_task(model, task, grouped, progress=progress)
    out.results[name] = scored
    norm = {lang: round(v, 4) for lang, m in scored.items() if (v := _normalised(task, m)) is not None}
    if norm:
        out.normalised[name] = norm
    out.items = len(items)
    out.seconds = time.time() - started
    out.task_seconds[name] = round(out.seconds, 2)
    return out


