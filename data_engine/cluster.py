"""A standalone Spark cluster on this machine: one Master and one Worker, loopback only.

The pip wheel of pyspark has no `start-master.sh`, but its `spark-class` starts the daemons.
`make cluster-up` / `cluster-down` (and the cluster test) use this so a job can be submitted with
`spark-submit --master spark://127.0.0.1:<port>` and run on executors outside the driver process.

    python -m data_engine.cluster up --dir .cluster [--port 7077] [--cores 2] [--memory 2g]
    python -m data_engine.cluster down --dir .cluster
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"


@dataclass
class ClusterInfo:
    master_url: str
    master_pid: int
    worker_pid: int
    dir: str


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
       timeout: float = 90.0) -> ClusterInfo:
    """Start a Master and a Worker; return once the Worker has registered with the Master."""
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    state = directory / "cluster.json"
    if state.exists():
        info = ClusterInfo(**json.loads(state.read_text()))
        if _alive(info.master_pid) and _alive(info.worker_pid):
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
    worker = subprocess.Popen(
        [_spark_class(env), "org.apache.spark.deploy.worker.Worker", "--host", LOOPBACK,
         "--cores", str(cores), "--memory", memory, "--webui-port", str(free_port()),
         "--work-dir", str(directory / "work"), url],
        env=env, stdout=open(worker_log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    info = ClusterInfo(url, master.pid, worker.pid, str(directory))
    state.write_text(json.dumps(asdict(info)))
    try:
        _wait_for(lambda: _alive_workers(webui) > 0, timeout, "the Spark worker to register",
                  worker_log)
    except RuntimeError:
        down(directory)
        raise
    return info


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
    args = p.parse_args(argv)
    if args.action == "up":
        info = up(args.dir, port=args.port, cores=args.cores, memory=args.memory)
        print(f"Spark master {info.master_url} (logs in {info.dir}); submit with:\n"
              f"  .venv/bin/spark-submit --master {info.master_url} jobs/ingest.py --input ... --lake ...")
    else:
        print("stopped" if down(args.dir) else "no cluster was running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
