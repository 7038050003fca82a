"""A standalone Spark cluster on this machine: one Master and one Worker, loopback only.

The pip wheel of pyspark has no `start-master.sh`, but its `spark-class` starts the daemons.
`make cluster-up` / `cluster-down` (and the cluster test) use this so a job can be submitted with
`spark-submit --master spark://127.0.0.1:<port>` and run on executors outside the driver process.

    python -m data_engine.cluster up --dir .cluster [--port 7077] [--cores 2] [--memory 2g]
                                     [--private-dir PATH]
    python -m data_engine.cluster down --dir .cluster

`--private-dir PATH` starts the Worker (and so every executor it launches) in a mount namespace of
its own where PATH is an overlay: the executors read what PATH held when the Worker started, but
what they write there lands in a tmpfs only they see. That is a real cluster whose nodes do not
share the driver's disk (node-local disks, or a path that means HDFS on the executors), on one
machine: a job whose lake is under PATH must fail, not commit what the driver happens to see.
It needs root (or CAP_SYS_ADMIN) and `unshare` from util-linux. The driver keeps changing the
real folder underneath (overlayfs leaves that undefined): a folder the driver deleted may look
empty to the executors although their files are still in the tmpfs (`private_writes`).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from data_engine.errors import ConfigError

LOOPBACK = "127.0.0.1"
PRIVATE_FS = "sailyard-private"  # the name the private tmpfs and overlay show in mountinfo
_SCRATCH = "private-scratch"  # in the cluster folder: the Worker's tmpfs (overlay upper + work)


@dataclass
class ClusterInfo:
    master_url: str
    master_pid: int
    worker_pid: int
    dir: str
    private_dir: str | None = None  # what the Worker's executors write here only they see


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    import pyspark

    spark_home = os.path.dirname(pyspark.__file__)
    return dict(os.environ, SPARK_HOME=spark_home, SPARK_LOCAL_IP=LOOPBACK,
                PYSPARK_PYTHON=os.environ.get("PYSPARK_PYTHON", sys.executable),
                SPARK_CONF_DIR=os.environ.get("SPARK_CONF_DIR",
                                              str(Path(__file__).parent / "resources" / "spark")),
                SPARK_NO_DAEMONIZE="1")


def _spark_class(env: dict[str, str]) -> str:
    return os.path.join(env["SPARK_HOME"], "bin", "spark-class")


def up(directory: str | Path, *, port: int | None = None, cores: int = 2, memory: str = "2g",
       timeout: float = 90.0, private_dir: str | Path | None = None) -> ClusterInfo:
    """Start a Master and a Worker; return once the Worker has registered with the Master.

    With `private_dir` the Worker runs in its own mount namespace (see the module docstring); the
    folder is created if missing, since it is the overlay's lower layer and its mount point.
    """
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    private = _private_dir(private_dir, directory)
    state = directory / "cluster.json"
    if state.exists():
        info = ClusterInfo(**json.loads(state.read_text()))
        if _alive(info.master_pid) and _alive(info.worker_pid) and info.private_dir == private:
            return info
        down(directory)
    env = _env()
    port = port or free_port()
    master_log = directory / "master.log"
    webui = free_port()
    master = subprocess.Popen(
        [_spark_class(env), "org.apache.spark.deploy.master.Master", "--host", LOOPBACK,
         "--port", str(port), "--webui-port", str(webui)],
        env=env, stdout=open(master_log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"spark://{LOOPBACK}:{port}"
    worker_log = directory / "worker.log"
    _wait_for(lambda: _listening(port), timeout, f"Spark master on port {port}", master_log)
    command = [_spark_class(env), "org.apache.spark.deploy.worker.Worker", "--host", LOOPBACK,
               "--cores", str(cores), "--memory", memory, "--webui-port", str(free_port()),
               "--work-dir", str(directory / "work"), url]
    if private is not None:
        scratch = directory / _SCRATCH
        scratch.mkdir(exist_ok=True)
        command = private_command(command, Path(private), scratch)
    worker = subprocess.Popen(
        command, env=env, stdout=open(worker_log, "wb"), stderr=subprocess.STDOUT,
        start_new_session=True)
    info = ClusterInfo(url, master.pid, worker.pid, str(directory), private)
    state.write_text(json.dumps(asdict(info)))
    try:
        _wait_for(lambda: _registered(worker, webui, worker_log), timeout,
                  "the Spark worker to register", worker_log)
    except RuntimeError:
        down(directory)
        raise
    return info


def _private_dir(private_dir: str | Path | None, directory: Path) -> str | None:
    """The private folder as an absolute path, checked before any daemon starts."""
    if private_dir is None:
        return None
    path = Path(private_dir).expanduser().resolve()
    for layer in (path, directory):  # mount(8) option syntax: an overlay layer cannot name these
        if any(c in str(layer) for c in ",:\\"):
            raise ConfigError(f"{layer}: a path with ',', ':' or '\\' cannot be an overlay layer "
                              "(the private dir and the cluster folder both are)")
    if directory == path or path in directory.parents:
        raise ConfigError(f"private dir {path} holds the cluster folder {directory}: pick one "
                          "outside it (the Worker's logs and scratch space live there)")
    reason = private_mounts_unsupported()
    if reason is not None:
        raise ConfigError(f"cannot give the Worker a private {path}: {reason}")
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def _private_script(private: Path, scratch: Path) -> str:
    """sh that, inside a fresh mount namespace, puts a tmpfs on `scratch` and over `private` an
    overlay whose lower layer is the real folder and whose upper layer is on that tmpfs."""
    upper, work = shlex.quote(str(scratch / "upper")), shlex.quote(str(scratch / "work"))
    options = shlex.quote(f"lowerdir={private},upperdir={scratch / 'upper'},workdir={scratch / 'work'}")
    return (f"mount -t tmpfs {PRIVATE_FS} {shlex.quote(str(scratch))} && mkdir {upper} {work} && "
            f"mount -t overlay {PRIVATE_FS} -o {options} {shlex.quote(str(private))}")


def private_command(command: list[str], private: Path, scratch: Path) -> list[str]:
    """`command` run in its own mount namespace with `private` made private (see `_private_script`).

    `unshare` and `sh` both exec, so the pid Popen returns is the daemon's and `down` stops it;
    the namespace and its tmpfs vanish with the last process in it.
    """
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            _private_script(private, scratch) + ' && exec "$@"', "sailyard-private-worker", *command]


def private_writes(info: ClusterInfo) -> Path | None:
    """Where the Worker's namespace holds what its executors wrote under the private dir (the
    overlay's upper layer), reachable from outside through /proc/<pid>/root while it runs."""
    if info.private_dir is None:
        return None
    return Path(f"/proc/{info.worker_pid}/root") / Path(info.dir, _SCRATCH, "upper").relative_to("/")


def private_mounts_unsupported() -> str | None:
    """Why `--private-dir` cannot work here (no unshare, not root, no overlayfs), or None."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="sailyard-private-probe-") as tmp:
        private, scratch = Path(tmp) / "private", Path(tmp) / "scratch"
        private.mkdir()
        scratch.mkdir()
        try:
            proc = subprocess.run(private_command(["true"], private, scratch), capture_output=True,
                                  text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"unshare failed to run: {exc}"
        if proc.returncode != 0:
            detail = " ".join(proc.stderr.split()) or f"exit code {proc.returncode}"
            return f"`unshare --mount` with a tmpfs and an overlay is not permitted here ({detail})"
    return None


def down(directory: str | Path) -> bool:
    """Stop the daemons started by `up` in `directory`; True if something was running."""
    state = Path(directory).resolve() / "cluster.json"
    if not state.exists():
        return False
    info = ClusterInfo(**json.loads(state.read_text()))
    for pid in (info.worker_pid, info.master_pid):
        _stop(pid)
    state.unlink()
    return True


def _stop(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.time() + 15
    while time.time() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _alive_workers(webui_port: int) -> int:
    """Workers the Master counts as alive, from its status JSON (`/json/`)."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{webui_port}/json/", timeout=2) as resp:
            return int(json.load(resp).get("aliveworkers", 0))
    except (OSError, ValueError):
        return 0


def _registered(worker: subprocess.Popen, webui_port: int, log: Path) -> bool:
    """True once the Master counts the Worker; a Worker that exited (a mount refused, say) fails
    at once instead of after the whole timeout."""
    if worker.poll() is not None:
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(f"the Spark worker exited with code {worker.returncode}; log {log}:\n{tail}")
    return _alive_workers(webui_port) > 0


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((LOOPBACK, port)) == 0


def _wait_for(check: object, timeout: float, what: str, log: Path) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}; log {log}:\n{tail}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_engine.cluster", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["up", "down"])
    p.add_argument("--dir", default=".cluster", help="state and log folder")
    p.add_argument("--port", type=int, default=7077)
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--memory", default="2g")
    p.add_argument("--private-dir", help="start the Worker so that what its executors write under "
                   "this folder is invisible to the driver (a cluster without a shared disk; root only)")
    args = p.parse_args(argv)
    if args.action == "up":
        try:
            info = up(args.dir, port=args.port, cores=args.cores, memory=args.memory,
                      private_dir=args.private_dir)
        except ConfigError as exc:
            print(f"python -m data_engine.cluster: error: {exc}", file=sys.stderr)
            return 2
        print(f"Spark master {info.master_url} (logs in {info.dir}); submit with:\n"
              f"  .venv/bin/spark-submit --master {info.master_url} jobs/ingest.py --input ... --lake ...")
        if info.private_dir:
            print(f"executors' writes under {info.private_dir} stay invisible to the driver")
    else:
        print("stopped" if down(args.dir) else "no cluster was running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
