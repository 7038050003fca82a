"""The RegMix sweep: one proxy per mixture, in parallel, each a nested MLflow run; resumable.

    run_sweep(lake, out_dir, langs, mixtures, cfg, meta=...)   train what is not finished yet
    sweep_results(out_dir)                                      the finished proxies, for the fit

`out_dir/sweep.json` pins the sweep: its id (sha256 of the canonical JSON of langs, mixtures, meta
and config), its MLflow run, the mixtures themselves. Proxies run in `workers` spawned processes
(each with `threads` torch threads) and return their losses; only this process writes to MLflow,
one FINISHED child run per proxy, so a proxy counts as done exactly when its child run is FINISHED.
A rerun with the same inputs reopens the sweep run and trains only the proxies without one; a
sweep killed at any point (SIGKILL included) therefore resumes where it stopped, and no proxy is
finished twice. Other inputs in the same out_dir are refused: it holds another sweep.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from data_engine import tracking
from data_engine.errors import ConfigError, InputError
from trainer.proxy import ProxyConfig, ProxyData, ProxyResult, load_shards, proxy_config

SWEEP_JSON = "sweep.json"
KIND = "sweep"
PROXY_KIND = "proxy"
SWEEP_TAG = "sailyard.sweep_id"
INDEX_TAG = "sailyard.proxy_index"


@dataclass(frozen=True)
class SweepConfig:
    preset: str = "tiny"  # trainer.proxy.PRESETS
    proxy: dict[str, Any] = field(default_factory=dict)  # ProxyConfig fields overriding the preset
    workers: int = 2  # proxies trained at once (processes); not part of the sweep's identity
    runs: int = 16  # mixtures the caller samples
    stage: str = "proxy"  # shard_manifest stage the proxies train on

    def __post_init__(self) -> None:
        problems = [f"{k}: must be positive, got {getattr(self, k)}" for k in ("workers", "runs")
                    if getattr(self, k) < 1]
        if not self.stage:
            problems.append("stage: must not be empty")
        if problems:
            raise ConfigError("sweep: " + "; ".join(problems))
        self.proxy_config()  # an unknown preset or a bad override fails here, at load time

    def proxy_config(self) -> ProxyConfig:
        return proxy_config(self.preset, self.proxy)


@dataclass(frozen=True)
class SweepResult:
    sweep_id: str
    mlflow_run_id: str
    out_dir: str
    proxies: int  # mixtures in the sweep
    finished: int  # proxies with a FINISHED child run, all calls together
    ran: int  # proxies trained by this call
    skipped: int  # proxies already finished before this call
    seconds_per_proxy: float | None  # mean training time of this call's proxies (in their worker)
    proxies_per_minute: float | None  # this call's proxies over its wall time, worker start-up included


@dataclass(frozen=True)
class SweepResults:
    """The finished proxies of a sweep, in proxy-index order: the regression's training data."""

    sweep_id: str
    langs: list[str]  # the mixture columns
    weights: np.ndarray  # n × len(langs), as given to run_sweep
    losses: dict[str, np.ndarray]  # target language → n validation losses
    train_loss: np.ndarray
    indices: list[int]  # proxy index of each row
    run_ids: list[str]
    meta: dict[str, Any]
    proxies: int  # mixtures in the sweep, finished or not
    mlflow_run_id: str  # the sweep's run: fit, search and plan nest under it


def sweep_id(langs: list[str], mixtures: np.ndarray, meta: Mapping[str, Any], cfg: SweepConfig) -> str:
    """sha256 of the canonical JSON of what decides the results (workers do not)."""
    doc = {"langs": list(langs), "mixtures": np.asarray(mixtures, dtype=np.float64).tolist(), "meta": meta,
           "config": _identity(cfg)}
    return hashlib.sha256(_canonical(doc).encode()).hexdigest()


def _identity(cfg: SweepConfig) -> dict[str, Any]:
    return {"preset": cfg.preset, "proxy": cfg.proxy_config().to_dict(), "runs": cfg.runs, "stage": cfg.stage}


def _canonical(obj: Any) -> str:
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"sweep inputs must be plain JSON data (meta included): {exc}") from exc


def _check_inputs(langs: list[str], mixtures: np.ndarray, data: ProxyData) -> np.ndarray:
    w = np.asarray(mixtures, dtype=np.float64)
    problems = []
    if not langs or len(set(langs)) != len(langs):
        problems.append(f"langs must be distinct and non-empty, got {langs}")
    missing = sorted(set(langs) - set(data.langs))
    if missing:
        problems.append(f"{missing} have no shards in stage {data.stage!r} (it has {data.langs})")
    if w.ndim != 2 or w.shape[0] < 1 or w.shape[1] != len(langs):
        problems.append(f"mixtures must be an n × {len(langs)} array (one column per language), got shape {w.shape}")
    elif not np.isfinite(w).all() or (w < 0).any() or not (w.sum(axis=1) > 0).all():
        problems.append("every mixture must be finite, ≥ 0 and have a positive weight")
    if problems:
        raise ConfigError("sweep: " + "; ".join(problems))
    return w


def run_sweep(lake: str | Path, out_dir: str | Path, langs: list[str], mixtures: np.ndarray, cfg: SweepConfig, *,
              meta: Mapping[str, Any], tokenizer: str = "qwen2.5",
              log: Callable[[str], None] = print) -> SweepResult:
    """Train a proxy for every row of `mixtures` (columns: `langs`) not finished yet; see the module doc.

    Raises:
        ConfigError: bad inputs; out_dir holding another sweep; the stage's shards changed since the
            sweep began; another process running this sweep now.
        TableNotFoundError / ConfigError: the shards (see `trainer.proxy.load_shards`).
    """
    pcfg = cfg.proxy_config()
    data = load_shards(lake, cfg.stage, tokenizer, split=pcfg.split)
    w = _check_inputs(list(langs), mixtures, data)
    meta = dict(meta)
    sid = sweep_id(list(langs), w, meta, cfg)
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    work_dir = tracking.work_dir_for(lake)
    with _exclusive(out):
        doc = _read_json(out) if (out / SWEEP_JSON).exists() else None
        if doc is not None:
            _check_same(doc, sid, data, out)
            opened = tracking.reopen_run(doc["mlflow_run_id"], work_dir=work_dir)
        else:
            params = {"preset": cfg.preset, "proxy": pcfg.to_dict(), "runs": cfg.runs, "stage": cfg.stage,
                      "workers": cfg.workers, "proxies": len(w), "langs": list(langs), "tokenizer": tokenizer,
                      "meta": meta}
            opened = tracking.start_run("mixture_sweep", work_dir=work_dir, kind=KIND, params=params)
        with opened as run:
            if doc is None:
                doc = {"sweep_id": sid, "mlflow_run_id": run.run_id, "langs": list(langs), "mixtures": w.tolist(),
                       "meta": meta, "config": dataclasses.asdict(cfg), "proxy_config": pcfg.to_dict(),
                       "lake": str(Path(lake).resolve()), "work_dir": str(work_dir), "tokenizer": tokenizer,
                       "stage": cfg.stage, "shard_manifest_version": data.manifest_version,
                       "shard_manifest_digest": data.digest}
                _write_json(out, doc)
                run.set_tags({SWEEP_TAG: sid, "shard_manifest_digest": data.digest})
                run.log_dict(doc, SWEEP_JSON)
            done = _finished(run, work_dir, sid)
            todo = [i for i in range(len(w)) if i not in done]
            log(f"sweep {sid[:12]}: {len(w)} proxies, {len(done)} already finished, {len(todo)} to train "
                f"({cfg.workers} workers, preset {cfg.preset})")
            ran, seconds, started = _train(run, data, list(langs), w, pcfg, todo, sid, cfg.workers, done, log)
    minutes = (time.time() - started) / 60
    return SweepResult(sweep_id=sid, mlflow_run_id=doc["mlflow_run_id"], out_dir=str(out), proxies=len(w),
                       finished=len(done), ran=ran, skipped=len(w) - len(todo),
                       seconds_per_proxy=round(float(np.mean(seconds)), 3) if seconds else None,
                       proxies_per_minute=round(ran / minutes, 3) if ran and minutes > 0 else None)


def _train(run: tracking.Run, data: ProxyData, langs: list[str], w: np.ndarray, pcfg: ProxyConfig,
           todo: list[int], sid: str, workers: int, done: set[int],
           log: Callable[[str], None]) -> tuple[int, list[float], float]:
    """Train `todo` in a spawned process pool; record each proxy as it finishes. Returns (proxies
    trained, their training seconds, wall-clock start)."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    started = time.time()
    if not todo:
        return 0, [], started
    if pcfg.compact_vocab:
        data.vocabulary()  # once here, not in every worker: it travels with the data
    seconds: list[float] = []
    pool = ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=multiprocessing.get_context("spawn"))
    try:
        pending = {pool.submit(_proxy, data, dict(zip(langs, w[i].tolist(), strict=True)), pcfg): i for i in todo}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                index = pending.pop(future)
                try:
                    result, began = future.result()
                except BaseException:
                    log(f"sweep {sid[:12]}: proxy {index} failed; the finished proxies are kept, a rerun resumes")
                    raise
                _record(run, index, langs, w[index], pcfg, result, sid, began)
                done.add(index)
                seconds.append(result.seconds)
                rate = len(seconds) / max((time.time() - started) / 60, 1e-9)
                run.log_metrics({"proxies_finished": len(done), "proxies_per_minute": rate}, step=len(done))
                mean = float(np.mean(list(result.val_loss.values())))
                log(f"sweep {sid[:12]}: proxy {index} finished ({len(done)}/{len(w)}) in {result.seconds:.1f}s, "
                    f"mean val loss {mean:.4f}, {rate:.1f} proxies/min")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return len(seconds), seconds, started


def _proxy(data: ProxyData, weights: dict[str, float], cfg: ProxyConfig) -> tuple[ProxyResult, float]:
    """In a worker: one proxy, no MLflow. Returns its result and when it began (epoch seconds)."""
    from trainer.proxy import train_proxy

    began = time.time()
    return train_proxy(data, weights, cfg), began


def _record(run: tracking.Run, index: int, langs: list[str], weights: np.ndarray, pcfg: ProxyConfig,
            result: ProxyResult, sid: str, began: float) -> str:
    params: dict[str, Any] = {f"w.{lang}": float(x) for lang, x in zip(langs, weights, strict=True)}
    params.update({f"proxy.{k}": v for k, v in pcfg.to_dict().items()})
    params["proxy_index"] = index
    metrics = {f"val_loss.{lang}": loss for lang, loss in result.val_loss.items()}
    metrics.update(train_loss=result.train_loss, seconds=result.seconds, steps=result.steps, tokens=result.tokens)
    return tracking.record_run(run, f"proxy-{index:04d}", kind=PROXY_KIND, params=params, metrics=metrics,
                               tags={SWEEP_TAG: sid, INDEX_TAG: index}, start_time=began)


def _finished(run: tracking.Run, work_dir: Path, sid: str) -> set[int]:
    """Proxy indices with a FINISHED child run; children left RUNNING by a killed sweep are marked KILLED
    (their proxy is trained again)."""
    done = set()
    for child in tracking.child_runs(work_dir, run.run_id):
        tags = child.data.tags
        if tags.get(SWEEP_TAG) != sid or INDEX_TAG not in tags:
            continue
        if child.info.status == "FINISHED":
            done.add(int(tags[INDEX_TAG]))
        elif child.info.status == "RUNNING":
            run.client.set_terminated(child.info.run_id, status="KILLED")
    return done


def _check_same(doc: Mapping[str, Any], sid: str, data: ProxyData, out: Path) -> None:
    if doc.get("sweep_id") != sid:
        raise ConfigError(f"{out} holds another sweep ({str(doc.get('sweep_id'))[:12]}…: "
                          f"{len(doc.get('mixtures', []))} mixtures over {doc.get('langs')}, config "
                          f"{doc.get('config')}); these inputs make sweep {sid[:12]}… — give a new out dir, "
                          "or remove that one to start over")
    if doc.get("shard_manifest_digest") != data.digest:
        raise ConfigError(f"{out}: the shards of stage {data.stage!r} changed since this sweep began "
                          f"(manifest digest {str(doc.get('shard_manifest_digest'))[:12]}…, now "
                          f"{data.digest[:12]}…); its finished proxies were trained on other data — start "
                          "a new sweep in a new out dir")


@contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """An exclusive lock on out_dir for the sweep's lifetime: two processes must not both resume it.
    The kernel drops it when the holder dies, SIGKILL included."""
    import fcntl

    with open(out / ".sweep.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise ConfigError(f"another process is running the sweep in {out}") from exc
        yield


def _read_json(out: Path) -> dict[str, Any]:
    path = out / SWEEP_JSON
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    if not isinstance(doc, dict) or not {"sweep_id", "mlflow_run_id", "langs", "mixtures"} <= set(doc):
        raise InputError(f"{path} is not a sweep file (needs sweep_id, mlflow_run_id, langs, mixtures)")
    return doc


def _write_json(out: Path, doc: Mapping[str, Any]) -> None:
    tmp = out / f".{SWEEP_JSON}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, out / SWEEP_JSON)


def sweep_results(out_dir: str | Path) -> SweepResults:
    """The sweep in `out_dir` (sweep.json) with the losses of its FINISHED proxies from MLflow.

    Raises:
        InputError: no sweep.json, or no finished proxy yet.
    """
    out = Path(out_dir).expanduser().resolve()
    if not (out / SWEEP_JSON).exists():
        raise InputError(f"{out} holds no {SWEEP_JSON}: run the sweep first")
    doc = _read_json(out)
    sid, langs, w = doc["sweep_id"], list(doc["langs"]), np.asarray(doc["mixtures"], dtype=np.float64)
    by_index: dict[int, Any] = {}
    for child in tracking.child_runs(doc["work_dir"], doc["mlflow_run_id"]):
        tags = child.data.tags
        if child.info.status == "FINISHED" and tags.get(SWEEP_TAG) == sid and INDEX_TAG in tags:
            by_index.setdefault(int(tags[INDEX_TAG]), child)  # oldest first
    if not by_index:
        raise InputError(f"sweep {sid[:12]} in {out} has no finished proxy yet: run (or resume) the sweep")
    indices = sorted(by_index)
    runs = [by_index[i] for i in indices]
    targets = sorted({k[len("val_loss."):] for r in runs for k in r.data.metrics if k.startswith("val_loss.")})
    losses = {t: np.array([r.data.metrics.get(f"val_loss.{t}", math.nan) for r in runs]) for t in targets}
    return SweepResults(sweep_id=sid, langs=langs, weights=w[indices], losses=losses,
                        train_loss=np.array([r.data.metrics.get("train_loss", math.nan) for r in runs]),
                        indices=indices, run_ids=[r.info.run_id for r in runs], meta=dict(doc.get("meta") or {}),
                        proxies=len(w), mlflow_run_id=doc["mlflow_run_id"])
