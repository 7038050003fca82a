"""Serve the MLflow UI for a work directory's store, bound to 127.0.0.1.

    python jobs/ui.py [--work-dir work] [--port 5000] [--host 127.0.0.1]
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ui", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work-dir", default="work")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    args = p.parse_args(argv)

    from data_engine import tracking

    uri = tracking.tracking_uri(args.work_dir)
    print(f"MLflow UI for {uri} on http://{args.host}:{args.port}  (Ctrl-C stops it)", flush=True)
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    mlflow = os.path.join(os.path.dirname(sys.executable), "mlflow")
    os.execve(mlflow, [mlflow, "server", "--backend-store-uri", uri, "--default-artifact-root",
                       tracking.artifact_location(args.work_dir), "--host", args.host,
                       "--port", str(args.port), "--workers", "1"], env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
