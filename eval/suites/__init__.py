"""Eval suites: tasks defined in YAML, loaded strictly by the project's one config loader.

A suite is a name, a data root and a list of tasks. Each task names its type (multiple_choice,
corpus, generation), the format its data is in, the languages, the split scored and the split its
shots come from, the prompt template per language and the metrics. Two suites ship here:
`mini` (held-out UDHR text the project carries, so a fresh clone can always evaluate) and
`sea-mini` (SIB-200, XCOPA, XQuAD, FLORES from `../shared/data` or `$SAILYARD_EVAL_DATA`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from data_engine.config import from_dict, read_yaml
from data_engine.errors import ConfigError

TaskType = Literal["multiple_choice", "corpus", "generation"]
Format = Literal["sib200_topic", "sib200_text", "xcopa", "xquad", "flores", "udhr_text", "udhr_cloze",
                 "choice_jsonl", "text_jsonl", "curated_heldout"]
#: The kind of scoring each format's items get.
FORMAT_TYPE: dict[str, str] = {
    "sib200_topic": "multiple_choice", "xcopa": "multiple_choice", "udhr_cloze": "multiple_choice",
    "choice_jsonl": "multiple_choice", "sib200_text": "corpus", "udhr_text": "corpus", "text_jsonl": "corpus",
    "curated_heldout": "corpus",
    "xquad": "generation", "flores": "generation"}
DEFAULT_METRICS: dict[str, tuple[str, ...]] = {
    "multiple_choice": ("acc", "acc_norm"),
    "corpus": ("bits_per_byte", "byte_perplexity", "token_perplexity", "word_perplexity", "bits_per_doc"),
    "xquad": ("exact_match", "f1"), "flores": ("chrf_pp", "bleu")}
#: The metric a task's normalised score and per-language summary use.
PRIMARY: dict[str, str] = {"multiple_choice": "acc_norm", "corpus": "bits_per_byte", "xquad": "f1",
                           "flores": "chrf_pp"}
BUILTIN = ("mini", "sea-mini")


@dataclass(frozen=True)
class TaskConfig:
    name: str
    type: TaskType
    format: Format
    data: str = ""                       # under the suite's data root, or absolute; "" for shipped text
    langs: tuple[str, ...] = ()          # empty: every language the template (or data) has
    split: str = "test"
    fewshot_split: str = ""              # where shots come from (never the scored split)
    shots: int = 0
    limit: int | None = None             # items per language: a seeded sample, the same every run
    seed: int = 1234
    template: dict[str, str] = field(default_factory=dict)   # language → prompt template ("*": any)
    labels: dict[str, list[str]] = field(default_factory=dict)  # language → label words, where a format has them
    direction: Literal["eng-x", "x-eng"] = "eng-x"            # flores
    metrics: tuple[str, ...] = ()        # empty: the type's defaults
    max_gen_toks: int = 64
    until: tuple[str, ...] = ("\n",)
    target_delimiter: str = " "          # lm-evaluation-harness's default, before each choice
    fewshot_delimiter: str = "\n\n"

    def __post_init__(self) -> None:
        kind = FORMAT_TYPE[self.format]
        if self.type != kind:
            raise ConfigError(f"task {self.name}: format {self.format} is scored as {kind}, not {self.type}")
        if self.shots and not self.fewshot_split and self.format not in ("xquad", "udhr_cloze"):
            raise ConfigError(f"task {self.name}: {self.shots} shots need a fewshot_split (a split that is "
                              f"not scored)")
        if self.fewshot_split and self.fewshot_split == self.split:
            raise ConfigError(f"task {self.name}: shots would come from the scored split {self.split!r}")

    @property
    def kind(self) -> str:
        """multiple_choice, corpus, or the generation format (xquad, flores): what picks the scorer."""
        return self.format if self.type == "generation" else self.type

    @property
    def metric_names(self) -> tuple[str, ...]:
        return self.metrics or DEFAULT_METRICS[self.kind]

    @property
    def primary(self) -> str:
        return PRIMARY[self.kind]

    def template_for(self, lang: str) -> str | None:
        return self.template.get(lang, self.template.get("*"))


@dataclass(frozen=True)
class SuiteConfig:
    name: str
    tasks: tuple[TaskConfig, ...]
    description: str = ""
    data_root: str = ""                  # "": $SAILYARD_EVAL_DATA, else ../shared/data beside the checkout

    def __post_init__(self) -> None:
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ConfigError(f"suite {self.name}: task names repeat: {sorted(names)}")
        if not self.tasks:
            raise ConfigError(f"suite {self.name}: no tasks")


def builtin_path(name: str) -> Path:
    return Path(str(resources.files("eval").joinpath("suites", f"{name}.yaml")))


def load_suite(name_or_path: str | Path) -> tuple[SuiteConfig, Path]:
    """A built-in suite by name (`mini`, `sea-mini`) or a suite YAML; returns it and its file."""
    path = builtin_path(str(name_or_path)) if str(name_or_path) in BUILTIN else Path(name_or_path)
    if not path.is_file():
        raise ConfigError(f"suite {name_or_path}: no such file (built-in suites: {', '.join(BUILTIN)})")
    doc = read_yaml(path, "eval suite")
    if not isinstance(doc, dict):
        raise ConfigError(f"eval suite {path} must hold a mapping (name, tasks, ...)")
    return from_dict(SuiteConfig, doc, source=str(path)), path


def contamination_items(path: str | Path) -> list[dict[str, Any]]:
    """Every item of a suite as `{task, lang, id, text}`: the text the contamination audit looks for.

    Tasks whose data is absent are left out (the audit says which in its summary via `skipped`).
    """
    from eval.datasets import DataMissing
    from eval.items import item_text
    from eval.tasks import build_items, suite_data_root

    suite, suite_path = load_suite(path)
    root = suite_data_root(suite, suite_path)
    out: list[dict[str, Any]] = []
    for task in suite.tasks:
        for lang in task_langs(task):
            try:
                items = build_items(task, lang, root, suite_path.parent)
            except DataMissing:
                continue
            out.extend({"task": task.name, "lang": lang, "id": item.id, "text": item_text(item)} for item in items)
    return out


def task_langs(task: TaskConfig) -> tuple[str, ...]:
    """The task's languages: as listed, else those its templates or labels name, else all 15."""
    from data_engine.langs import LANGS

    if task.langs:
        return task.langs
    for named in (task.template, task.labels):
        if named and "*" not in named:
            return tuple(lang for lang in LANGS if lang in named)
    return tuple(LANGS)
