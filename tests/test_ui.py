"""The MLflow UI as a user sees it: `sailyard ui` serving a real store of pipeline, training and eval
runs, rendered by headless Chromium. MLflow 3.17 opens an experiment on its GenAI traces view unless
the URL asks for the model-training view, so the URLs sailyard prints are checked in a browser.

Screenshots land in test-artifacts/ui/ at the repository root. The browser tests skip without a
`chromium` binary (.ci/run installs Debian's); the store and REST tests always run.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from data_engine import tracking

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "test-artifacts" / "ui"
CHROMIUM = next((found for name in ("chromium", "chromium-browser", "google-chrome")
                 if (found := shutil.which(name))), None)
ML_VIEW = "workflowType=machine_learning"  # written out here: the test's own statement of the format
LOSSES = [6.5, 5.25, 4.5, 4.0, 3.75]  # logged at steps 10, 20, …, 50
THAI, CHINESE = "สวัสดีชาวโลก", "你好世界"
RUNS_LOADED = r"/[1-9]\d* matching runs/.test(document.body.innerText)"  # the runs table has its rows


def _shows(*texts: str) -> str:
    """A JS condition: the page's visible text holds every one of `texts` (what a test waits for)."""
    return f"{json.dumps(texts, ensure_ascii=False)}.every(t => document.body.innerText.includes(t))"


# --------------------------------------------------------------------------- the store and the server


@dataclass(frozen=True)
class Store:
    work_dir: Path
    experiment_id: str
    pipeline: str
    ingest: str
    train: str
    eval: str
    plot: bytes  # the PNG the eval run logged


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 10) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


@dataclass(frozen=True)
class UiProcess:
    proc: subprocess.Popen
    base: str
    log: Path


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ui-work")


@pytest.fixture(scope="module")
def ui_process(work_dir: Path, tmp_path_factory):
    """The real `sailyard ui` on a free port, in its own process group (mlflow server starts uvicorn
    under it); started before the store is filled, so its seconds of start-up overlap that work."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("ui-server") / "server.log"
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", tracking.EXPERIMENT_ENV)}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "data_engine.cli", "ui", "--work-dir", str(work_dir),
                                 "--port", str(port), "--host", "127.0.0.1"],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield UiProcess(proc, f"http://127.0.0.1:{port}", log_path)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=5)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


@pytest.fixture(scope="module")
def store(work_dir: Path, ui_process: UiProcess) -> Store:
    """A pipeline run with a job child (record_run), a training run with a loss curve and an eval run
    with per-language metrics and a bar plot, written through tracking's helpers as the jobs do."""
    from matplotlib.figure import Figure

    work = work_dir  # the UI serves this store
    with tracking.start_run("pipeline", work_dir=work, kind="pipeline", params={"sample_docs_per_lang": 4}) as parent:
        ingest = tracking.record_run(parent, "ingest", kind="ingest", metrics={"in": 40, "kept": 31})
        with tracking.start_run("train-tiny-stage1", work_dir=work, kind="train", parent_run_id=parent.run_id) as train:
            for step, loss in zip(range(10, 60, 10), LOSSES, strict=True):
                train.log_metrics({"reduced_train_loss": loss}, step=step)
        with tracking.start_run("eval-sib200", work_dir=work, kind="eval", parent_run_id=parent.run_id,
                                params={"prompt.tha": THAI, "prompt.zho": CHINESE}) as ev:
            ev.log_metrics({"sib200.tha.acc": 0.625, "sib200.lao.acc": 0.375})
            fig = Figure(figsize=(4, 3))
            fig.add_subplot().bar(["tha", "lao"], [0.625, 0.375])
            png = Path(tempfile.mkdtemp(dir=work)) / "sib200.acc.png"
            fig.savefig(png)
            ev.log_artifact(png, "plots")
    return Store(work, parent.experiment_id, parent.run_id, ingest, train.run_id, ev.run_id, png.read_bytes())


@dataclass(frozen=True)
class Server:
    base: str
    printed_url: str  # the "runs: …" line `sailyard ui` printed


@pytest.fixture(scope="module")
def server(ui_process: UiProcess, store: Store) -> Server:
    """The UI once it answers (at most 90 s)."""
    proc, log = ui_process.proc, ui_process.log
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            pytest.fail(f"sailyard ui exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if _get(f"{ui_process.base}/health", timeout=2).strip() == b"OK":
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"sailyard ui did not answer within 90 s:\n{log.read_text()[-3000:]}")
        time.sleep(0.25)
    printed = re.search(r"^runs: (\S+)$", log.read_text(), re.M)
    assert printed, log.read_text()[-3000:]
    return Server(ui_process.base, printed.group(1))


# --------------------------------------------------------------------------- the browser


@dataclass(frozen=True)
class Page:
    title: str
    text: str  # document.body.innerText, whitespace collapsed
    dom: str
    settled: bool  # the page's wait condition held before the deadline
    shot: Path
    probe: object = None  # the value of the page's `probe` expression, read once it settled


_PIPE_LAUNCHER = ("import os, sys; r, w = map(int, sys.argv[1:3]); os.dup2(r, 3); os.dup2(w, 4); "
                  "os.close(r); os.close(w); os.execv(sys.argv[3], sys.argv[3:])")


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (stdlib only): a page is read
    once a condition on it holds, not after a guessed delay (MLflow draws its charts late)."""

    def __init__(self, binary: str, profile: Path, log: Path):
        cmd_r, self._w = os.pipe()  # we write commands, Chromium reads them on its fd 3
        self._r, out_w = os.pipe()  # Chromium answers on its fd 4
        hi_r, hi_w = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 10), fcntl.fcntl(out_w, fcntl.F_DUPFD, 10)
        os.close(cmd_r)
        os.close(out_w)
        with open(log, "wb") as err:  # a tiny launcher puts the pipe ends on fds 3 and 4, then execs Chromium
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _PIPE_LAUNCHER, str(hi_r), str(hi_w), binary, "--headless", "--no-sandbox",
                 "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", f"--user-data-dir={profile}",
                 "--window-size=1400,1000", "--remote-debugging-pipe", "about:blank"],
                pass_fds=(hi_r, hi_w), stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True)
        os.close(hi_r)
        os.close(hi_w)
        self._buf, self._id = b"", 0

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}, **({"sessionId": session} if session else {})}
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._id:
                    if "error" in reply:
                        raise RuntimeError(f"chromium {method}: {reply['error']}")
                    return reply.get("result", {})
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"chromium did not answer {method} within {timeout} s")
            if select.select([self._r], [], [], left)[0]:
                chunk = os.read(self._r, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium closed its DevTools pipe (exit code {self.proc.poll()})")
                self._buf += chunk

    def evaluate(self, expression: str, session: str) -> object:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session)
        return None if "exceptionDetails" in result else result["result"].get("value")

    def render(self, url: str, ready: str, name: str, *, probe: str | None = None, timeout: float = 30) -> Page:
        """Open `url` in a new tab, wait (at most `timeout` s) until the JS expression `ready` is true,
        then read title, text, DOM and `probe` and save a screenshot as test-artifacts/ui/<name>.png."""
        started = time.monotonic()
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        try:
            self.send("Emulation.setDeviceMetricsOverride",
                      {"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": False}, session)
            self.send("Page.navigate", {"url": url}, session)
            settled = False
            while not settled and time.monotonic() - started < timeout:
                settled = self.evaluate(f"Boolean({ready})", session) is True
                if not settled:
                    time.sleep(0.2)
            shot = SHOTS / f"{name}.png"
            shot.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"}, session)["data"]))
            page = Page(title=self.evaluate("document.title", session) or "",
                        text=" ".join((self.evaluate("document.body.innerText", session) or "").split()),
                        dom=self.evaluate("document.documentElement.outerHTML", session) or "",
                        settled=settled, shot=shot, probe=self.evaluate(probe, session) if probe else None)
        finally:
            self.send("Target.closeTarget", {"targetId": target})
        print(f"screenshot: {shot}  ({time.monotonic() - started:.1f} s{'' if settled else ', NOT settled'}: {url})")
        return page

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        os.close(self._w)
        os.close(self._r)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("no chromium binary on PATH (.ci/run installs Debian's chromium when it runs as root)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_factory.mktemp("chromium")
    chromium = Chromium(CHROMIUM, tmp / "profile", tmp / "chromium.log")
    try:
        yield chromium
    finally:
        chromium.close()


# --------------------------------------------------------------------------- the experiment's kind and URLs


def test_a_new_experiment_is_of_the_model_training_kind(store: Store):
    tags = MlflowClient(tracking.tracking_uri(store.work_dir)).get_experiment(store.experiment_id).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    assert tracking.experiment(store.work_dir) == store.experiment_id


# The next two share the module's store (a new SQLite store costs seconds of schema migration) under
# experiment names of their own.


def test_a_store_made_without_the_kind_gets_it_on_first_use(store: Store, monkeypatch):
    monkeypatch.setenv(tracking.EXPERIMENT_ENV, "made-by-an-older-sailyard")
    client = MlflowClient(tracking.tracking_uri(store.work_dir))
    old = client.create_experiment("made-by-an-older-sailyard",
                                   artifact_location=tracking.artifact_location(store.work_dir))
    assert "mlflow.experimentKind" not in client.get_experiment(old).tags
    with tracking.start_run("ingest", work_dir=store.work_dir) as run:
        pass
    assert run.experiment_id == old
    assert client.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"


def test_a_kind_chosen_in_the_ui_is_left_alone(store: Store, monkeypatch):
    monkeypatch.setenv(tracking.EXPERIMENT_ENV, "kind-chosen-in-the-ui")
    client = MlflowClient(tracking.tracking_uri(store.work_dir))
    chosen = client.create_experiment("kind-chosen-in-the-ui", tags={"mlflow.experimentKind": "finetuning"})
    assert tracking.experiment(store.work_dir) == chosen
    assert client.get_experiment(chosen).tags["mlflow.experimentKind"] == "finetuning"


def test_ui_urls():
    assert tracking.experiment_url("http://127.0.0.1:5000/", "3") == \
        "http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning"
    assert tracking.run_url("http://127.0.0.1:5000", "3", "9f2c") == \
        "http://127.0.0.1:5000/#/experiments/3/runs/9f2c?workflowType=machine_learning"
    from jobs.ui import base_url

    assert base_url("127.0.0.1", 5000) == "http://127.0.0.1:5000"
    assert base_url("0.0.0.0", 5001) == "http://127.0.0.1:5001"
    assert base_url("::1", 5002) == "http://[::1]:5002"


def test_ui_reports_a_store_it_cannot_open(tmp_path, capsys):
    from jobs.ui import main

    (tmp_path / "mlflow").mkdir()
    (tmp_path / "mlflow" / "mlflow.db").write_bytes(b"not a SQLite database, just bytes\n" * 4)
    assert main(["--work-dir", str(tmp_path), "--port", str(_free_port())]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"sailyard ui: error: the MLflow store sqlite:///{tmp_path.resolve()}/mlflow/mlflow.db "
                          "could not be opened: "), err
    assert len(err.splitlines()) == 1


# --------------------------------------------------------------------------- the server's REST API


def test_sailyard_ui_prints_the_experiments_runs_url(server: Server, store: Store):
    assert server.printed_url == f"{server.base}/#/experiments/{store.experiment_id}/runs?{ML_VIEW}"


def test_the_plot_and_the_loss_history_are_served(server: Server, store: Store):
    listing = json.loads(_get(f"{server.base}/ajax-api/2.0/mlflow/artifacts/list?run_id={store.eval}&path=plots"))
    assert [(f["path"], f["file_size"]) for f in listing["files"]] == [("plots/sib200.acc.png", len(store.plot))]
    served = _get(f"{server.base}/get-artifact?path=plots/sib200.acc.png&run_uuid={store.eval}")
    assert served[:8] == b"\x89PNG\r\n\x1a\n" and served == store.plot
    history = json.loads(_get(f"{server.base}/ajax-api/2.0/mlflow/metrics/get-history"
                              f"?run_id={store.train}&metric_key=reduced_train_loss"))["metrics"]
    assert sorted((m["step"], m["value"]) for m in history) == list(zip(range(10, 60, 10), LOSSES, strict=True))


# --------------------------------------------------------------------------- what the browser shows


def test_the_printed_url_opens_the_runs_table(server: Server, store: Store, browser):
    page = browser.render(server.printed_url, f"{RUNS_LOADED} && document.body.innerText.includes('pipeline')",
                          "experiment-runs")
    assert page.settled, page.text[:800]
    assert page.title == f"Runs - Experiment {store.experiment_id} - MLflow"
    assert "4 matching runs" in page.text
    assert "pipeline" in page.text and "ingest" not in page.text  # the parent; its children fold under it
    assert "No data available for the selected time range" not in page.text  # the GenAI overview's charts


def test_all_runs_listed_by_name(server: Server, store: Store, browser):
    url = f"{server.printed_url}&orderByKey=tags.%60mlflow.runName%60&orderByAsc=true"  # sorted: not nested
    page = browser.render(url, f"{RUNS_LOADED} && document.body.innerText.includes('train-tiny-stage1')",
                          "experiment-runs-by-name")
    assert page.settled, page.text[:800]
    assert "4 matching runs" in page.text
    where = [page.text.find(name) for name in ("eval-sib200", "ingest", "pipeline", "train-tiny-stage1")]
    assert -1 not in where and where == sorted(where), (where, page.text[:800])


def test_without_the_parameter_mlflow_opens_genai_traces(server: Server, store: Store, browser):
    """Why the URLs carry `workflowType`: MLflow 3.17.2 ignores the experiment's kind tag (its
    workflow switch is on) and opens the GenAI overview. If this fails, MLflow changed that."""
    page = browser.render(f"{server.base}/#/experiments/{store.experiment_id}",
                          "/^(Overview|Traces|Runs) - /.test(document.title)", "experiment-without-parameter")
    assert page.settled, page.text[:800]
    assert page.title.startswith(f"Overview - Experiment {store.experiment_id}"), page.title
    assert "pipeline" not in page.text


def test_the_eval_run_page_shows_its_metrics(server: Server, store: Store, browser):
    page = browser.render(tracking.run_url(server.base, store.experiment_id, store.eval),
                          _shows("sib200.tha.acc", "Parent run", "pipeline", "prompt.tha", "sailyard.kind"), "run-eval")
    assert page.settled, page.text
    assert page.title == f"Run {store.eval} - MLflow"
    assert "sailyard Runs eval-sib200" in page.text  # the breadcrumb of the model-training view
    assert "sib200.lao.acc 0.375" in page.text and "sib200.tha.acc 0.625" in page.text
    assert "Parent run pipeline" in page.text
    assert f"prompt.tha {THAI}" in page.text and f"prompt.zho {CHINESE}" in page.text
    assert "sailyard.kind : eval" in page.text


def test_the_training_run_draws_its_loss_curve(server: Server, store: Store, browser):
    url = f"{server.base}/#/experiments/{store.experiment_id}/runs/{store.train}/model-metrics?{ML_VIEW}"
    page = browser.render(url, "document.querySelector('path.js-line')", "run-train-loss-curve")
    assert page.settled, page.text[:800]
    assert "reduced_train_loss" in page.text
    line = re.search(r'<path class="js-line" d="M([^"]+)"', page.dom)
    assert line, page.text[:800]
    points = [tuple(map(float, p.split(","))) for p in line.group(1).split("L")]
    assert len(points) == len(LOSSES)
    xs, ys = zip(*points, strict=True)
    gaps = [b - a for a, b in zip(xs, xs[1:], strict=False)]
    assert min(gaps) > 0 and max(gaps) - min(gaps) < 0.5  # steps 10, 20, … 50: evenly spaced
    # The drawn heights are the losses up to an affine map (SVG y grows downwards).
    for y, loss in zip(ys, LOSSES, strict=True):
        assert (y - ys[0]) / (ys[-1] - ys[0]) == pytest.approx((loss - LOSSES[0]) / (LOSSES[-1] - LOSSES[0]), abs=0.01)


def test_the_eval_plot_is_listed_and_shown(server: Server, store: Store, browser):
    run = f"{server.base}/#/experiments/{store.experiment_id}/runs/{store.eval}"
    url = f"{run}/artifacts/plots/sib200.acc.png?{ML_VIEW}"
    img = "document.querySelector('img[alt=\"plots/sib200.acc.png\"]')"
    page = browser.render(url, f"{img} && {img}.complete && {img}.naturalWidth > 0", "run-eval-plot",
                          probe=f"[{img}.naturalWidth, {img}.naturalHeight]")
    assert page.settled, page.text[:800]
    assert "plots sib200.acc.png" in page.text  # the artifact tree
    # Decoded by the browser at the figure's size: 4 x 3 inches at matplotlib's 100 dpi.
    assert page.probe == [400, 300]
