"""The whole path on one machine: sample corpus → lake → clean → dedup → quality → token counts →
mixture (proxies, fit, search) → two-stage plan → the plan's shards → base model → LlamaPro
expansion → NeMo import → stage 1 → stage 2 → Hugging Face export.

One parent MLflow run holds a child run per job. The data jobs share this process's Spark session;
the proxies train in worker processes (`trainer.sweep`). The model steps run as the commands a user
types (`sailyard expand`, `import-hf`, `train --stage N --plan`, `export-hf`), each in a child process
(NeMo wants its own `__main__`), nested under the same parent through `SAILYARD_PARENT_RUN_ID`; the
two stages and the export sit under the plan's `train-plan` run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from data_engine import tracking
from data_engine.clean.config import CleanConfig
from data_engine.config import from_dict, load_yaml, to_dict
from data_engine.dedup.config import DedupConfig
from data_engine.errors import SailyardError
from data_engine.export.config import ExportConfig
from data_engine.ingest.config import IngestConfig
from data_engine.mixture.config import MixtureConfig
from data_engine.quality.config import QualityScoreConfig, QualityTrainConfig
from data_engine.tables import DOCS_CURATED, DOCS_SCORED
from data_engine.tokens.config import TokenCountConfig


@dataclass(frozen=True)
class BaseModelConfig:
    """The model stage 1 starts from: Sailor2 takes Qwen2.5 and grows it with LlamaPro."""

    hf_dir: str | None = None
    """A Hugging Face Qwen2 directory (Qwen2.5-0.5B, say). None: a seeded random Qwen2 with the train
    config's model shape and `layers` layers (no model hub here)."""
    layers: int = 2
    """Layers of the random base model (unused with hf_dir)."""
    expand_to: int | None = 4
    """LlamaPro: layers after expansion (Sailor2-1B: 24 → 48). None: train the base as it is."""
    seed: int = 0


@dataclass(frozen=True)
class EvalConfig:
    """What the demo scores its checkpoints on, and the audit of the eval text against the training data."""

    suites: tuple[str, ...] = ("mini", "sea-mini")
    """Built-in names or suite YAMLs; sea-mini is skipped (and says so) where its data is absent."""
    limit: int | None = 8
    """Items per task and language (a seeded sample; null: every item): keeps a CPU demo short."""
    batch_size: int = 16
    contamination: bool = True
    """Audit every suite's items against the tables the plan's shards came from."""


@dataclass(frozen=True)
class PipelineConfig:
    """The whole demo pipeline; each field is the section of the same name in the YAML."""

    work_dir: str = "work"
    sample_docs_per_lang: int = 40
    ingest: IngestConfig = field(default_factory=IngestConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    quality: QualityTrainConfig = field(default_factory=QualityTrainConfig)
    score: QualityScoreConfig = field(default_factory=QualityScoreConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    tokens: TokenCountConfig = field(default_factory=TokenCountConfig)
    mixture: MixtureConfig = field(default_factory=MixtureConfig)
    force_mixture_search: bool = False
    """Search even when the fit's cross-validated ρ is below mixture.search.min_rho (a demo with a
    handful of proxies cannot reach it; a real study should not need this)."""
    train_stages: tuple[int, ...] = (1, 2)
    """The plan's stages to train, in order (stage 2 starts from stage 1's final weights)."""
    train_config: str | None = None
    """Trainer YAML (`train:` for stage 1, `stage2:` over it for stage 2; None: the tiny defaults). Its model
    shape is replaced by the base model's."""
    base_model: BaseModelConfig = field(default_factory=BaseModelConfig)
    export_hf: bool = True
    """Export the last stage's final checkpoint to a Hugging Face directory (logged in MLflow)."""
    eval: EvalConfig = field(default_factory=EvalConfig)

    @staticmethod
    def from_yaml(path: str | Path | None) -> PipelineConfig:
        return PipelineConfig() if path is None else from_dict(PipelineConfig, load_yaml(path),
                                                               source=str(path))


@dataclass
class PipelinePaths:
    work: Path
    sample: Path = field(init=False)
    lake: Path = field(init=False)
    shards: Path = field(init=False)
    sweep: Path = field(init=False)
    mixture: Path = field(init=False)
    plan: Path = field(init=False)
    base: Path = field(init=False)
    hf: Path = field(init=False)

    def __post_init__(self) -> None:
        self.work = self.work.expanduser().resolve()
        self.sample = self.work / "sample"
        self.lake = self.work / "lake"
        self.shards = self.work / "shards"
        self.sweep = self.work / "mixture" / "sweeps"
        self.mixture = self.work / "mixture" / "mixture.yaml"
        self.plan = self.work / "mixture" / "plan.yaml"
        self.base = self.work / "base"
        self.hf = self.work / "hf"


def run_pipeline(cfg: PipelineConfig, *, train: bool = True, log: Any = print) -> dict[str, Any]:
    """Run every stage; returns the summary (job summaries, paths, the count table)."""
    from data_engine.clean.job import clean_job
    from data_engine.dedup.job import dedup_job
    from data_engine.export.job import export_job, plan_export_job
    from data_engine.ingest.job import ingest_job
    from data_engine.quality.job import score_quality_job, train_quality_job
    from data_engine.report import format_report, lake_report
    from data_engine.sample.corpus import build_sample
    from data_engine.sample.positives import write_positive_sets
    from data_engine.spark import get_spark
    from data_engine.tokens.job import count_tokens_job
    from trainer.sweep import SweepConfig

    # The proxies' settings are plain data until the sweep: check them before minutes of other work.
    from_dict(SweepConfig, {**cfg.mixture.sweep, "runs": cfg.mixture.runs}, "mixture.sweep")
    paths = PipelinePaths(Path(cfg.work_dir))
    paths.work.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"work_dir": str(paths.work), "lake": str(paths.lake),
                               "shards": str(paths.shards), "jobs": {}}
    previous_parent = os.environ.get(tracking.PARENT_ENV)
    with tracking.start_run("pipeline", work_dir=paths.work, kind="pipeline",
                            params=to_dict(cfg)) as parent:
        os.environ[tracking.PARENT_ENV] = parent.run_id
        try:
            log(f"[1/23] sample corpus → {paths.sample}")
            stats = build_sample(paths.sample, docs_per_lang=cfg.sample_docs_per_lang)
            parent.log_dict(dataclasses.asdict(stats), "sample_stats.json")
            spark = get_spark("sailyard-pipeline")
            log("[2/23] ingest")
            summary["jobs"]["ingest"] = ingest_job(spark, str(paths.lake), [str(paths.sample)],
                                                   source="sample", cfg=cfg.ingest)
            log("[3/23] clean: normalisation, heuristic rules, language identification")
            summary["jobs"]["clean"] = clean_job(spark, str(paths.lake), cfg.clean)
            log("[4/23] dedup: " + ", ".join(cfg.dedup.stages))
            summary["jobs"]["dedup"] = dedup_job(spark, str(paths.lake), cfg.dedup)
            log("[5/23] quality classifiers, one per language (positives: real text, negatives: docs_clean)")
            positives = write_positive_sets(paths.work / "positives")
            langs = sorted(summary["jobs"]["clean"]["by_lang"])
            summary["jobs"]["train_quality"] = {}
            for lang in langs:
                clean_docs = summary["jobs"]["clean"]["by_lang"][lang]["kept"]
                if lang not in positives or clean_docs < cfg.quality.min_examples:
                    log(f"      {lang}: {clean_docs} clean documents, fewer than quality.min_examples: no classifier")
                    continue
                summary["jobs"]["train_quality"][lang] = train_quality_job(
                    spark, str(paths.lake), lang, str(positives[lang]), cfg.quality)
            log("[6/23] score and keep the best of each language")
            summary["jobs"]["score_quality"] = score_quality_job(spark, str(paths.lake), cfg.score)
            log(f"[7/23] export the proxies' shards → {paths.shards / sweep_stage(cfg)}")
            summary["jobs"]["export_proxy"] = export_job(
                spark, str(paths.lake), str(paths.shards), sweep_stage(cfg),
                dataclasses.replace(cfg.export, langs=tuple(cfg.mixture.langs)))
            log("[8/23] count tokens: docs_curated, docs_scored (quality bands)")
            summary["jobs"]["count_tokens"] = {
                table: count_tokens_job(spark, str(paths.lake), dataclasses.replace(cfg.tokens, table=table))
                for table in (DOCS_CURATED, DOCS_SCORED)}
            summary["jobs"].update(run_mixture(cfg, paths, log))
            log(f"[13/23] export the plan's shards and NeMo data configs → {paths.shards}")
            summary["jobs"]["export_plan"] = plan_export_job(spark, str(paths.lake), str(paths.shards),
                                                             str(paths.plan), cfg.export)
            if train:
                summary["jobs"].update(run_training(cfg, paths, log))
                if cfg.eval.contamination:
                    summary["jobs"]["contamination"] = run_contamination(spark, cfg, paths, log)
                summary["jobs"].update(run_evaluation(cfg, paths, summary["jobs"], log))
                summary.update(trace_lineage(cfg, paths, summary["jobs"], log))
            else:
                log("[14/23] training skipped (--no-train)")
            report = lake_report(spark, str(paths.lake), stage="stage1")
            summary["report"] = format_report(report)
            parent.log_text(summary["report"], "count_table.txt")
            parent.set_tags({f"table.{k}": f"v{v}" for k, v in report.versions.items()})
        finally:
            if previous_parent is None:
                os.environ.pop(tracking.PARENT_ENV, None)
            else:
                os.environ[tracking.PARENT_ENV] = previous_parent
    summary["mlflow_run_id"] = parent.run_id
    summary["mlflow_run_url"] = tracking.run_url("http://127.0.0.1:5000", parent.experiment_id, parent.run_id)
    summary["tracking_uri"] = tracking.tracking_uri(paths.work)
    return summary


def sweep_stage(cfg: PipelineConfig) -> str:
    """The shard stage the proxies train on (`mixture.sweep.stage`, default 'proxy')."""
    return str(cfg.mixture.sweep.get("stage", "proxy"))


def run_mixture(cfg: PipelineConfig, paths: PipelinePaths, log: Any) -> dict[str, Any]:
    """Sweep, fit, search and plan: each step the `sailyard` command does, in this process."""
    from data_engine.mixture.study import fit_sweep, plan_job, proxy_inputs, search_sweep
    from trainer.sweep import SweepConfig, run_sweep, sweep_id, sweep_results

    m = cfg.mixture
    sweep_cfg = from_dict(SweepConfig, {**m.sweep, "runs": m.runs}, "mixture.sweep")
    log(f"[9/23] mixture sweep: {m.runs} proxies ({sweep_cfg.preset}) over {', '.join(sorted(m.langs))}")
    budget1, budget2 = _budgets(paths, m)
    inputs = proxy_inputs(str(paths.lake), sweep_cfg.stage, m, budget1, m.runs)
    jobs: dict[str, Any] = {}
    # One folder per sweep's inputs: a rerun on the same data resumes (nothing to train), other data
    # (a new table version) gets a sweep of its own instead of being refused by the old one's folder.
    folder = paths.sweep / sweep_id(inputs.langs, inputs.mixtures, inputs.meta, sweep_cfg)[:16]
    result = run_sweep(str(paths.lake), str(folder), inputs.langs, inputs.mixtures, sweep_cfg,
                       meta=inputs.meta, tokenizer=inputs.tokenizer, log=lambda msg: log(f"      {msg}"))
    jobs["mixture_sweep"] = dataclasses.asdict(result)
    results = sweep_results(str(folder))
    log("[10/23] mixture fit: LightGBM per language, cross-validated")
    jobs["mixture_fit"] = fit_sweep(folder, results, m)
    log(f"[11/23] mixture search → {paths.mixture}")
    jobs["mixture_search"] = search_sweep(folder, results, paths.mixture, m, force=cfg.force_mixture_search)
    log(f"[12/23] two-stage plan → {paths.plan}")
    jobs["plan"] = plan_job(paths.mixture, paths.plan, m, budget_stage1=budget1, budget_stage2=budget2,
                            lake=str(paths.lake))
    return jobs


def _budgets(paths: PipelinePaths, m: MixtureConfig) -> tuple[int, int]:
    """The configured stage budgets; unset, one pass over the curated stage-1 tokens for each stage
    (a default that always fits the caps, whatever the corpus)."""
    from data_engine.tokens import read_token_counts

    if m.budget_stage1 and m.budget_stage2:
        return m.budget_stage1, m.budget_stage2
    tokens = read_token_counts(str(paths.lake), m.plan.base_table).tokens()
    one_pass = sum(n for lang, n in tokens.items() if lang in m.langs)
    return m.budget_stage1 or one_pass, m.budget_stage2 or m.budget_stage1 or one_pass


def run_training(cfg: PipelineConfig, paths: PipelinePaths, log: Any) -> dict[str, Any]:
    """Base model → LlamaPro expansion → NeMo import → the plan's stages → HF export, each step the
    command a user would type, in a child process; returns each step's job summary.

    Reruns reuse what is there: the same random base, an expansion of the same source, an import
    of the same files, and stage runs named after the plan's digest (finished: nothing to train).
    """
    from trainer.base_model import model_args, write_random_qwen2
    from trainer.config import TrainConfig
    from trainer.stages import read_sections

    b = cfg.base_model
    train_doc, stage2_doc = read_sections(cfg.train_config)
    shape = TrainConfig.from_dict(train_doc, where="train", source=str(cfg.train_config or "defaults"))
    jobs: dict[str, Any] = {}
    if b.hf_dir:
        base = Path(b.hf_dir).expanduser().resolve()
        log(f"[14/23] base model: {base}")
    else:
        base = paths.base / "random-qwen2"
        log(f"[14/23] base model: a seeded random {b.layers}-layer Qwen2 → {base}")
        write_random_qwen2(base, dataclasses.replace(shape.model, num_layers=b.layers), seed=b.seed)
    jobs["base_model"] = {"hf_dir": str(base)}
    model_dir = base
    if b.expand_to:
        model_dir = paths.base / f"expanded-{b.expand_to}"
        log(f"[15/23] LlamaPro expansion → {b.expand_to} layers: {model_dir}")
        jobs["expand"] = _expanded(base, b.expand_to, model_dir)
    seq_length = shape.data.seq_length
    imported = paths.base / "nemo"
    log(f"[16/23] import into NeMo (sequence length {seq_length}) → {imported}")
    jobs["import_hf"] = _imported(model_dir, imported, seq_length)
    hf_config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    doc = {"train": {**train_doc, "work_dir": str(paths.work), "restore_from": str(imported),
                     "model": dataclasses.asdict(model_args(hf_config, seq_length=shape.model.seq_length)),
                     "data": {**(train_doc.get("data") or {}), "lake": str(paths.lake)}},
           "stage2": stage2_doc}
    config_path = paths.work / "train.yaml"
    config_path.write_text(yaml.safe_dump(json.loads(json.dumps(doc, default=str)), sort_keys=False,
                                          allow_unicode=True), encoding="utf-8")
    last = None
    for number in cfg.train_stages:
        log(f"[{16 + number}/23] NeMo stage {number} on the plan's stage-{number} shards")
        last = jobs[f"train_stage{number}"] = _job("trainer.pretrain", "--stage", str(number), "--plan",
                                                    str(paths.plan), "--config", str(config_path),
                                                    "--shards", str(paths.shards))
    if cfg.export_hf and last is not None:
        out = paths.hf / Path(last["checkpoint"]).parent.name
        log(f"[19/23] export stage {cfg.train_stages[-1]}'s final checkpoint to Hugging Face → {out}")
        jobs["export_hf"] = _job("jobs.export_hf", "--checkpoint", last["checkpoint"], "--out", str(out),
                                 "--overwrite")
    return jobs


def eval_suites(cfg: PipelineConfig, log: Any) -> list[str]:
    """The configured suites whose data is here (sea-mini needs the real sets)."""
    from eval.datasets import default_data_root

    suites = []
    for suite in cfg.eval.suites:
        if suite == "sea-mini" and not (default_data_root() / "sib200").is_dir():
            log(f"      sea-mini skipped: its eval sets are not at {default_data_root()} (set SAILYARD_EVAL_DATA)")
            continue
        suites.append(suite)
    return suites


def run_contamination(spark: Any, cfg: PipelineConfig, paths: PipelinePaths, log: Any) -> dict[str, Any]:
    """Every eval suite's items audited against each table version the plan's shards came from
    (`spark-submit jobs/contamination.py --suite S --table T --input-version V`, in this session)."""
    from data_engine.contamination import ContaminationConfig, items_from_records
    from data_engine.contamination.job import contamination_job
    from eval.suites import contamination_items

    suites = eval_suites(cfg, lambda _msg: None)
    records = [r for suite in suites for r in contamination_items(suite)]
    items = items_from_records(records, f"suites {', '.join(suites)}")
    plan = yaml.safe_load(paths.plan.read_text(encoding="utf-8"))
    tables = sorted({(s["table"], int(s["version"])) for s in plan["shards"].values()})
    out: dict[str, Any] = {"items": len(items), "suites": suites, "audits": {}}
    for table, version in tables:
        log(f"[20/23] contamination audit: {len(items)} items of {', '.join(suites)} against {table}@v{version}")
        result = contamination_job(spark, str(paths.lake), items, ContaminationConfig(table=table),
                                   input_version=version, items_source=",".join(suites))
        out["audits"][f"{table}@v{version}"] = {k: result.get(k) for k in (
            "items", "contaminated_any", "contaminated_share", "hit_pairs", "mlflow_run_id", "stage_seconds")}
    return out


def run_evaluation(cfg: PipelineConfig, paths: PipelinePaths, jobs: dict[str, Any], log: Any) -> dict[str, Any]:
    """Each trained stage's final checkpoint scored on the eval suites (`sailyard eval`, a child
    process each), then compared side by side (`sailyard eval compare`)."""
    e = cfg.eval
    suites = eval_suites(cfg, log)
    targets = []
    for number in cfg.train_stages:
        checkpoint = (jobs.get(f"train_stage{number}") or {}).get("checkpoint")
        export = jobs.get("export_hf") or {}
        if export.get("checkpoint") == checkpoint and export.get("out"):
            checkpoint = export["out"]  # already exported: score that HF dir (its record names the checkpoint)
        if checkpoint:
            targets.append((f"stage{number}", checkpoint))
    out: dict[str, Any] = {}
    if not suites or not targets:
        return out
    limit = [] if e.limit is None else ["--limit", str(e.limit)]
    runs = []
    for label, checkpoint in targets:
        for suite in suites:
            log(f"[21/23] eval {label} on {suite}" + (f" ({e.limit} items per task and language)" if e.limit else ""))
            result = out[f"eval_{label}_{suite}"] = _job(
                "jobs.evaluate", "--checkpoint", checkpoint, "--suite", suite, "--work-dir", str(paths.work),
                "--batch-size", str(e.batch_size), "--no-progress", *limit)
            runs.append(result["mlflow_run_id"])
    log("[22/23] eval compare: the checkpoints side by side")
    out["eval_compare"] = _job("jobs.evaluate", "compare", *runs, "--work-dir", str(paths.work))
    return out


def trace_lineage(cfg: PipelineConfig, paths: PipelinePaths, jobs: dict[str, Any], log: Any) -> dict[str, Any]:
    """The last stage's checkpoint traced back to its source files (`sailyard lineage`)."""
    from trainer.lineage import lineage, render

    stages = [n for n in cfg.train_stages if (jobs.get(f"train_stage{n}") or {}).get("checkpoint")]
    if not stages:
        return {}
    checkpoint = jobs[f"train_stage{stages[-1]}"]["checkpoint"]
    log(f"[23/23] lineage of {checkpoint}")
    chain = lineage(checkpoint, work_dir=paths.work)
    return {"lineage": chain, "lineage_text": render(chain)}


def _expanded(base: Path, layers: int, out: Path) -> dict[str, Any]:
    record = out / "expansion.json"
    if record.is_file():
        done = json.loads(record.read_text(encoding="utf-8"))
        if (done.get("source") == str(base) and done.get("new_layers") == layers
                and _same_files(base, done.get("input_sha256"))):
            return {"out": str(out), "reused": True, "new_layer_indices": done["new_layer_indices"]}
        shutil.rmtree(out)
    return _job("jobs.expand", "--model", str(base), "--to-layers", str(layers), "--out", str(out))


def _same_files(root: Path, digests: dict[str, str] | None) -> bool:
    """Whether `root` still holds the files a record hashed (name → sha256), unchanged."""
    from data_engine.digests import file_digest

    return bool(digests) and all((root / name).is_file() and file_digest(root / name) == digest
                                 for name, digest in digests.items())


def _imported(model_dir: Path, out: Path, seq_length: int) -> dict[str, Any]:
    from trainer.convert import IMPORT_RECORD

    record = out / IMPORT_RECORD
    if record.is_file():
        done = json.loads(record.read_text(encoding="utf-8"))
        if (done.get("source") == str(model_dir) and done.get("seq_length") == seq_length
                and _same_files(model_dir, done.get("files"))):
            return {"checkpoint": str(out), "reused": True}
    return _job("jobs.import_hf", "--model", str(model_dir), "--out", str(out), "--seq-length", str(seq_length),
                "--overwrite")


def _job(module: str, *args: str) -> dict[str, Any]:
    """`python -m module args…` as a user runs it; its JSON summary (the last stdout line).

    Raises:
        SailyardError: the job failed (its error, or its exit code).
    """
    proc = subprocess.run([sys.executable, "-m", module, *args], stdout=subprocess.PIPE, stderr=None, text=True,
                          env=os.environ.copy())
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    try:
        result = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        result = {}
    if proc.returncode != 0 or result.get("status") != "ok":
        raise SailyardError(f"{module} failed: {result.get('error') or f'exit {proc.returncode}, see the log above'}")
    return result
