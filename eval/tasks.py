"""From a task's rows to the items a model scores: prompts in the target language, seeded shots.

Shots are drawn with a seed made of the task, language and item, from a split that is never scored,
so a run is reproducible and no item ever sees itself as an example. A shot is rendered exactly as
the item it precedes, followed by its gold answer, and shots are joined by the task's
`fewshot_delimiter` (lm-evaluation-harness's "\\n\\n" by default).
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_engine.errors import ConfigError
from eval import datasets
from eval.items import ChoiceItem, GenerationItem, Item, TextItem, read_choice_jsonl, read_text_jsonl
from eval.suites import SuiteConfig, TaskConfig

_TRAILING_STOP = re.compile(r"[.。!?！？।]+$")


def suite_data_root(suite: SuiteConfig, suite_path: Path) -> Path:
    if not suite.data_root:
        return datasets.default_data_root()
    root = Path(suite.data_root).expanduser()
    return root if root.is_absolute() else (suite_path.parent / root)


def _data_dir(task: TaskConfig, root: Path, suite_dir: Path) -> Path:
    """A task's data: an absolute path as it is; a relative one beside the suite file when it is
    there (a user's own items), else under the data root (the shared eval sets)."""
    path = Path(task.data).expanduser()
    if path.is_absolute():
        return path
    return suite_dir / path if (suite_dir / path).exists() else root / path


def _template(task: TaskConfig, lang: str) -> str:
    template = task.template_for(lang)
    if template is None:
        raise ConfigError(f"task {task.name}: no template for {lang} (give template.{lang} or template.*)")
    return template


def _sample(rows: Sequence, limit: int | None, seed: str) -> list:
    """A seeded sample of `limit` rows, in their original order (all of them when limit is None)."""
    if limit is None or limit >= len(rows):
        return list(rows)
    keep = sorted(random.Random(seed).sample(range(len(rows)), limit))
    return [rows[i] for i in keep]


def _shots(pool: Sequence, k: int, seed: str, exclude: str | None = None) -> list:
    if k <= 0:
        return []
    choices = [r for r in pool if exclude is None or r["_key"] != exclude]
    if len(choices) < k:
        raise ConfigError(f"{k} shots asked for but the shot split has {len(choices)} rows")
    return random.Random(seed).sample(choices, k)


def _labels(task: TaskConfig, lang: str, n: int) -> list[str]:
    labels = task.labels.get(lang, task.labels.get("*"))
    if labels is None or len(labels) != n:
        raise ConfigError(f"task {task.name}: labels.{lang} must list {n} label words")
    return list(labels)


@dataclass
class EvalContext:
    """What some tasks need beyond files: the checkpoint's training run (its held-out shards)."""

    training_run_id: str | None = None
    work_dir: Path | None = None
    decode: Callable[[list[int]], str] | None = None
    cache: dict[str, Any] = field(default_factory=dict)


def build_items(task: TaskConfig, lang: str, root: Path, suite_dir: Path,
                context: EvalContext | None = None) -> list[Item]:
    """The items of `task` in `lang`. Raises datasets.DataMissing when its files are absent."""
    if task.format == "curated_heldout":
        return _curated_heldout(task, lang, context)
    builder = _BUILDERS[task.format]
    return builder(task, lang, root, suite_dir)


def _curated_heldout(task: TaskConfig, lang: str, context: EvalContext | None) -> list[Item]:
    """Documents of the checkpoint's own training shards outside Megatron's train range."""
    if context is None or not context.training_run_id or context.work_dir is None or context.decode is None:
        raise datasets.DataMissing("no training run is known for this checkpoint, so neither are its held-out "
                                   "shard documents")
    key = f"heldout:{task.name}"
    if key not in context.cache:
        from eval.heldout import heldout_items
        from eval.training_data import training_data_config

        data = training_data_config(context.training_run_id, context.work_dir)
        if data is None:
            raise datasets.DataMissing(f"training run {context.training_run_id} recorded no data config")
        context.cache[key] = heldout_items(data["paths"], data["split"], context.decode, eod_id=data["eod_id"],
                                           limit=task.limit, seed=task.seed)
    items = context.cache[key].get(lang)
    if not items:
        raise datasets.DataMissing(f"the training shards hold no held-out {lang} documents")
    return list(items)


# --- multiple choice ----------------------------------------------------------------------------

def _choice_context(task: TaskConfig, shots: list[tuple[str, str]], query: str) -> str:
    parts = [f"{ctx}{task.target_delimiter}{answer}" for ctx, answer in shots]
    return task.fewshot_delimiter.join([*parts, query])


def _sib200_topic(task: TaskConfig, lang: str, root: Path, suite_dir: Path) -> list[Item]:
    data = _data_dir(task, root, suite_dir)
    template = _template(task, lang)
    labels = _labels(task, lang, len(datasets.SIB200_LABELS))
    gold_of = {c: i for i, c in enumerate(datasets.SIB200_LABELS)}
    rows = _sample(datasets.sib200(data, lang, task.split), task.limit, f"{task.name}:{lang}:{task.seed}")
    pool = []
    if task.shots:
        pool = [{**r, "_key": r["index_id"]} for r in datasets.sib200(data, lang, task.fewshot_split)]
    items: list[Item] = []
    for r in rows:
        shots = [(template.format(text=s["text"]), labels[gold_of[s["category"]]])
                 for s in _shots(pool, task.shots, f"{task.seed}:{lang}:{r['index_id']}")]
        items.append(ChoiceItem(r["index_id"], lang, _choice_context(task, shots, template.format(text=r["text"])),
                                tuple(labels), gold_of[r["category"]]))
    return items


def _xcopa_prompt(template: str, connectors: list[str], row: dict) -> str:
    """lm-evaluation-harness's XCOPA prompt — the premise without its final stop, then the
    connector — except that only a real full stop is dropped (lm-eval cuts the last character
    whatever it is, which eats a letter of every Thai premise: Thai writes no full stop)."""
    premise = _TRAILING_STOP.sub("", row["premise"].strip())
    connector = connectors[0] if row["question"] == "cause" else connectors[1]
    return template.format(premise=premise, connector=connector)


def _lower_first(choice: str) -> str:
    return choice[:1].lower() + choice[1:]


def _xcopa(task: TaskConfig, lang: str, root: Path, suite_dir: Path) -> list[Item]:
    data = _data_dir(task, root, suite_dir)
    template = _template(task, lang)
    connectors = _labels(task, lang, 2)
    rows = _sample(datasets.xcopa(data, lang, task.split), task.limit, f"{task.name}:{lang}:{task.seed}")
    pool = [{**r, "_key": str(r["idx"])} for r in datasets.xcopa(data, lang, task.fewshot_split)] if task.shots else []
    items: list[Item] = []
    for r in rows:
        shots = [(_xcopa_prompt(template, connectors, s), _lower_first(s[f"choice{s['label'] + 1}"]))
                 for s in _shots(pool, task.shots, f"{task.seed}:{lang}:{r['idx']}")]
        context = _choice_context(task, shots, _xcopa_prompt(template, connectors, r))
        items.append(ChoiceItem(str(r["idx"]), lang, context, (_lower_first(r["choice1"]), _lower_first(r["choice2"])),
                                int(r["label"])))
    return items


def _split_point(text: str, lang: str) -> int:
    """Where a UDHR cloze item's context ends: at a space near the middle, else (a script without
    spaces, or one long word) at the middle character."""
    middle = len(text) // 2
    spaces = [m.start() for m in re.finditer(r"\s", text)]
    if spaces:
        best = min(spaces, key=lambda i: abs(i - middle))
        if len(text) // 4 <= best <= 3 * len(text) // 4:
            return best
    # never split a grapheme: move right past combining marks (Thai, Lao, Khmer, Burmese vowels)
    while middle < len(text) and unicodedata.category(text[middle]).startswith("M"):
        middle += 1
    return middle


def _udhr_cloze(task: TaskConfig, lang: str, root: Path, suite_dir: Path) -> list[Item]:
    """Each held-out paragraph's first half, continued by its own second half or by the second half
    of another held-out paragraph of the same language (3 distractors, seeded)."""
    paragraphs = [p for p in datasets.udhr_heldout(lang) if len(p.encode("utf-8")) >= 60]
    halves = []
    for p in paragraphs:
        cut = _split_point(p, lang)
        halves.append((p[:cut].rstrip(), p[cut:].strip()))
    n_choices = 4
    items: list[Item] = []
    for i, (head, tail) in enumerate(halves):
        rng = random.Random(f"{task.seed}:{lang}:{i}")
        others = [t for j, (_, t) in enumerate(halves) if j != i and t != tail]
        choices = [tail, *rng.sample(others, min(n_choices - 1, len(others)))]
        order = list(range(len(choices)))
        rng.shuffle(order)
        template = task.template_for(lang) or "{text}"
        items.append(ChoiceItem(f"udhr-{lang}-{i:02d}", lang, template.format(text=head),
                                tuple(choices[k] for k in order), order.index(0)))
    return _sample(items, task.limit, f"{task.name}:{lang}:{task.seed}")


def _choice_jsonl(task: TaskConfig, lang: str, root: Path, suite_dir: Path) -> list[Item]:
    path = _data_dir(task, root, suite_dir)
    if not path.is_file():
        raise datasets.DataMissing(f"{path} not found")
    items = [i for i in read_choice_jsonl(path, lang=lang) if i.lang == lang]
    return _sample(items, task.limit, f"{task.name}:{lang}:{task.seed}")


# --- corpus -------------------------------------------------------------------------------------

def _sib200_text(task: TaskConfig, lang: str, root: Path, suite_dir: Path) -> list[Item]:
    rows = _sample(datasets.sib200(_data_dir(task, root, suite_dir), lang, task.split), task.limit,
                   f"{task.name}:{lang}:{task.seed}")
    return [TextItem(r["index_id"], lang, r["text"]) for r in rows]


def _udhr_text(task: TaskConfig, lang: str, root: Path, suite_dir: Path) -> list[Item]:
    items = [TextItem(f"udhr-{lang}-{i:02d}", lang, p) for i, p in enumerate(datasets.udhr_heldout(lang))]
    return _sample(items, task.limit, f"{task.name}:{lang}:{task.seed}")


def _text_jsonl(task: TaskConfig, lang: str, root: Path, suite_dir: Path) -> list[Item]:
    path = _data_dir(task, root, suite_dir)
    if not path.is_file():
        raise datasets.DataMissing(f"{path} not found")
    items = [i for i in read_text_jsonl(path, lang=lang) if i.lang == lang]
    return _sample(items, task.limit, f"{task.name}:{lang}:{task.seed}")


# --- generation ---------------------------------------------------------------------------------

def _generation_prompt(task: TaskConfig, shots: list[tuple[str, str]], query: str) -> str:
    parts = [f"{prompt} {answer}" for prompt, answer in shots]
    return task.fewshot_delimiter.join([*parts, query])


def _xquad(task: TaskConfig, lang: str, root: Path, suite_dir: Path) -> list[Item]:
    template = _template(task, lang)
    rows = datasets.xquad(_data_dir(task, root, suite_dir), lang)
    pool = [{**r, "_key": r["id"]} for r in rows if r["article"] < datasets.XQUAD_FEWSHOT_ARTICLES]
    scored = _sample([r for r in rows if r["article"] >= datasets.XQUAD_FEWSHOT_ARTICLES], task.limit,
                     f"{task.name}:{lang}:{task.seed}")
    items: list[Item] = []
    for r in scored:
        shots = [(template.format(context=s["context"], question=s["question"]), s["answers"][0])
                 for s in _shots(pool, task.shots, f"{task.seed}:{lang}:{r['id']}")]
        prompt = _generation_prompt(task, shots, template.format(context=r["context"], question=r["question"]))
        items.append(GenerationItem(r["id"], lang, prompt, r["answers"], source=r["context"]))
    return items


def _flores(task: TaskConfig, lang: str, root: Path, suite_dir: Path) -> list[Item]:
    """FLORES-200 sentences (via SIB-200, parallel by index_id) between English and `lang`."""
    if lang == "eng":
        raise ConfigError(f"task {task.name}: FLORES pairs English with another language; drop eng from langs")
    data = _data_dir(task, root, suite_dir)
    template = _template(task, lang)
    src_lang, tgt_lang = ("eng", lang) if task.direction == "eng-x" else (lang, "eng")

    def pairs(split: str) -> list[dict]:
        src = {r["index_id"]: r["text"] for r in datasets.sib200(data, src_lang, split)}
        tgt = {r["index_id"]: r["text"] for r in datasets.sib200(data, tgt_lang, split)}
        return [{"_key": k, "source": src[k], "reference": tgt[k]} for k in sorted(src, key=int) if k in tgt]

    rows = _sample(pairs(task.split), task.limit, f"{task.name}:{lang}:{task.seed}")
    pool = pairs(task.fewshot_split) if task.shots else []
    items: list[Item] = []
    for r in rows:
        shots = [(template.format(source=s["source"]), s["reference"])
                 for s in _shots(pool, task.shots, f"{task.seed}:{lang}:{r['_key']}")]
        prompt = _generation_prompt(task, shots, template.format(source=r["source"]))
        items.append(GenerationItem(r["_key"], lang, prompt, (r["reference"],), source=r["source"]))
    return items


_BUILDERS = {"sib200_topic": _sib200_topic, "xcopa": _xcopa, "udhr_cloze": _udhr_cloze, "choice_jsonl": _choice_jsonl,
             "sib200_text": _sib200_text, "udhr_text": _udhr_text, "text_jsonl": _text_jsonl, "xquad": _xquad,
             "flores": _flores}
