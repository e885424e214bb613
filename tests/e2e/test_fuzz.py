"""Schemathesis against every service's OpenAPI, on the four real processes, authenticated, with a fixed seed
and budget (examples, coverage, fuzzing and stateful phases, the links between operations inferred; ~1.5-2.5
minutes in all): no request makes a 5xx, and nothing is half-written (every version the registrar holds has
its ModelRegistered, numbered without gaps). The event models are fuzzed by hypothesis in
tests/unit/test_limits.py."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict

import httpx
import pytest

from bench.common import new_stack, running_system
from shared.topology import SERVICES
from tests.e2e.conftest import add_principals


@pytest.fixture(scope="module")
def system(localstack_endpoint):
    stack = new_stack(localstack_endpoint, "fuzz", {
        "MODELGATE_CHECK_ARTIFACTS": "false",  # let fuzzed registrations through, to exercise what follows
        "MODELGATE_POLL_WAIT_SECONDS": "2",
        # Failed attempts (every 401, and every 403 of a principal) are throttled per source and principal;
        # the fuzzer makes hundreds on purpose, and would otherwise fuzz nothing but 429s after the tenth.
        "MODELGATE_AUTH_FAILURE_LIMIT": "1000000",
        "MODELGATE_AUTH_PRINCIPAL_FAILURE_LIMIT": "1000000",
    })
    with running_system(stack):
        stack.tokens = add_principals(stack)  # type: ignore[attr-defined]
        stack.headers = lambda who: {"Authorization": f"Bearer {stack.tokens[who]}"}  # type: ignore[attr-defined]
        yield stack


def fuzzer(stack, run: str) -> str:  # type: ignore[no-untyped-def]
    """A token of an admin of the run's own: fuzzing /v1/principals as admin revokes the tokens of, and
    disables, whoever it names (schemathesis finds the names in the listings, the caller's own included)."""
    made = httpx.post(f"{stack.url('approver')}/v1/principals", json={"name": f"fuzz-{run}", "roles": ["admin"]},
                      headers=stack.headers("admin"), timeout=10)
    assert made.status_code == 201, made.text
    return str(made.json()["token"])


#: One schemathesis run each; the approver's principals go last, alone (test_no_principals_request_...).
RUNS = {
    "registrar": ("registrar", ["--exclude-path-regex", "/versions/comet"]),  # Comet ingest needs a Comet
    # (tests/integration/test_registrar_comet.py); unconfigured, it says 503.
    "approver": ("approver", ["--exclude-path-regex", "^/v1/principals/"]),
    "deployer": ("deployer", []),
    "notifier": ("notifier", []),
}


@pytest.mark.parametrize("run", RUNS)
def test_no_request_makes_a_server_error(system, run):
    fuzz(system, run, *RUNS[run])


def fuzz(system, run: str, service: str, selection: list[str]) -> None:  # type: ignore[no-untyped-def]
    url = system.url(service)
    completed = subprocess.run(
        [
            sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json",
            "--checks", "not_a_server_error", "--max-examples", "25", "--seed", "1",
            "--phases", "examples,coverage,fuzzing,stateful", "--workers", "1", "--request-timeout", "20",
            "--header", f"Authorization: Bearer {fuzzer(system, run)}", "--suppress-health-check", "all",
            "--exclude-path-regex", "^/(metrics|healthz|readyz)$", *selection,
        ],
        check=False, capture_output=True, text=True, timeout=600,
    )
    print(completed.stdout[-4000:])
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-2000:]
    assert httpx.get(f"{url}/readyz", timeout=5).status_code == 200


def test_nothing_is_half_written(system):
    registrar = system.url("registrar")
    versions, offset = [], 0
    while offset is not None:
        answer = httpx.get(f"{registrar}/v1/versions", params={"limit": 1000, "offset": offset},
                           headers=system.headers("admin"), timeout=30)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        versions += page["items"]
        offset = page["next_offset"]
    by_group = defaultdict(list)
    for v in versions:
        by_group[v["group"]].append(v["version"])
        history = httpx.get(f"{registrar}/v1/groups/{v['group']}/versions/{v['version']}/history",
                            headers=system.headers("admin"), timeout=30).json()
        assert history and history[0]["event_type"] == "ModelRegistered", v["model_version_id"]
    for group, numbers in by_group.items():
        assert sorted(numbers) == list(range(1, len(numbers) + 1)), group


#: Routes whose credential is not a bearer token: a decision link carries its own signed token.
LINK_ROUTES = ("/v1/approvals/{approval_id}/decision-link",)


@pytest.mark.parametrize("service", SERVICES)
def test_every_v1_route_refuses_a_caller_without_a_token(system, service):
    url = system.url(service)
    spec = httpx.get(f"{url}/openapi.json", timeout=10).json()
    answers = {}
    for path, operations in spec["paths"].items():
        if not path.startswith("/v1/") or path in LINK_ROUTES:
            continue
        concrete = path.replace("{", "x").replace("}", "")  # any value: nobody gets that far
        for method in set(operations) & {"get", "post", "put", "patch", "delete"}:
            answers[(method.upper(), path)] = httpx.request(method, f"{url}{concrete}", timeout=10).status_code
    assert answers and set(answers.values()) == {401}, {k: v for k, v in answers.items() if v != 401}
    # and one unknown token, as each service (the approver asked on its behalf) says it
    unknown = httpx.get(f"{url}{next(p for p in spec['paths'] if p.startswith('/v1/') and '{' not in p)}",
                        headers={"Authorization": "Bearer mgt_" + "x" * 43}, timeout=10)
    assert unknown.status_code == 401 and unknown.json()["detail"].startswith("unknown token: check it"), unknown.text


def test_no_principals_request_makes_a_server_error(system):
    """Last: it revokes and disables whoever it names, the system's admin included, as an admin may."""
    fuzz(system, "principals", "approver", ["--include-path-regex", "^/v1/principals/"])
