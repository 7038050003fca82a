"""Launch a training run with NeMo-Run: here (`local`) or as a Slurm batch job (`slurm`).

    python -m trainer.pretrain --config Y              train in this process (as always)
    python -m trainer.pretrain --config Y --launch     submit it through the config's `launch:` section
    python -m trainer.pretrain --config Y --dry-run    print what --launch would submit; submit nothing

The file's `train:` section is resolved (preset, overrides, command-line options), written out as
one YAML file, and the job runs `python -m trainer.pretrain --config <that file>` — the in-process
path above — under `torchrun` when it has more than one device per node. The `launch:` section,
beside `train:`, says where:

    launch:
      executor: slurm                      # local | slurm
      env_vars: {MLFLOW_TRACKING_URI: ...}  # set for the training processes
      slurm:
        account: my-account                # required
        partition: gpu
        time: "2-00:00:00"                 # required: Slurm's default would end a real run early
        container_image: nvcr.io/...       # required: an image with NeMo and sailyard's dependencies
        container_mounts: [/lustre:/lustre] # every path of the train section must lie inside one
        job_dir: /lustre/me/nemo_run       # required: where the code, the sbatch script and logs go
        code: git                          # git: ship this checkout's HEAD; installed: the image has it
        nodes: null                        # null: train.parallel.nodes (given, they must agree)
        gpus_per_node: null                # null: train.parallel.devices_per_node
        tunnel: {kind: local}              # local: submit from a login node; ssh: {kind: ssh, host, user}

With `code: git`, NeMo-Run ships the *committed* HEAD of this checkout (git archive) to the job, so
uncommitted changes to tracked files are refused at launch. A Slurm job's paths are the
cluster's: every path in the train section must be given, absolute, and inside a container mount.
With an ssh tunnel the submitting machine need not see them, so their existence is not checked.

A local launch blocks until the run ends (NeMo-Run's log tail goes to stderr); a Slurm launch
returns once `sbatch` has accepted the job. Either way the last stdout line is the job summary.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from data_engine.config import build, report
from data_engine.errors import ConfigError, SailyardError
from trainer.config import TrainConfig, read_section

#: The repository root (the code `code: git` ships, and the import root of a local launch).
REPO = Path(__file__).resolve().parents[1]
#: The train section's path fields, as dotted keys.
PATH_KEYS = ("work_dir", "checkpoint_dir", "restore_from", "data.lake", "data.paths_file")
SLURM_TIME = re.compile(r"\d+(:\d{1,2}){0,2}|\d+-\d+(:\d{1,2}){0,2}|UNLIMITED|infinite")


class LaunchError(SailyardError):
    """A launched run did not succeed."""


@dataclass(frozen=True)
class TunnelArgs:
    """How NeMo-Run reaches the Slurm controller."""

    kind: Literal["local", "ssh"] = "local"  # local: this machine has sbatch (a login node)
    host: str | None = None  # ssh only
    user: str | None = None  # ssh only
    identity: str | None = None  # ssh only: a private key file; null: the ssh agent's keys
    port: int | None = None  # ssh only; null: 22


@dataclass(frozen=True)
class SlurmArgs:
    """The batch job (NeMo-Run's `SlurmExecutor`); nodes and GPUs follow `train.parallel`."""

    account: str | None = None
    partition: str | None = None
    qos: str | None = None
    time: str | None = None  # D-HH:MM:SS, HH:MM:SS, MM or D-HH
    nodes: int | None = None  # null: train.parallel.nodes
    gpus_per_node: int | None = None  # null: train.parallel.devices_per_node
    ntasks_per_node: int | None = None  # null: one process per GPU (torchrun starts them)
    cpus_per_task: int | None = None
    mem: str | None = None  # per node, e.g. 0 (all) or 1000G
    exclusive: bool = False
    container_image: str | None = None
    container_mounts: tuple[str, ...] = ()  # "src:dst[:flags]" or "path" (the same inside)
    job_dir: str | None = None  # on the cluster (absolute)
    code: Literal["git", "installed"] = "git"
    tunnel: TunnelArgs = field(default_factory=TunnelArgs)


@dataclass(frozen=True)
class LaunchArgs:
    """Where `--launch` runs the train section."""

    executor: Literal["local", "slurm"] = "local"
    env_vars: dict[str, str] = field(default_factory=dict)
    slurm: SlurmArgs = field(default_factory=SlurmArgs)


@dataclass(frozen=True)
class Launch:
    """A run ready to hand to NeMo-Run."""

    cfg: TrainConfig
    args: LaunchArgs
    config_text: str  # the resolved train section the job reads


# --- the launch section ---------------------------------------------------------------------------


def read_launch(path: str | Path) -> LaunchArgs:
    """The `launch:` section of a config file (defaults, a local launch, when it has none).

    Raises:
        ConfigError: unreadable, unknown keys or wrong types.
    """
    doc, where = read_section(path, "launch")
    if where != "launch" or doc is None:
        doc = {}
    problems: list[str] = []
    args = build(LaunchArgs, doc, "launch", problems)
    if problems:
        raise ConfigError(report(str(path), problems))
    assert isinstance(args, LaunchArgs)
    return args


def launch_problems(args: LaunchArgs, cfg: TrainConfig, train_doc: Any = None, *,
                    work_dir_override: bool = False) -> list[str]:
    """Everything that would make the submitted job fail for a reason known now.

    `train_doc` is the train section as written (before presets and defaults), which tells a path
    the user gave from one that defaulted to a folder relative to this machine's directory.
    """
    par = cfg.parallel
    if args.executor == "local":
        if par.nodes != 1:
            return [f"launch.executor: local runs on this machine only; train.parallel.nodes is {par.nodes} "
                    "(use executor: slurm)"]
        return []
    s, problems = args.slurm, []
    for key, why in (("account", "the Slurm account to charge"),
                     ("time", "the time limit; Slurm's default would end a real run early"),
                     ("container_image", "an image with NeMo and sailyard's dependencies (pyxis/enroot)"),
                     ("job_dir", "the folder on the cluster for the code, sbatch script and logs")):
        if not getattr(s, key):
            problems.append(f"launch.slurm.{key}: required ({why})")
    if s.time and not SLURM_TIME.fullmatch(s.time):
        problems.append(f"launch.slurm.time: {s.time!r} is not a Slurm time (D-HH:MM:SS, HH:MM:SS or minutes)")
    if s.job_dir and not PurePosixPath(s.job_dir).is_absolute():
        problems.append(f"launch.slurm.job_dir: must be an absolute path on the cluster, got {s.job_dir!r}")
    for key, given, wanted in (("nodes", s.nodes, par.nodes), ("gpus_per_node", s.gpus_per_node, par.devices_per_node),
                               ("ntasks_per_node", s.ntasks_per_node, par.devices_per_node)):
        if given is not None and given != wanted:
            source = "nodes" if key == "nodes" else "devices_per_node"
            problems.append(f"launch.slurm.{key} ({given}) differs from train.parallel.{source} ({wanted}); "
                            "leave it null to follow the train section")
    t = s.tunnel
    for key, value in (("cpus_per_task", s.cpus_per_task), ("tunnel.port", t.port)):
        if value is not None and value <= 0:
            problems.append(f"launch.slurm.{key}: must be positive, got {value}")
    if t.kind == "ssh":
        problems += [f"launch.slurm.tunnel.{key}: required with kind: ssh" for key in ("host", "user")
                     if not getattr(t, key)]
    else:
        problems += [f"launch.slurm.tunnel.{key}: only used with kind: ssh" for key in ("host", "user", "identity",
                                                                                         "port")
                     if getattr(t, key) is not None]
    targets = []
    for i, mount in enumerate(s.container_mounts):
        parts = mount.split(":")
        if not 1 <= len(parts) <= 3 or not all(PurePosixPath(p).is_absolute() for p in parts[:2]):
            problems.append(f"launch.slurm.container_mounts[{i}]: expected 'src:dst[:flags]' or an absolute "
                            f"path, got {mount!r}")
        else:
            targets.append(PurePosixPath(parts[1] if len(parts) > 1 else parts[0]))
    problems += _cluster_path_problems(cfg, train_doc, targets if s.container_image else None,
                                       work_dir_override=work_dir_override)
    return problems


def _cluster_path_problems(cfg: TrainConfig, train_doc: Any, mounts: list[PurePosixPath] | None, *,
                           work_dir_override: bool) -> list[str]:
    """A Slurm job's paths must be the cluster's: given, absolute, inside a container mount."""
    problems = []
    doc = train_doc if isinstance(train_doc, Mapping) else {}
    for key in PATH_KEYS:
        value: Any = cfg
        for part in key.split("."):
            value = getattr(value, part)
        if value is None:
            continue
        raw: Any = doc
        for part in key.split("."):
            raw = raw.get(part) if isinstance(raw, Mapping) else None
        if key == "work_dir" and work_dir_override:
            raw = str(value)
        if raw is None:
            problems.append(f"train.{key}: not set; a Slurm job needs an absolute path on the cluster "
                            f"(the default would be {value}, a folder on this machine)")
        elif not PurePosixPath(str(raw)).is_absolute():
            problems.append(f"train.{key}: {raw!r} is relative; a Slurm job needs an absolute path on the cluster")
        elif mounts is not None and not any(PurePosixPath(value).is_relative_to(m) for m in mounts):
            problems.append(f"train.{key}: {value} is inside no launch.slurm.container_mounts target, so the "
                            "job would not see it (or would lose what it writes there)")
    return problems


def prepare(config_file: str | Path, *, max_steps: int | None = None, work_dir: Path | None = None) -> Launch:
    """Read both sections of `config_file`, apply the command-line overrides, check everything.

    Raises:
        ConfigError: every problem of the train and launch sections, and of the two together.
    """
    from trainer.pretrain import with_overrides

    args = read_launch(config_file)
    remote = args.executor == "slurm" and args.slurm.tunnel.kind == "ssh"
    train_doc, where = read_section(config_file, "train")
    if not where and isinstance(train_doc, Mapping) and "launch" in train_doc:
        raise ConfigError(f"{config_file}: a file with a launch: section keeps the training config under train:")
    cfg = TrainConfig.from_yaml(config_file, local_files=not remote)
    cfg = with_overrides(cfg, max_steps=max_steps, work_dir=work_dir, source=f"{config_file} with command-line "
                         "overrides", local_files=not remote)
    problems = launch_problems(args, cfg, train_doc, work_dir_override=work_dir is not None)
    if problems:
        raise ConfigError(report(f"{config_file} (launch)", problems))
    return Launch(cfg=cfg, args=args, config_text=cfg.to_yaml())


# --- NeMo-Run -------------------------------------------------------------------------------------


def executor(launch: Launch, *, dry_run: bool) -> Any:
    """The NeMo-Run executor for `launch` (imports nemo_run)."""
    import nemo_run as run

    args, par = launch.args, launch.cfg.parallel
    torchrun = "torchrun" if par.world_size > 1 else None
    if args.executor == "local":
        return run.LocalExecutor(ntasks_per_node=par.devices_per_node, launcher=torchrun,
                                 env_vars=dict(args.env_vars))
    s = args.slurm
    assert s.job_dir is not None
    if s.tunnel.kind == "ssh":
        tunnel = run.SSHTunnel(host=s.tunnel.host, user=s.tunnel.user, job_dir=s.job_dir, identity=s.tunnel.identity,
                               port=s.tunnel.port)
    else:
        # The experiment folder is written where the job reads it: `<job_dir>/experiments/...`,
        # which is also where `submit` puts the experiment's local copy (base_dir = job_dir).
        tunnel = run.LocalTunnel(job_dir=os.path.join(s.job_dir, "experiments"))
    # A dry run packages nothing: the generated script does not depend on the packager.
    packager = run.GitArchivePackager(basepath=str(REPO)) if s.code == "git" and not dry_run else run.Packager()
    return run.SlurmExecutor(
        account=s.account, partition=s.partition, qos=s.qos, time=s.time, nodes=par.nodes,
        ntasks_per_node=par.devices_per_node, gpus_per_node=par.devices_per_node, cpus_per_task=s.cpus_per_task,
        mem=s.mem, exclusive=s.exclusive or None, container_image=s.container_image,
        container_mounts=list(s.container_mounts), env_vars=dict(args.env_vars), tunnel=tunnel, packager=packager,
        launcher=torchrun, job_name_prefix="sailyard-", poll_estimated_start_time=False)


def training_script(launch: Launch, config_path: str) -> Any:
    """The job: the in-process trainer on the resolved config."""
    import nemo_run as run

    if launch.args.executor == "local":
        # This interpreter and this checkout, whatever the current directory and PATH.
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
        return run.Script(path="trainer.pretrain", m=True, entrypoint=sys.executable, args=["--config", config_path],
                          env={"PYTHONPATH": path})
    return run.Script(path="trainer.pretrain", m=True, entrypoint="python", args=["--config", config_path])


def submit(launch: Launch, *, dry_run: bool = False, out: Any = None) -> dict[str, Any]:
    """Hand `launch` to NeMo-Run; on a dry run print the script and command instead (to `out`).

    The resolved config is kept with the run, at `<work_dir>/launch/<experiment>.yaml` (a Slurm
    job's work_dir is inside a container mount, so the job reads it there too). Returns the job
    summary fields. A local run is waited for; a Slurm one is only submitted.

    Raises:
        ConfigError: `code: git` with uncommitted changes to tracked files (they would not ship).
        LaunchError: the local run failed.
    """
    import nemo_run as run

    cfg, args = launch.cfg, launch.args
    slurm = args.executor == "slurm"
    if slurm and args.slurm.code == "git" and not dry_run:
        check_committed()
    exp_id = f"{cfg.name}_{time.time_ns()}"
    config_path = str(cfg.work_dir / "launch" / f"{exp_id}.yaml")  # as the job sees it
    ex = executor(launch, dry_run=dry_run)
    with contextlib.ExitStack() as stack:
        if dry_run:  # NeMo-Run writes its experiment folder even then: somewhere thrown away
            base_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="sailyard-launch-"))
        elif slurm and args.slurm.tunnel.kind == "local":
            # On a login node NeMo-Run's local experiment folder must be the one the job mounts
            # (LocalTunnel's `<job_dir>/experiments/<title>/<id>`), there is no copy step.
            base_dir = args.slurm.job_dir or ""
        elif slurm:
            base_dir = run.config.get_nemorun_home()  # this machine's record; NeMo-Run rsyncs it to job_dir
        else:
            base_dir = str(cfg.work_dir / "nemo_run")
        stack.enter_context(_quiet())
        if slurm and args.slurm.code == "git" and not dry_run:
            stack.enter_context(contextlib.chdir(REPO))  # NeMo-Run finds the repository from the cwd
        if not dry_run:
            _write_config(launch, config_path, ex)
        with run.Experiment(cfg.name, executor=ex, id=exp_id, base_dir=base_dir, clean_mode=True,
                            enable_goodbye_message=False, skip_status_at_exit=True) as exp:
            exp.add(training_script(launch, config_path), name=cfg.name)
            job = exp.jobs[-1]
            if dry_run:
                exp.dryrun(log=False)
                result = _dry_run_result(job, launch)
            else:
                exp.run(detach=slurm, tail_logs=not slurm)
                result = {"handle": job.handle}
        if not dry_run:
            result["state"] = str(job.state)  # a local run has ended here (the context waited for it)
    summary = {"run": cfg.name, "preset": cfg.preset, "executor": args.executor, "dry_run": dry_run,
               "experiment": exp_id, "config": config_path, **result}
    if dry_run:
        _print_dry_run(summary, launch, out or sys.stdout)
        summary = {k: v for k, v in summary.items() if k != "sbatch_script"}
    elif not slurm:
        logs = Path(base_dir) / "experiments" / cfg.name / exp_id
        summary["result"] = _run_summary(logs)
        if "SUCCEEDED" not in summary["state"]:
            error = (summary["result"] or {}).get("error", "no summary line")
            raise LaunchError(f"the local run {cfg.name} ended {summary['state']}: {error} (NeMo-Run's logs: {logs})")
    return summary


def _run_summary(logs: Path) -> dict[str, Any] | None:
    """The launched trainer's own job summary: the last line of its stdout log (rank 0's)."""
    for log in sorted(logs.glob("**/0/stdout.log")):
        lines = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
        with contextlib.suppress(ValueError, IndexError):
            found = json.loads(lines[-1])
            if isinstance(found, dict):
                return found
    return None


def _write_config(launch: Launch, config_path: str, ex: Any) -> None:
    """Put the resolved config where the job will read `config_path`.

    Locally and from a login node that is the same file system (through the container mount's
    source for a Slurm job); over ssh it is copied to the cluster.
    """
    host_path = config_path
    if launch.args.executor == "slurm":
        host_path = host_path(config_path, launch.args.slurm.container_mounts)
    if launch.args.executor == "slurm" and launch.args.slurm.tunnel.kind == "ssh":
        ex.tunnel.connect()
        ex.tunnel.run(f"mkdir -p {shlex.quote(str(PurePosixPath(host_path).parent))}")
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", encoding="utf-8", delete=False) as tmp:
            tmp.write(launch.config_text)
        try:
            ex.tunnel.put(tmp.name, host_path)
        finally:
            os.unlink(tmp.name)
        return
    Path(host_path).parent.mkdir(parents=True, exist_ok=True)
    Path(host_path).write_text(launch.config_text, encoding="utf-8")


def host_path(container_path: str, mounts: tuple[str, ...]) -> str:
    """The cluster path behind `container_path`, through the innermost container mount holding it."""
    path, best = PurePosixPath(container_path), None
    for mount in mounts:
        parts = mount.split(":")
        src, dst = PurePosixPath(parts[0]), PurePosixPath(parts[1] if len(parts) > 1 else parts[0])
        if path.is_relative_to(dst) and (best is None or len(dst.parts) > len(best[1].parts)):
            best = (src, dst)
    return str(best[0] / path.relative_to(best[1])) if best else container_path


def _dry_run_result(job: Any, launch: Launch) -> dict[str, Any]:
    """The command (and for Slurm the sbatch script) NeMo-Run generated for `job`."""
    request = job._dryrun_info.request  # torchx AppDryRunInfo; nemo_run keeps no public handle on it
    if launch.args.executor == "slurm":
        ex = request.executor
        script_path = os.path.join(ex.tunnel.job_dir, f"{ex.job_name}_sbatch.sh")  # where schedule() puts it
        return {"command": shlex.join([*request.launch_cmd, script_path]), "sbatch_script": request.materialize(),
                "job_dir": os.path.join(ex.tunnel.job_dir, Path(ex.job_dir).name)}
    (params,) = request.role_params[job.id]
    env = {k: v for k, v in params.env.items() if k in job.task.env}
    return {"command": shlex.join([*(f"{k}={v}" for k, v in env.items()), *params.args])}


def _print_dry_run(summary: Mapping[str, Any], launch: Launch, out: Any) -> None:
    print(f"# Dry run: nothing submitted. Executor: {summary['executor']}.", file=out)
    print("# Launch command:", file=out)
    print(summary["command"], file=out)
    if "sbatch_script" in summary:
        print("# sbatch script:", file=out)
        print(summary["sbatch_script"].rstrip("\n"), file=out)
    print(f"# Resolved config ({summary['config']}):", file=out)
    print(launch.config_text.rstrip("\n"), file=out, flush=True)


def check_committed(repo: Path = REPO) -> None:
    """`code: git` ships HEAD: refuse to launch other code than the checkout's working tree.

    Untracked files are not checked: git archive leaves them out, and so does the job.

    Raises:
        ConfigError: tracked files with uncommitted changes, or `repo` is no git checkout.
    """
    try:
        status = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                                check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ConfigError(f"launch.slurm.code: git needs sailyard's git checkout at {repo}; use code: installed "
                          "when the container image has sailyard installed") from exc
    changed = [line[3:] for line in status.splitlines() if line.strip()]
    if changed:
        raise ConfigError(f"launch.slurm.code: git ships the committed HEAD, and {len(changed)} tracked file(s) "
                          f"have uncommitted changes ({', '.join(changed[:5])}): commit them, or use code: installed")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """NeMo-Run logs to stdout with rich, and its shell commands (invoke) copy stdin to their
    children; the job contract keeps stdout for the summary, and a launch reads nothing."""
    from trainer.pretrain import stdout_to_stderr

    saved = sys.stdin
    with open(os.devnull, encoding="utf-8") as devnull, stdout_to_stderr(), contextlib.redirect_stdout(sys.stderr):
        sys.stdin = devnull
        try:
            yield
        finally:
            sys.stdin = saved


def launch_file(config_file: str | Path, *, dry_run: bool = False, max_steps: int | None = None,
                work_dir: Path | None = None) -> dict[str, Any]:
    """`python -m trainer.pretrain --config Y --launch / --dry-run`: prepare, then submit."""
    return submit(prepare(config_file, max_steps=max_steps, work_dir=work_dir), dry_run=dry_run)
