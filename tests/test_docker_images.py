"""The Dockerfiles, read as text (there is no Docker engine here to build them).

They must install the project with the README's own install step (the
Makefile's ``install`` target: constraints.txt, editable install into .venv)
and nothing else, and leave a small, non-root final stage.
"""

from __future__ import annotations

import os
import re
import shlex
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = ("docker/Dockerfile", "docker/Dockerfile.gpu")
APP_DIR = "/opt/onlinenorm"
BUILD_TOOLS = ("make", "gcc", "g++", "build-essential", "cmake", "git")
GPU_RUN_TIME_COMPILER = {"gcc"}  # Triton builds its kernels' launcher with it on first use


def instructions(path: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / path).read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), " ".join(rest.split())))
    return pairs


def stages(path: str) -> list[list[tuple[str, str]]]:
    """The instructions of each build stage, in order (what precedes the first FROM is dropped)."""
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions(path):
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, rest))
    return result


def run_commands(stage) -> list[str]:
    """The shell commands of a stage's RUN lines, BuildKit flags (--mount=...) removed."""
    return [re.sub(r"^(--\S+\s+)*", "", rest) for keyword, rest in stage if keyword == "RUN"]


def makefile_rules() -> dict[str, tuple[list[str], list[str]]]:
    """target -> (prerequisites, recipe lines) of the Makefile, ``$(VAR)`` expanded."""
    text = (ROOT / "Makefile").read_text()
    variables = dict(re.findall(r"^(\w+)\s*:=\s*(.*?)\s*$", text, flags=re.M))

    def expand(value: str) -> str:
        while (expanded := re.sub(r"\$\((\w+)\)", lambda m: variables[m.group(1)], value)) != value:
            value = expanded
        return value

    rules = {}
    for match in re.finditer(r"^([^\s#.][^:=\n]*):(?!=)([^\n]*)\n((?:\t[^\n]*\n)*)", text, flags=re.M):
        recipe = [expand(line.strip()) for line in match.group(3).splitlines()]
        rules[expand(match.group(1).strip())] = (expand(match.group(2)).split(), recipe)
    return rules


def dockerignored() -> set[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def test_the_readme_commands_install_through_the_makefile_install_step():
    rules = makefile_rules()
    (stamp,) = rules["install"][0]
    recipe = rules[stamp][1]
    assert any(re.search(r"pip install -c constraints\.txt -e '\.\[all,test\]'", line) for line in recipe), recipe
    assert set(rules[stamp][0]) == {"pyproject.toml", "constraints.txt"}
    for readme_command in ("demo", "test", "test-quick"):  # the README's commands
        assert "install" in rules[readme_command][0]
    assert "make test" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_image_installs_with_make_install_and_nothing_else(dockerfile):
    build = stages(dockerfile)[0]
    commands = run_commands(build)
    assert "make install" in commands, f"{dockerfile}: the build stage must RUN make install; runs {commands}"
    for stage in stages(dockerfile):
        for command in run_commands(stage):
            assert not re.search(r"\bpip\b|\bsetup\.py\b|\buv\b|\bconda\b", command), (
                f"{dockerfile}: a second install recipe: {command!r}; install through `make install` only"
            )
    assert ("WORKDIR", APP_DIR) in build  # the Makefile's .venv lands in APP_DIR/.venv, which PATH names

    install_at = build.index(("RUN", next(r for k, r in build if k == "RUN" and r.endswith("make install"))))
    copied = {
        Path(src).as_posix()
        for keyword, rest in build[:install_at]
        if keyword == "COPY"
        for src in shlex.split(rest)[:-1]
    }
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {pattern.rstrip("*") for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    needed = {"Makefile", "pyproject.toml", "constraints.txt", pyproject["project"]["readme"], *packages}
    assert needed <= copied, f"{dockerfile}: make install needs {sorted(needed - copied)} copied before it"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_every_copied_path_exists_and_is_in_the_build_context(dockerfile):
    ignored = dockerignored()
    for stage in stages(dockerfile):
        for keyword, rest in stage:
            if keyword == "COPY" and not rest.startswith("--from"):
                for source in shlex.split(rest)[:-1]:
                    assert (ROOT / source).exists(), f"{dockerfile}: COPY {source}: no such path in the repo"
                    assert source.split("/")[0] not in ignored, f"{dockerfile}: COPY {source} is in .dockerignore"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_final_stage_is_small_non_root_labelled_and_health_checked(dockerfile):
    image_stages = stages(dockerfile)
    assert len(image_stages) >= 2, f"{dockerfile}: build in one stage, run from another"
    build, final = image_stages[0], image_stages[-1]
    base = build[0][1].split(" AS ")[0]
    assert final[0] == ("FROM", base), f"{dockerfile}: the venv needs the build stage's python; both FROM {base}"
    assert ("COPY", f"--from=build {APP_DIR} {APP_DIR}") in final

    apt_installs = [
        part.split("apt-get install", 1)[1]
        for command in run_commands(final)
        for part in command.split("&&")
        if "apt-get install" in part
    ]
    packages = {word for words in apt_installs for word in words.split() if not word.startswith("-")}
    run_time_compiler = GPU_RUN_TIME_COMPILER if dockerfile == "docker/Dockerfile.gpu" else set()
    assert packages and not packages & (set(BUILD_TOOLS) - run_time_compiler), (
        f"{dockerfile}: build tools in the final stage: {packages}"
    )

    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users and users[-1] not in ("root", "0"), f"{dockerfile}: the final stage must run as a non-root USER"
    assert ("WORKDIR", APP_DIR) in final

    labels = " ".join(rest for keyword, rest in final if keyword == "LABEL")
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert "org.opencontainers.image.title=" in labels
    assert f'org.opencontainers.image.version="{version}"' in labels, f"{dockerfile}: version label != pyproject's"

    env = " ".join(rest for keyword, rest in final if keyword == "ENV")
    assert f"PATH={APP_DIR}/.venv/bin:" in env
    assert re.search(r"\bRAY_AUTH_MODE=token\b", env), f"{dockerfile}: Ray's token authentication must stay on"

    entrypoint = f"{APP_DIR}/docker/entrypoint.sh"
    assert ("COPY", f"docker/entrypoint.sh {entrypoint}") in final
    (healthcheck,) = [rest for keyword, rest in final if keyword == "HEALTHCHECK"]
    assert healthcheck.endswith(f'CMD ["{entrypoint}", "healthcheck"]')
    (entry,) = [rest for keyword, rest in final if keyword == "ENTRYPOINT"]
    assert entry.endswith(f'"{entrypoint}"]')
    assert os.access(ROOT / "docker/entrypoint.sh", os.X_OK), "docker/entrypoint.sh must be executable"


def test_cpu_image_takes_torch_cpu_wheels_and_gpu_image_the_cuda_ones():
    build_env = " ".join(rest for keyword, rest in stages("docker/Dockerfile")[0] if keyword == "ENV")
    assert re.search(r"PIP_EXTRA_INDEX_URL=https://download\.pytorch\.org/whl/cpu", build_env)
    assert "whl/cpu" not in (ROOT / "docker/Dockerfile.gpu").read_text()


def test_dockerignore_keeps_local_environments_and_results_out_of_the_context():
    assert {".git", ".venv", "data", "results"} <= dockerignored()


def test_cpu_image_runs_the_c_kernels_built_in_its_build_stage():
    """The final stage has no compiler: the build stage builds the portable C kernels into the cache folder
    both stages name, and the final stage carries OpenMP's runtime and leaves the kernels at auto."""
    image_stages = stages("docker/Dockerfile")
    build, final = image_stages[0], image_stages[-1]
    assert "onlinenorm kernels build --portable" in " ".join(run_commands(build))

    def cache_dir(stage) -> str:
        (value,) = re.findall(
            r"ONLINENORM_CACHE_DIR=(\S+)", " ".join(rest for keyword, rest in stage if keyword == "ENV")
        )
        return value

    assert cache_dir(build) == cache_dir(final) and cache_dir(final).startswith(f"{APP_DIR}/")
    assert "libgomp1" in " ".join(run_commands(final))
    assert "ONLINENORM_KERNELS" not in " ".join(rest for keyword, rest in final if keyword == "ENV")


def test_gpu_image_runs_the_fused_kernels_by_default():
    """The GPU image carries what kernels="auto" needs at run time: triton (installed by make install's extra)
    and a C compiler with the C library's headers (Triton's launcher, the C kernels); it leaves the kernels at
    auto rather than forcing eager."""
    final = stages("docker/Dockerfile.gpu")[-1]
    installed = set(" ".join(run_commands(final)).split())
    assert {"gcc", "libc6-dev", "libgomp1"} <= installed
    assert "ONLINENORM_KERNELS" not in " ".join(rest for keyword, rest in final if keyword == "ENV")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    rules = makefile_rules()
    (stamp,) = rules["install"][0]
    extras = re.search(r"-e '\.\[([\w,]+)\]'", " ".join(rules[stamp][1])).group(1).split(",")
    optional = pyproject["project"]["optional-dependencies"]
    assert any(re.match(r"triton\b", requirement) for extra in extras for requirement in optional[extra])
