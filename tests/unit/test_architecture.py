"""The layering a newcomer can trust (issue 13): small functions, no import cycles, services apart from the CLI.

- no function in shared/ or services/ (migrations aside) is longer than 60 lines;
- no module of shared/, services/ or modelgate/ imports, directly or through others, a module importing it back;
- services and shared import nothing from modelgate/ (the CLI package);
- every service is wired the same way: a bootstrap.py with a literal HANDLERS table naming every event it
  consumes, and a __main__ that serves it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from shared.topology import CONSUMES

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("shared", "services", "modelgate")
MAX_LINES = 60


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts and path.name != "migrations.py":
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        out.update(t for t in targets if t in MODULES and t != name)
    return out


def test_no_function_is_longer_than_a_screen() -> None:
    long = []
    for name, path in MODULES.items():
        if not name.startswith(("shared", "services")):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if lines > MAX_LINES:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert not long, "split these functions:\n" + "\n".join(long)


def test_services_and_shared_never_import_the_cli_package() -> None:
    offenders = {
        f"{name} imports {', '.join(sorted(i for i in _imports(name, path) if i.startswith('modelgate')))}"
        for name, path in MODULES.items()
        if name.startswith(("shared", "services")) and any(i.startswith("modelgate") for i in _imports(name, path))
    }
    assert not offenders, "\n".join(sorted(offenders))


def test_no_import_cycles() -> None:
    graph = {name: {_owner(i) for i in _imports(name, path)} - {name} for name, path in MODULES.items()}
    cycles = set()
    for start in graph:
        stack, seen = [(start, (start,))], set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    cycles.add(" -> ".join(_rotate(trail)))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, (*trail, nxt)))
    assert not cycles, "import cycles:\n" + "\n".join(sorted(cycles))


def _owner(imported: str) -> str:
    """`from pkg import name` imports pkg (its __init__) unless name is a submodule."""
    return imported


def _rotate(trail: tuple[str, ...]) -> tuple[str, ...]:
    i = trail.index(min(trail))
    return trail[i:] + trail[:i]


@pytest.mark.parametrize("service", sorted(CONSUMES))
def test_every_service_wires_its_handlers_in_one_table(service: str) -> None:
    from importlib import import_module

    bootstrap = import_module(f"services.{service}.bootstrap")
    assert set(bootstrap.HANDLERS) == set(CONSUMES[service]), "HANDLERS must name every event the service consumes"
    assert callable(bootstrap.bootstrap)
    main = (ROOT / "services" / service / "__main__.py").read_text()
    assert "serve(" in main and "bootstrap" in main


#: /v1 routes whose credential is not a Bearer principal: a signed, expiring, single-use decision link.
LINK_CREDENTIAL = {("GET", "/v1/approvals/{approval_id}/decision-link"), ("POST", "/v1/approvals/{approval_id}/decision-link")}


def _depends_on(dependant, call) -> bool:
    return dependant.call is call or any(_depends_on(d, call) for d in dependant.dependencies)


@pytest.mark.parametrize("service", sorted(CONSUMES))
def test_every_v1_route_takes_the_principal(service: str) -> None:
    """Secure by default: a route under /v1 that forgets `CurrentPrincipal` fails here (identity, issue 14)."""
    import importlib

    from fastapi.routing import APIRoute

    from shared.http import current_principal

    module = importlib.import_module(f"services.{service}.bootstrap")
    routers = getattr(module, "ROUTERS", None) or _routers_of(service)
    open_routes = []
    for router in routers:
        for route in router.routes:
            if not isinstance(route, APIRoute) or not route.path.startswith("/v1"):
                continue
            for method in route.methods:
                if (method, route.path) not in LINK_CREDENTIAL and not _depends_on(route.dependant, current_principal):
                    open_routes.append(f"{method} {route.path}")
    assert not open_routes, f"{service}: these /v1 routes take no CurrentPrincipal: {open_routes}"


def _routers_of(service: str) -> list:
    import importlib
    import pkgutil

    package = importlib.import_module(f"services.{service}.routes")
    return [importlib.import_module(f"{package.__name__}.{m.name}").router for m in pkgutil.iter_modules(package.__path__)]
