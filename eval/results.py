"""Eval results in MLflow: one run per (checkpoint, suite), nested under the checkpoint's training run.

Metrics are named `<task>.<lang>.<metric>` (plus `normalised.<task>.<lang>`, `language.<lang>` and
`sea_average`), so MLflow's compare view lines checkpoints up metric by metric. A second eval of
the same checkpoint with the same suite reopens its run and logs the new values over the old ones
instead of adding a run. The per-language bar plot and the whole result JSON are artifacts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from data_engine import tracking

KIND = "eval"
CHECKPOINT_TAG = "eval.checkpoint"
SUITE_TAG = "eval.suite"


def metric_items(doc: Mapping[str, Any]) -> dict[str, float]:
    """The flat MLflow metrics of a result document (`SuiteResult.to_dict()`)."""
    out: dict[str, float] = {}
    for task, per_lang in doc["results"].items():
        for lang, metrics in per_lang.items():
            for name, value in metrics.items():
                if name not in ("n", "chance", "bytes", "tokens") and value is not None:
                    out[f"{task}.{lang}.{name}"] = float(value)
    for task, per_lang in doc["normalised"].items():
        for lang, value in per_lang.items():
            out[f"normalised.{task}.{lang}"] = float(value)
    for lang, value in doc["by_language"].items():
        out[f"language.{lang}"] = float(value)
    if doc.get("sea_average") is not None:
        out["sea_average"] = float(doc["sea_average"])
    out["items"], out["eval_seconds"] = float(doc["items"]), float(doc["seconds"])
    return out


def _bar_plot(by_language: Mapping[str, float], title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 0.55 * len(by_language) + 1.5), 3.2))
    langs = list(by_language)
    ax.bar(langs, [by_language[lang] for lang in langs], color="#2a7ab0")
    ax.set_ylabel("normalised score (0 = chance)")
    ax.set_title(title, fontsize=9)
    ax.set_ylim(0, max(5.0, max(by_language.values(), default=0) * 1.15))
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def log(doc: Mapping[str, Any], *, work_dir: Path, checkpoint_label: str, training_run_id: str | None,
        suite_file: Path | None) -> str:
    """Log the results of one (checkpoint, suite); returns the eval run's id."""
    tags = {CHECKPOINT_TAG: checkpoint_label, SUITE_TAG: doc["suite"]}
    existing = tracking.find_runs(work_dir, tags)
    metrics = metric_items(doc)
    name = f"eval-{doc['suite']}"
    if existing:
        ctx = tracking.reopen_run(existing[0], work_dir=work_dir)
    else:
        ctx = tracking.start_run(name, work_dir=work_dir, kind=KIND, parent_run_id=training_run_id)
    with ctx as run:
        run.set_tags({**tags, "eval.training_run": training_run_id or "",
                      "eval.skipped": ",".join(doc.get("skipped", {})) or "-",
                      "eval.contamination": _verdict_tag(doc.get("contamination"))})
        run.log_metrics(metrics)
        run.log_dict(dict(doc), "eval/results.json")
        if doc["by_language"]:
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                plot = _bar_plot(doc["by_language"], f"{doc['suite']}: {Path(checkpoint_label).name}",
                                 Path(tmp) / "by_language.png")
                run.log_artifact(plot, "eval")
        if suite_file is not None:
            run.log_artifact(suite_file, "eval")
        return run.run_id


def _verdict_tag(verdict: Mapping[str, Any] | None) -> str:
    if not verdict:
        return "not audited"
    dirty = verdict.get("contaminated_items", 0)
    unaudited = [f"{t['table']}@v{t['version']}" for t in verdict.get("tables", []) if not t.get("audited")]
    tag = f"{dirty} of {verdict.get('items', 0)} items found in {verdict.get('table')}"
    return tag + (f" ({', '.join(unaudited)} never audited)" if unaudited else "")


# --- comparing checkpoints ----------------------------------------------------------------------

def eval_runs(work_dir: Path, target: str) -> list[Any]:
    """The eval runs `target` names: an eval run id, a training run id (its eval children), or a
    checkpoint (the runs tagged with it), newest first."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking.tracking_uri(work_dir))
    try:
        run = client.get_run(target)
    except Exception:
        run = None
    if run is not None:
        if run.data.tags.get("sailyard.kind") == KIND:
            return [run]
        return [r for r in tracking.child_runs(work_dir, target) if r.data.tags.get("sailyard.kind") == KIND][::-1]
    label = str(Path(target).expanduser().absolute())
    ids = tracking.find_runs(work_dir, {CHECKPOINT_TAG: label})
    if not ids:
        from eval.checkpoint import _nemo_checkpoint

        nemo = _nemo_checkpoint(Path(label)) if Path(label).is_dir() else None
        ids = tracking.find_runs(work_dir, {CHECKPOINT_TAG: str(nemo)}) if nemo else []
    return [client.get_run(i) for i in ids]


def compare_table(runs: Sequence[Any]) -> tuple[list[str], list[list[str]]]:
    """(header, rows): one row per `<task>.<lang>.<metric>`, one column per eval run."""
    header = ["metric"] + [f"{Path(r.data.tags.get(CHECKPOINT_TAG, r.info.run_id)).name} "
                           f"[{r.data.tags.get(SUITE_TAG, '?')}]" for r in runs]
    names = sorted({k for r in runs for k in r.data.metrics if k not in ("seconds", "eval_seconds", "items")},
                   key=_metric_order)
    rows = [[name] + [_fmt(r.data.metrics.get(name)) for r in runs] for name in names]
    return header, rows


def _metric_order(name: str) -> tuple[int, str]:
    head = name.split(".")[0]
    rank = {"sea_average": 0, "language": 1, "normalised": 2}.get(head, 3)
    return rank, name


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def render(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def log_comparison(work_dir: Path, runs: Sequence[Any], table: str) -> str:
    """An `eval-compare` run holding the table (text and JSON), linked to the runs it compares."""
    with tracking.start_run("eval-compare", work_dir=work_dir, kind="eval-compare") as run:
        run.set_tags({"eval.compared": ",".join(r.info.run_id for r in runs)})
        run.log_text(table, "eval/compare.txt")
        run.log_dict({r.info.run_id: dict(r.data.metrics) for r in runs}, "eval/compare.json")
        return run.run_id


