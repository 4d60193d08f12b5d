"""docker/entrypoint.sh as the containers run it: a real Ray head and worker, outside Docker.

Each node is ``docker/entrypoint.sh head|worker`` in its own session and
working directory (the image's WORKDIR), with the image's environment (the
Dockerfile's ``RAY_*`` settings, PATH to this venv, token authentication on)
plus the settings compose passes (the cluster's token among them, as its env
file does), on loopback and free ports. Every process a node starts inherits
``RAY_TMPDIR``, a private folder, so reading ``/proc/*/environ`` finds exactly
this test's Ray processes and never another Ray instance on the machine;
worker-node processes also carry ``RAY_HEAD_ADDRESS``, which tells the two
nodes apart. The sweep tests share one cluster; the SIGTERM test starts its own.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = ROOT / "docker/entrypoint.sh"
VENV_BIN = Path(sys.executable).parent
START_TIMEOUT_S = 90
SWEEP_TIMEOUT_S = 300
STOP_TIMEOUT_S = 60
# The quick spec shrunk to one-epoch MLP trials on a few generated images; the grid is added per test.
TINY_SWEEP = (
    "model=mlp",
    "grid.alpha_fwd=[0.999]",
    "grid.seed=[0]",
    "extra_trials=[]",
    "dataset.synthetic={train: 64, test: 32}",
    "train.epochs=1",
    "train.batch_size=32",
)


def image_ray_settings() -> dict[str, str]:
    """The ``RAY_*`` variables the CPU image's final stage sets with ENV."""
    text = re.sub(r"\\\n", " ", (ROOT / "docker/Dockerfile").read_text())
    final_stage = text.rsplit("\nFROM ", 1)[1]
    settings = {}
    for line in re.findall(r"^ENV (.*)$", final_stage, flags=re.M):
        for item in shlex.split(line):
            name, _, value = item.partition("=")
            if name.startswith("RAY_"):
                settings[name] = value
    return settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ray_processes(tmpdir: str) -> dict[int, bool]:
    """pid -> on the worker node, for every live process started with ``RAY_TMPDIR=tmpdir``."""
    marker = f"RAY_TMPDIR={tmpdir}".encode()
    found = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                environ = Path(entry.path, "environ").read_bytes().split(b"\0")
            except OSError:  # exited meanwhile, or not ours to read
                continue
            if marker in environ:
                found[int(entry.name)] = any(item.startswith(b"RAY_HEAD_ADDRESS=") for item in environ)
    return found


def project_dir(path: Path) -> Path:
    """A working directory laid out like the image's WORKDIR: the specs at sweeps/specs/."""
    path.mkdir()
    (path / "sweeps").symlink_to(ROOT / "sweeps")
    return path


def wait_until(condition: Callable[[], object], timeout: float, what: str, logs: tuple[Path, ...] = ()) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in logs if log.exists())
            pytest.fail(f"timed out after {timeout} s waiting for {what}\n{tails}")
        time.sleep(0.2)


class Cluster:
    """A head and a worker started by the entrypoint; ``env`` is the image's environment, for commands."""

    def __init__(self, tmpdir: str, folder: Path) -> None:
        self.tmpdir, self.folder = tmpdir, folder
        self.env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
        self.env.update(image_ray_settings())
        self.env.update(PATH=f"{VENV_BIN}{os.pathsep}{self.env['PATH']}", RAY_TMPDIR=tmpdir)
        self.env["RAY_AUTH_TOKEN"] = secrets.token_hex(32)  # one token for every node and client
        self.nodes: list[subprocess.Popen] = []
        self.client_port: int | None = None

    def start(self) -> None:
        port, self.dashboard_port = free_port(), free_port()
        self.head_address = f"127.0.0.1:{port}"
        head = {
            "RAY_PORT": str(port),
            "RAY_DASHBOARD_PORT": str(self.dashboard_port),
            "RAY_DASHBOARD_HOST": "127.0.0.1",
        }
        if importlib.util.find_spec("grpc"):  # with ray[client], the head also serves Ray Client, by default on 10001
            self.client_port = free_port()
            head["RAY_CLIENT_PORT"] = str(self.client_port)
        self.head = self._start("head", **head)
        self.worker = self._start("worker", RAY_HEAD_ADDRESS=f"127.0.0.1:{port}")

    def _start(self, role: str, **settings: str) -> subprocess.Popen:
        # One CPU per node, and this node's own free ports where Ray's defaults would collide.
        settings |= {
            "RAY_NODE_IP": "127.0.0.1",
            "RAY_NUM_CPUS": "1",
            "RAY_START_ARGS": f"--dashboard-agent-listen-port={free_port()}",
        }
        workdir, log = project_dir(self.folder / role), self.folder / f"{role}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [ENTRYPOINT, role],
                cwd=workdir,
                env=self.env | settings,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.nodes.append(process)
        wait_until(
            lambda: "Ray runtime started" in log.read_text() or process.poll() is not None,
            START_TIMEOUT_S,
            f"the {role} node to start",
            (log,),
        )
        assert process.poll() is None, f"the {role} node exited:\n{log.read_text()[-3000:]}"
        return process

    def healthcheck(self) -> int:
        return subprocess.run([ENTRYPOINT, "healthcheck"], env=self.env, capture_output=True, timeout=60).returncode

    def run(self, command: list, name: str, cwd: Path, check: bool = True) -> tuple[str, dict[int, bool]]:
        """Run ``command`` to the end: its output, and every process of this cluster seen meanwhile.
        ``check``: fail the test unless it exits 0."""
        log = self.folder / f"{name}.log"
        seen: dict[int, bool] = {}
        with log.open("wb") as out:
            process = subprocess.Popen(command, cwd=cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + SWEEP_TIMEOUT_S
            while process.poll() is None and time.monotonic() < deadline:
                seen |= ray_processes(self.tmpdir)
                time.sleep(0.2)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
        output = log.read_text()
        assert process.returncode == 0 or not check, output[-5000:]
        return output, seen

    def kill_everything(self) -> None:
        """Teardown, also after a failure: SIGKILL every process of this cluster."""
        for process in self.nodes:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        for pid in ray_processes(self.tmpdir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for process in self.nodes:
            process.wait(timeout=10)
        wait_until(lambda: not ray_processes(self.tmpdir), 10, "killed Ray processes to exit")


@contextlib.contextmanager
def cluster(folder: Path) -> Iterator[Cluster]:
    # Ray's socket paths must stay under ~107 bytes, too short for pytest's tmp_path: a short private folder.
    tmpdir = tempfile.mkdtemp(prefix="rayep-", dir="/tmp")
    ray_cluster = Cluster(tmpdir, folder)
    try:
        ray_cluster.start()
        yield ray_cluster
    finally:
        ray_cluster.kill_everything()
        shutil.rmtree(tmpdir, ignore_errors=True)


@pytest.fixture(scope="module")
def running_cluster(tmp_path_factory) -> Iterator[Cluster]:
    with cluster(tmp_path_factory.mktemp("cluster")) as ray_cluster:
        yield ray_cluster


def sweep_command(storage: Path, name: str, clamp_values: str, address: str = "auto") -> list[str]:
    """The README's sweep command, shrunk, with its own storage and name."""
    sets = (f"grid.clamp_value={clamp_values}", *TINY_SWEEP)
    return [
        "onlinenorm",
        "sweep",
        "run",
        "sweeps/specs/quick.yaml",
        "--address",
        address,
        "--storage",
        str(storage),
        "--name",
        name,
        *(arg for item in sets for arg in ("--set", item)),
    ]


def trial_rows(experiment: Path) -> dict[str, dict]:
    """Trial folder -> its last result row."""
    rows = {}
    for result in sorted(experiment.glob("*/result.json")):
        lines = [line for line in result.read_text().splitlines() if line.strip()]
        rows[result.parent.name] = json.loads(lines[-1]) if lines else {}
    return rows


def stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)  # what `docker stop` and Kubernetes send the container's entrypoint
    return process.wait(timeout=STOP_TIMEOUT_S)


def run_entrypoint(*args: str, **settings: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    env |= {"PATH": f"{VENV_BIN}{os.pathsep}{env['PATH']}", **settings}
    return subprocess.run([ENTRYPOINT, *args], env=env, capture_output=True, text=True, timeout=60)


def test_entrypoint_runs_other_commands_and_explains_its_usage(tmp_path):
    assert "sweep" in run_entrypoint("onlinenorm", "--help").stdout
    assert run_entrypoint().returncode == 2
    missing = run_entrypoint("worker", RAY_TMPDIR=str(tmp_path))
    assert missing.returncode != 0 and "set RAY_HEAD_ADDRESS to the head node as HOST:PORT" in missing.stderr


def test_healthcheck_passes_command_containers_and_fails_a_node_still_starting(tmp_path):
    assert run_entrypoint("healthcheck", RAY_TMPDIR=str(tmp_path)).returncode == 0
    (tmp_path / "onlinenorm-ray-node").write_text("worker\n")  # what the entrypoint writes before `ray start`
    assert run_entrypoint("healthcheck", RAY_TMPDIR=str(tmp_path)).returncode == 1


@pytest.mark.slow
def test_sigterm_stops_each_node_and_leaves_no_ray_process(tmp_path):
    with cluster(tmp_path) as ray_cluster:
        processes = ray_processes(ray_cluster.tmpdir)
        head_pids = {pid for pid, on_worker in processes.items() if not on_worker}
        assert sum(processes.values()) >= 3 and len(head_pids) >= 5, processes  # raylet, agents, gcs_server, ...

        assert stop(ray_cluster.worker) == 0, (tmp_path / "worker.log").read_text()[-3000:]
        wait_until(
            lambda: not any(ray_processes(ray_cluster.tmpdir).values()), 10, "the worker node's processes to exit"
        )
        assert ray_cluster.head.poll() is None, "stopping the worker stopped the head"
        assert ray_cluster.healthcheck() == 0

        assert stop(ray_cluster.head) == 0, (tmp_path / "head.log").read_text()[-3000:]
        wait_until(lambda: not ray_processes(ray_cluster.tmpdir), 10, "the head node's processes to exit")


@pytest.mark.slow
def test_sweep_through_address_runs_trials_on_both_nodes(running_cluster, tmp_path):
    assert running_cluster.healthcheck() == 0
    storage = tmp_path / "results"
    # Two trials of one CPU each on two one-CPU nodes: Tune starts both at once, one on each node.
    output, seen = running_cluster.run(
        sweep_command(storage, "cluster", "[1,5]"), "sweep", cwd=project_dir(tmp_path / "project")
    )
    assert f"results in {storage / 'cluster'}" in output, output[-2000:]

    trials = trial_rows(storage / "cluster")
    assert len(trials) == 2, output[-3000:]
    nodes = {}
    for trial, row in trials.items():
        assert row.get("epoch") == 1 and "val_acc" in row, (trial, row)
        assert row["pid"] in seen, f"{trial}: its process was never seen in this cluster"
        nodes[trial] = "worker" if seen[row["pid"]] else "head"
    assert set(nodes.values()) == {"head", "worker"}, nodes


def submit_job(cluster: Cluster, submit: list, command: list, cwd: Path, timeout_s: float = 90) -> str:
    """The output of ``submit`` + ``command``, submitted again while the head's job agent does not take
    jobs yet (a fresh head answers "No available agent" for a while)."""
    deadline = time.monotonic() + timeout_s
    for attempt in itertools.count():
        output, _ = cluster.run([*submit, *command], f"job-{attempt}", cwd=cwd, check=False)
        if "No available agent" not in output or time.monotonic() > deadline:
            return output
        time.sleep(2)


@pytest.mark.slow
def test_ray_job_submit_runs_the_readme_sweep_command_on_the_head(running_cluster, tmp_path):
    pytest.importorskip(
        "ray.dashboard.optional_deps", reason="ray job submit needs Ray's dashboard: ray[default] is not installed"
    )
    storage = tmp_path / "results"
    submit = ["ray", "job", "submit", "--address", f"http://127.0.0.1:{running_cluster.dashboard_port}", "--"]
    output = submit_job(running_cluster, submit, sweep_command(storage, "job", "[1,5]"), cwd=tmp_path)
    assert "succeeded" in output, output[-3000:]
    trials = trial_rows(storage / "job")
    assert len(trials) == 2 and all(row.get("epoch") == 1 for row in trials.values()), output[-3000:]
    # The driver ran on the head, in its working directory (the image's WORKDIR), where the spec path resolved.
    spec = yaml.safe_load((storage / "job/spec.yaml").read_text())
    assert spec["dataset"]["data_dir"] == str(running_cluster.folder / "head/data/synthetic-cifar10")


def test_a_node_without_the_token_explains_what_to_set(tmp_path):
    """The images require a token: a node started without one says so in one line, before starting Ray."""
    no_token = run_entrypoint("head", RAY_AUTH_MODE="token", RAY_TMPDIR=str(tmp_path), HOME=str(tmp_path))
    assert no_token.returncode == 2, no_token.stderr
    assert no_token.stderr.strip().startswith("entrypoint: token authentication is on but this node has no token")
    assert "RAY_AUTH_MODE=disabled" in no_token.stderr and not (tmp_path / "onlinenorm-ray-node").exists()


@pytest.mark.slow
def test_the_head_refuses_clients_without_the_cluster_token(running_cluster, tmp_path):
    jobs = f"http://127.0.0.1:{running_cluster.dashboard_port}/api/jobs/"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(jobs, timeout=30)
    assert refused.value.code in (401, 403)
    bearer = {"Authorization": f"Bearer {running_cluster.env['RAY_AUTH_TOKEN']}"}
    with urllib.request.urlopen(urllib.request.Request(jobs, headers=bearer), timeout=30) as answer:
        assert answer.status == 200

    driver = (
        f"import ray; ray.init(address={running_cluster.head_address!r}); "
        "print(ray.get(ray.remote(lambda: 'ran').remote()))"
    )
    without = {key: value for key, value in running_cluster.env.items() if key != "RAY_AUTH_TOKEN"}
    clients = {  # both at once: each spends most of its time starting Python and Ray
        name: subprocess.Popen(
            [sys.executable, "-c", driver],
            env=without | settings | {"HOME": str(tmp_path)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, settings in {
            "a wrong token": {"RAY_AUTH_TOKEN": secrets.token_hex(32)},
            "no token, authentication off": {"RAY_AUTH_MODE": "disabled"},
        }.items()
    }
    for name, client in clients.items():
        try:
            stdout, stderr = client.communicate(timeout=120)
        finally:
            client.kill()
        assert client.returncode != 0 and "ran" not in stdout, f"{name}: the head accepted the client"
        # The head's answer, not the client's own check: Ray's GCS rejects the call.
        assert "Unauthenticated: RPC error: InvalidAuthToken" in stderr, f"{name}: {stderr[-3000:]}"


@pytest.mark.slow
def test_sweep_through_ray_client(running_cluster, tmp_path):
    if running_cluster.client_port is None:
        pytest.fail("Ray Client needs ray[client] (grpcio), a dependency of the project")
    storage = tmp_path / "results"  # a folder every node and the client share, as on one machine
    output, _ = running_cluster.run(
        sweep_command(storage, "client", "[1,5]", address=f"ray://127.0.0.1:{running_cluster.client_port}"),
        "client",
        cwd=project_dir(tmp_path / "project"),
    )
    assert f"results in {storage / 'client'}" in output, output[-3000:]
    trials = trial_rows(storage / "client")
    assert len(trials) == 2 and all(row.get("epoch") == 1 and "val_acc" in row for row in trials.values()), output
