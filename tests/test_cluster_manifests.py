"""The cluster manifests and the README section name only things that exist.

docker/compose.yaml, docker/ray-cluster.yaml, docker/kuberay/*.yaml and the
"Running on a cluster" README section must parse, and every entrypoint role,
environment setting, `ray start` option, port, path, spec and `onlinenorm`
command they name must be one the project has: renaming any of them breaks a
test here, not a user's cluster.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from onlinenorm.cli import build_parser
from sweeps.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
APP_DIR = "/opt/onlinenorm"  # the project folder inside the images (their WORKDIR)
STORAGE = "/results"  # the shared results folder every node mounts
ENTRYPOINT = ROOT / "docker/entrypoint.sh"
COMPOSE = "docker/compose.yaml"
LAUNCHER = "docker/ray-cluster.yaml"
KUBERAY = ("docker/kuberay/storage.yaml", "docker/kuberay/raycluster.yaml", "docker/kuberay/rayjob.yaml")
README_SECTION = "Running on a cluster"
TOKEN_FOLDER = "docker/ray-auth"  # git-ignored; the README's commands put the cluster's token there
# `ray start` options whose value is one of the entrypoint's ports.
PORT_OPTIONS = {"port": "RAY_PORT", "dashboard-port": "RAY_DASHBOARD_PORT"}


def load(path: str) -> list:
    return [doc for doc in yaml.safe_load_all((ROOT / path).read_text()) if doc is not None]


def entrypoint_code() -> str:
    return "\n".join(line for line in ENTRYPOINT.read_text().splitlines() if not line.lstrip().startswith("#"))


def entrypoint_roles() -> set[str]:
    """The words the entrypoint's case statement handles (head, worker, healthcheck)."""
    return set(re.findall(r"^ {4}([a-z]+)\)$", entrypoint_code(), flags=re.M))


def entrypoint_settings() -> set[str]:
    return set(re.findall(r"\bRAY_[A-Z_]+\b", entrypoint_code()))


def entrypoint_ports() -> dict[str, int]:
    """Setting -> default port, from the entrypoint's ${RAY_..._PORT:-N} expansions."""
    return {name: int(port) for name, port in re.findall(r"\$\{(RAY_\w*PORT):-(\d+)\}", entrypoint_code())}


def image_tags() -> dict[str, str]:
    """Tag -> Dockerfile, from the `docker build -f ... -t TAG .` line each Dockerfile documents."""
    tags = {}
    for dockerfile in ("docker/Dockerfile", "docker/Dockerfile.gpu"):
        (tag,) = re.findall(rf"docker build -f {re.escape(dockerfile)} -t (\S+) \.", (ROOT / dockerfile).read_text())
        tags[tag] = dockerfile
    return tags


def dirs_the_images_create() -> set[str]:
    text = (ROOT / "docker/Dockerfile").read_text()
    (line,) = re.findall(r"install -d -o ray -g ray ([^\n\\]+)", text)
    return set(line.split())


def readme_section() -> str:
    """The README's cluster section."""
    readme = (ROOT / "README.md").read_text()
    match = re.search(rf"^## {README_SECTION}\n.*?(?=^## |\Z)", readme, flags=re.M | re.S)
    assert match, f"README.md has no '## {README_SECTION}' section"
    return match.group(0)


def shell_blocks(markdown: str) -> str:
    return "\n".join(re.findall(r"```(?:sh|bash|shell)\n(.*?)```", markdown, flags=re.S))


def texts_naming_commands() -> dict[str, str]:
    """Where users and machines read commands: the manifests (comments included) and the README's shell blocks."""
    texts = {path: (ROOT / path).read_text() for path in (COMPOSE, LAUNCHER, *KUBERAY)}
    texts["README section"] = shell_blocks(readme_section())
    return {name: text.replace("\\\n", " ") for name, text in texts.items()}


def onlinenorm_commands(text: str) -> list[list[str]]:
    """The arguments of every `onlinenorm ...` command in ``text``, up to a shell separator or unpaired quote."""
    found = re.findall(r"(?<![\w/.:-])onlinenorm[ \t]+((?:[^\n#;&|'\"`]|\"[^\"\n]*\")*)", text)
    return [shlex.split(arguments) for arguments in found]


def shell_commands(text: str) -> list[list[str]]:
    """Each simple command on each line of ``text``, split as a shell splits it."""
    commands = []
    for line in text.splitlines():
        command: list[str] = []
        for token in [*shlex.split(line, comments=True), ";"]:
            if token in ("&&", "||", ";", "|"):
                commands += [command] if command else []
                command = []
            else:
                command.append(token)
    return commands


def ray_start_commands(text: str) -> list[list[str]]:
    return [shlex.split(arguments) for arguments in re.findall(r"\bray start([^\n#;&|'\"`]*)", text)]


@pytest.fixture(scope="module")
def ray_start_options() -> set[str]:
    from ray.scripts.scripts import cli

    return {option.removeprefix("--") for param in cli.commands["start"].params for option in param.opts}


def check_ray_start_options(where: str, options: dict[str, str], known: set[str]) -> None:
    ports = entrypoint_ports()
    for name, value in options.items():
        assert name in known, f"{where}: `ray start --{name}` is not an option of ray start"
        if name in PORT_OPTIONS:
            assert int(value) == ports[PORT_OPTIONS[name]], (
                f"{where}: --{name}={value}, the entrypoint uses {ports[PORT_OPTIONS[name]]}"
            )
        if name == "address":
            assert int(value.rsplit(":", 1)[1]) == ports["RAY_PORT"], f"{where}: --address={value}"


def as_options(arguments: list[str]) -> dict[str, str]:
    options = {}
    for argument in arguments:
        name, _, value = argument.removeprefix("--").partition("=")
        options[name] = value
    return options


def test_entrypoint_names_its_roles_settings_and_ports():
    assert entrypoint_roles() == {"head", "worker", "healthcheck"}
    assert {"RAY_HEAD_ADDRESS", "RAY_NUM_CPUS", "RAY_NUM_GPUS"} <= entrypoint_settings()
    assert entrypoint_ports() == {"RAY_PORT": 6379, "RAY_DASHBOARD_PORT": 8265}
    for dockerfile in image_tags().values():
        (exposed,) = re.findall(r"^EXPOSE (.+)$", (ROOT / dockerfile).read_text(), flags=re.M)
        assert {int(port) for port in exposed.split()} == set(entrypoint_ports().values()), dockerfile


def test_compose_runs_a_head_and_two_workers_from_the_cpu_image_sharing_results():
    (compose,) = load(COMPOSE)
    services = compose["services"]
    roles = {name: service["command"] for name, service in services.items()}
    assert roles == {"head": "head", "worker": "worker"}
    assert set(roles.values()) <= entrypoint_roles()
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["worker"]["depends_on"]["head"]["condition"] == "service_healthy"
    for name, service in services.items():
        build = service["build"]
        context = (ROOT / "docker" / build["context"]).resolve()
        assert context == ROOT and (context / build["dockerfile"]).is_file(), f"{name}: build {build}"
        assert image_tags()[service["image"]] == build["dockerfile"], f"{name}: image tag of another Dockerfile"
        unknown = set(service.get("environment", {})) - entrypoint_settings()
        assert not unknown, f"{name}: the entrypoint reads no {sorted(unknown)}"
        targets = {volume.split(":")[1]: volume.split(":")[0] for volume in service["volumes"]}
        assert targets.keys() == {STORAGE, f"{APP_DIR}/data"}, f"{name}: volumes {service['volumes']}"
        assert set(targets.values()) <= set(compose["volumes"])
    host, port = services["worker"]["environment"]["RAY_HEAD_ADDRESS"].split(":")
    assert host in services and int(port) == entrypoint_ports()["RAY_PORT"]
    published = {int(mapping.rsplit(":", 1)[1]) for mapping in services["head"]["ports"]}
    assert published == {entrypoint_ports()["RAY_DASHBOARD_PORT"]}
    check = services["head"]["healthcheck"]["test"]
    assert check[1:] == [f"{APP_DIR}/docker/entrypoint.sh", "healthcheck"] and check[2] in entrypoint_roles()


def test_launcher_config_is_valid_for_ray_up_and_uses_the_entrypoint_ports(ray_start_options):
    from ray.autoscaler._private.util import prepare_config, validate_config

    (config,) = load(LAUNCHER)
    validate_config(prepare_config(config))  # what `ray up` does before touching a machine
    assert config["docker"]["image"] in image_tags()
    mounts = {option.split(":")[1] for option in config["docker"]["run_options"] if option.startswith("-v ")}
    assert mounts == {STORAGE, f"{APP_DIR}/data"}
    commands = [shlex.split(c) for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"]]
    starts = [command[2:] for command in commands if command[:2] == ["ray", "start"]]
    assert len(starts) == 2 and "--head" in starts[0]
    for arguments in starts:
        check_ray_start_options(LAUNCHER, as_options(arguments), ray_start_options)


def test_kuberay_cluster_and_job_fit_together(ray_start_options):
    claims = {doc["metadata"]["name"] for doc in load(KUBERAY[0]) if doc["kind"] == "PersistentVolumeClaim"}
    (cluster,) = load(KUBERAY[1])
    (job,) = load(KUBERAY[2])
    assert (cluster["apiVersion"], cluster["kind"], job["apiVersion"], job["kind"]) == (
        "ray.io/v1",
        "RayCluster",
        "ray.io/v1",
        "RayJob",
    )
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}

    groups = [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]
    for group in groups:
        check_ray_start_options(KUBERAY[1], group["rayStartParams"], ray_start_options)
        pod = group["template"]["spec"]
        assert pod["securityContext"]["runAsUser"] != 0
        (container,) = pod["containers"]
        assert container["image"] in image_tags()
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        assert {
            v["persistentVolumeClaim"]["claimName"] for v in volumes.values() if "persistentVolumeClaim" in v
        } == claims
        mounts = {mount["mountPath"] for mount in container["volumeMounts"] if mount["name"] in volumes}
        assert {STORAGE, f"{APP_DIR}/data"} <= mounts
    ports = {
        port["containerPort"] for port in cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert ports == set(entrypoint_ports().values())
    assert any(
        container["resources"]["limits"].get("nvidia.com/gpu")
        for group in cluster["spec"]["workerGroupSpecs"]
        for container in group["template"]["spec"]["containers"]
    )


def test_every_ray_start_in_manifests_and_readme_uses_real_options(ray_start_options):
    for where, text in texts_naming_commands().items():
        for arguments in ray_start_commands(text):
            check_ray_start_options(where, as_options(arguments), ray_start_options)


def test_every_ray_command_in_the_readme_and_the_launcher_config_parses():
    import click
    from ray.scripts.scripts import cli

    (launcher,) = load(LAUNCHER)
    commands = [command for command in shell_commands(shell_blocks(readme_section())) if command[0] == "ray"]
    commands += [
        shlex.split(line) for line in launcher["head_start_ray_commands"] + launcher["worker_start_ray_commands"]
    ]
    for argv in commands:
        command, name, arguments = cli, "ray", argv[1:]
        while isinstance(command, click.Group):
            name, *arguments = arguments
            command = command.get_command(click.Context(command), name)
            assert command is not None, f"`{shlex.join(argv)}`: ray has no command {name}"
        try:
            command.make_context(name, arguments)
        except click.ClickException as err:
            pytest.fail(f"`{shlex.join(argv)}`: {err.format_message()}")
    named = {tuple(argv[1:3]) if argv[1] == "job" else argv[1] for argv in commands}
    assert {"up", "exec", "down", "start", ("job", "submit")} <= named


def test_every_onlinenorm_command_parses_and_every_sweep_spec_loads():
    parser = build_parser()
    seen = set()
    for where, text in texts_naming_commands().items():
        for argv in onlinenorm_commands(text):
            try:
                args = parser.parse_args(argv)
            except SystemExit:
                pytest.fail(f"{where}: `onlinenorm {shlex.join(argv)}` is not a valid onlinenorm command")
            seen.add((args.command, getattr(args, "sweep_action", None)))
            if getattr(args, "sweep_action", None) == "run":
                spec = ROOT / Path(args.spec).relative_to(APP_DIR) if args.spec.startswith("/") else ROOT / args.spec
                assert spec.is_file(), f"{where}: no sweep spec {args.spec} in the project"
                load_spec(spec, args.set)
                assert args.storage == STORAGE or args.storage.startswith("s3://"), (
                    f"{where}: cluster sweeps write to the shared {STORAGE} or to a bucket"
                )
    assert {("sweep", "run"), ("report", None)} <= seen


def test_every_project_path_named_exists():
    created = dirs_the_images_create()
    for where, text in texts_naming_commands().items():
        for path in re.findall(rf"{APP_DIR}(?:/[\w.-]+)*", text):
            path = path.rstrip(".")
            inside = path.removeprefix(APP_DIR).lstrip("/")
            under_created = any(path.startswith(f"{folder}/") for folder in created)  # e.g. data made on first use
            assert (ROOT / inside).exists() or path in created or under_created, f"{where}: {path} is not in the image"
        for path in re.findall(r"(?<![\w/.-])((?:docker|sweeps/specs)/[\w./-]+)", text):
            path = path.rstrip(".")
            made_by_the_readme = path.startswith(f"{TOKEN_FOLDER}/")  # the token files, never committed
            assert (ROOT / path).exists() or made_by_the_readme, f"{where}: {path} is not in the project"
    assert {STORAGE, f"{APP_DIR}/data"} <= created


def test_readme_section_covers_the_ways_to_run():
    section = readme_section()
    commands = shell_blocks(section)
    for needed in (
        "docker build -f docker/Dockerfile ",
        "docker build -f docker/Dockerfile.gpu ",
        "docker compose -f docker/compose.yaml up",
        "ray up docker/ray-cluster.yaml",
        "kubectl apply -f docker/kuberay/",
        "ray job submit",
        "--address",
    ):
        assert needed in commands, f"README section: no `{needed}` command"
    assert "analysis.load(" in section
    ports = {int(port) for port in re.findall(r"https?://(?:127\.0\.0\.1|localhost):(\d+)", commands)}
    assert ports <= set(entrypoint_ports().values())


def kubernetes_token_sources(pod_spec: dict) -> list[dict]:
    """Each container's secretKeyRef for RAY_AUTH_TOKEN (None where a container has none)."""
    return [
        next(
            (
                item["valueFrom"]["secretKeyRef"]
                for item in container.get("env", [])
                if item["name"] == "RAY_AUTH_TOKEN" and "valueFrom" in item
            ),
            None,
        )
        for container in pod_spec["containers"]
    ]


def test_every_node_and_client_gets_the_one_cluster_token():
    """Token authentication stays on: each way to run passes one token to every node and client."""
    ignored = (ROOT / TOKEN_FOLDER / ".gitignore").read_text().split()
    assert "*" in ignored and "!.gitignore" in ignored, f"{TOKEN_FOLDER}: the token would be committed"
    assert not any("RAY_AUTH_MODE" in yaml.safe_dump(doc) for path in (COMPOSE, *KUBERAY) for doc in load(path)), (
        "a manifest sets RAY_AUTH_MODE: authentication stays as the images have it (on)"
    )

    (compose,) = load(COMPOSE)
    for name, service in compose["services"].items():
        assert service["env_file"] == "ray-auth/token.env", f"{name}: no token env file"
    assert (ROOT / "docker" / compose["services"]["head"]["env_file"]).parent == ROOT / TOKEN_FOLDER

    (launcher,) = load(LAUNCHER)
    (mount,) = [remote for remote, local in launcher["file_mounts"].items() if local == TOKEN_FOLDER]
    assert f"--env=RAY_AUTH_TOKEN_PATH={mount}/token" in launcher["docker"]["run_options"]  # head and workers
    assert "RAY_AUTH_MODE=disabled" not in " ".join(launcher["docker"]["run_options"])

    (cluster,) = load(KUBERAY[1])
    (job,) = load(KUBERAY[2])
    groups = [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]
    pods = [group["template"]["spec"] for group in groups]
    pods.append(job["spec"]["submitterPodTemplate"]["spec"])  # the client that submits the RayJob
    sources = [source for pod in pods for source in kubernetes_token_sources(pod)]
    assert len(sources) >= 3 and all(source == sources[0] for source in sources), sources
    commands = shell_blocks(readme_section())
    create = f"kubectl create secret generic {sources[0]['name']} --from-file={sources[0]['key']}={TOKEN_FOLDER}/token"
    assert create in commands, f"README section: no `{create}`"
    assert f"> {TOKEN_FOLDER}/token" in commands and f"> {TOKEN_FOLDER}/token.env" in commands
    assert "RAY_AUTH_MODE=disabled" in readme_section(), "README section: the opt-out is not documented"
