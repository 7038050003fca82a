"""Serve the MLflow UI for a work directory's store, bound to 127.0.0.1, and print the URL that opens
the sailyard experiment's runs (MLflow 3 otherwise opens on its GenAI traces view).

    python jobs/ui.py [--work-dir work] [--port 5000] [--host 127.0.0.1]
"""

from __future__ import annotations

import argparse
import os
import sys

_ANY_HOST = ("0.0.0.0", "::", "")


def base_url(host: str, port: int) -> str:
    """Where a browser on this machine reaches the server (a wildcard bind is reached on loopback)."""
    host = "127.0.0.1" if host in _ANY_HOST else host
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ui", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work-dir", default="work")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    args = p.parse_args(argv)

    from data_engine import tracking

    uri = tracking.tracking_uri(args.work_dir)
    try:  # also gives a store made by an older sailyard its experiment kind
        experiment_id = tracking.experiment(args.work_dir)
    except Exception as exc:
        first = next((x.strip() for x in str(exc).splitlines() if x.strip()), type(exc).__name__)
        print(f"sailyard ui: error: the MLflow store {uri} could not be opened: {first[:300]}", file=sys.stderr)
        return 1
    base = base_url(args.host, args.port)
    print(f"MLflow UI for {uri} on {base}  (Ctrl-C stops it)", flush=True)
    print(f"runs: {tracking.experiment_url(base, experiment_id)}", flush=True)
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    mlflow = os.path.join(os.path.dirname(sys.executable), "mlflow")
    os.execve(mlflow, [mlflow, "server", "--backend-store-uri", uri, "--default-artifact-root",
                       tracking.artifact_location(args.work_dir), "--host", args.host,
                       "--port", str(args.port), "--workers", "1"], env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
