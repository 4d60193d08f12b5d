"""A sweep whose storage is an S3 bucket: a real S3-compatible server on loopback (moto's server mode).

The sweep runs on a 3-node ``ray.cluster_utils.Cluster`` (a head with no CPUs
and two one-CPU workers) with ``--storage s3://...?endpoint_override=...``, the
endpoint in the URI as a user writes it for MinIO or Ceph. A worker node is
killed while its trial is half-way; the trial goes on elsewhere from its
checkpoint in the bucket. Then ``sweep status``, ``analysis.load``,
``onlinenorm report`` (in subprocesses, the endpoint in ``AWS_ENDPOINT_URL``)
and ``sweep resume`` read the experiment from the bucket, and nothing writes
into it but the sweep.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from sweeps.spec import load_spec

pytestmark = pytest.mark.slow

BUCKET = "sweeps"
NAME = "bucket"
# Both trials must be mid-way at once when the node is removed: eight epochs leave five checkpoints of
# overlap for the second trial to start late on a slow machine (with six, one run missed the window).
EPOCHS = 8
WAIT_S = 240
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
CHECKPOINT = re.compile(r"^(?P<trial>[^/]+)/checkpoint_(?P<index>\d{6})/")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, what: str, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    """moto's S3 server on a free loopback port (the endpoint URL); stopped on exit."""
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
                return True
        except OSError:
            return server.poll() is not None  # exited: reported below

    try:
        wait_for(answers, "the S3 server to answer", timeout=60)
        assert server.poll() is None, "moto_server exited"
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)


def listing(uri: str) -> dict[str, int]:
    """Every object under ``uri``: path relative to it -> size."""
    import pyarrow.fs

    filesystem, root = pyarrow.fs.FileSystem.from_uri(uri)
    infos = filesystem.get_file_info(pyarrow.fs.FileSelector(root, recursive=True, allow_not_found=True))
    return {info.path[len(root) :].lstrip("/"): info.size for info in infos if info.type == pyarrow.fs.FileType.File}


def read_object(uri: str, relative: str) -> str:
    import pyarrow.fs

    filesystem, root = pyarrow.fs.FileSystem.from_uri(uri)
    with filesystem.open_input_stream(f"{root}/{relative}") as stream:
        return stream.read().decode()


def trial_rows(uri: str) -> dict[str, list[dict]]:
    """Trial folder -> its result.json rows, read from the bucket."""
    return {
        path.split("/")[0]: [json.loads(line) for line in read_object(uri, path).splitlines() if line.strip()]
        for path in listing(uri)
        if path.count("/") == 1 and path.endswith("/result.json")
    }


@pytest.fixture(scope="module")
def bucket(tmp_path_factory) -> Iterator[dict]:
    """The S3 server with one bucket; the credentials (any, for moto) are in this process's environment
    for the module, so the Ray nodes started here inherit them as they would a node's own."""
    with pytest.MonkeyPatch.context() as environment:
        for key, value in CREDENTIALS.items():
            environment.setenv(key, value)
        for key in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            environment.delenv(key, raising=False)  # the sweep names its endpoint in the URI only
        with s3_server() as endpoint:
            import pyarrow.fs

            filesystem, _ = pyarrow.fs.FileSystem.from_uri(
                f"s3://{BUCKET}?endpoint_override={endpoint}&allow_bucket_creation=true"
            )
            filesystem.create_dir(BUCKET)
            yield {
                "endpoint": endpoint,
                "storage": f"s3://{BUCKET}/runs?endpoint_override={endpoint}",
                "experiment": f"s3://{BUCKET}/runs/{NAME}?endpoint_override={endpoint}",
                "plain": f"s3://{BUCKET}/runs/{NAME}",
                "folder": tmp_path_factory.mktemp("bucket"),
            }


def write_spec(folder: Path) -> Path:
    raw = {
        "name": NAME,
        "dataset": {"name": "cifar10", "data_dir": str(folder / "data"), "synthetic": {"train": 200, "test": 100}},
        "model": "mlp",
        "train": {
            "epochs": EPOCHS,
            "batch_size": 20,
            "lr": 0.02,
            "milestones": [],
            "alpha_fwd": 0.99,
            "alpha_bkw": 0.9,
            "augment": False,
            "ecm": "ac",
        },
        "grid": {"clamp_value": [1, 3]},
        "extra_trials": [],
        "resources": {"cpu": 1, "gpu": 0},
        "max_failures": 2,
    }
    path = folder / f"{NAME}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def bucket_sweep(bucket) -> Iterator[dict]:
    """The sweep, run to the end with a worker node killed half-way; the cluster stays up for the module."""
    import ray
    from ray.cluster_utils import Cluster

    from sweeps.run import run_sweep

    spec = load_spec(write_spec(bucket["folder"]))
    health = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False, "_system_config": health}
    )
    workers = [cluster.add_node(num_cpus=1), cluster.add_node(num_cpus=1)]
    kill: dict = {}

    def kill_a_worker_mid_trial(victim):
        """Once both trials have checkpointed at least twice in the bucket and neither has finished: removes
        ``victim``, a worker node."""
        latest: dict[str, int] = {}
        for path in listing(bucket["experiment"]):
            if match := CHECKPOINT.match(path):
                latest[match["trial"]] = max(latest.get(match["trial"], -1), int(match["index"]))
        if len(latest) < 2 or not all(1 <= index < EPOCHS - 2 for index in latest.values()):
            return None
        kill["checkpoints"] = latest
        cluster.remove_node(victim, allow_graceful=False)  # the other worker runs the rest
        return kill

    try:
        ray.init(address=cluster.address)
        # Ray 2.41 (the floor) attaches a driver to any raylet on its host, where later Rays prefer the head: on this
        # one-host cluster it may sit on a worker node, and removing that node would end the driver.
        driver_node = ray.get_runtime_context().get_node_id()
        victim = next(worker for worker in workers if worker.node_id != driver_node)
        killer = threading.Thread(
            target=wait_for, args=(functools.partial(kill_a_worker_mid_trial, victim), "both trials half-way")
        )
        killer.start()
        try:
            outcome = run_sweep(spec, storage=bucket["storage"], verbose=0)
        finally:
            killer.join()
            ray.shutdown()
        yield {**bucket, "spec": spec, "outcome": outcome, "kill": kill, "address": cluster.address}
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_a_trial_on_a_lost_node_goes_on_from_its_checkpoint_in_the_bucket(bucket_sweep):
    assert bucket_sweep["kill"], "the worker node was never removed"
    outcome = bucket_sweep["outcome"]
    assert outcome.counts == {"TERMINATED": 2} and outcome.path == bucket_sweep["experiment"]
    objects = listing(bucket_sweep["experiment"])
    assert "spec.yaml" in objects and any(path.startswith("experiment_state-") for path in objects)
    rows = trial_rows(bucket_sweep["experiment"])
    assert len(rows) == 2, sorted(objects)
    restarted = 0
    for trial, trial_rows_ in rows.items():
        assert {row["epoch"] for row in trial_rows_} == set(range(1, EPOCHS + 1)), trial
        pids = list(dict.fromkeys(row["pid"] for row in trial_rows_))
        if len(pids) > 1:
            restarted += 1
            first_after = next(row for row in trial_rows_ if row["pid"] == pids[1])
            assert first_after["epoch"] > 1, f"{trial} restarted at epoch 1 instead of from its checkpoint"
        assert any(CHECKPOINT.match(path) and path.startswith(f"{trial}/") for path in objects), trial
    assert restarted >= 1, "no trial was running on the killed node"


def run_cli(args: list[str], env_extra: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra}
    return subprocess.run(
        [str(Path(sys.executable).with_name("onlinenorm")), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


LOAD_WITHOUT_RAY = """
import json, sys
TORCH_FREE = ("onlinenorm.constants", "onlinenorm.lazy")
import analysis
results = analysis.load(sys.argv[1])
print(json.dumps({"states": sorted(results.trials["state"]), "epochs": results.trials["epochs_done"].tolist(),
                  "paths": [str(p) for p in results.paths.values()], "warnings": results.warnings,
                  "heavy": sorted(m for m in sys.modules if m.partition(".")[0] in ("ray", "torch", "sweeps")
                                  or m.startswith("onlinenorm.") and m not in TORCH_FREE)}))
"""


def test_status_analysis_and_report_read_the_experiment_from_the_bucket(bucket_sweep, tmp_path):
    before = listing(bucket_sweep["experiment"])
    endpoint = {"AWS_ENDPOINT_URL": bucket_sweep["endpoint"]}  # as a user sets it for MinIO or Ceph
    plain = bucket_sweep["plain"]

    status = run_cli(["sweep", "status", plain], endpoint, tmp_path)
    assert status.returncode == 0 and status.stdout.strip() == f"{plain}: 2 trials: 2 TERMINATED", status

    for uri, env in ((plain, endpoint), (bucket_sweep["experiment"], {})):  # the endpoint from the environment or URI
        loaded = subprocess.run(
            [sys.executable, "-c", LOAD_WITHOUT_RAY, uri],
            cwd=tmp_path,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert loaded.returncode == 0, loaded.stderr[-3000:]
        found = json.loads(loaded.stdout)
        assert found == {
            "states": ["finished", "finished"],
            "epochs": [EPOCHS, EPOCHS],
            "paths": [plain],
            "warnings": [],
            "heavy": [],
        }, found

    report = run_cli(["report", plain], endpoint, tmp_path)
    assert report.returncode == 0, report.stderr[-3000:]
    page = tmp_path / f"{NAME}_report" / "report.html"
    assert report.stdout.startswith("Findings") and report.stdout.strip().endswith(f"Report: {page}")
    assert f"Sweep report: {NAME}" in page.read_text() and "Every file was read." in page.read_text()

    missing = run_cli(["sweep", "status", f"s3://{BUCKET}/runs/nothing"], endpoint, tmp_path)
    assert missing.returncode == 2 and "s3://sweeps/runs/nothing: no such experiment directory" in missing.stderr
    assert listing(bucket_sweep["experiment"]) == before, "a reader wrote into the bucket"


def test_resume_reads_the_sweep_from_the_bucket_and_reruns_nothing(bucket_sweep, tmp_path):
    before = trial_rows(bucket_sweep["experiment"])
    resumed = run_cli(
        ["sweep", "resume", bucket_sweep["experiment"], "--address", bucket_sweep["address"]], {}, tmp_path
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"sweep {NAME}: 2 trials: 2 TERMINATED; results in {bucket_sweep['experiment']}" in resumed.stdout
    assert trial_rows(bucket_sweep["experiment"]) == before, "a finished trial ran again"
