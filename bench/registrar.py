"""The registrar's catalog at scale, on SQLite and PostgreSQL, next to MLflow's model registry.

    .venv/bin/python -m bench.registrar                    # 100k versions; SQLite, PostgreSQL and MLflow
    .venv/bin/python -m bench.registrar --versions 1000000 # the catalog at 1M versions
    .venv/bin/python -m bench.registrar --versions 2000    # a smoke run

For each database: seed the catalog with `--versions` versions straight into the registrar's tables, 20,000
versions (and their metric, tag, stage and word rows) a transaction, by COPY on PostgreSQL and executemany on
SQLite, never all in memory at once; then
- registrations/s: `catalog.register` in-process, one transaction each (version, metrics, tags, history
  row and the ModelRegistered outbox row), one after another, into the seeded groups;
- p50/p99 of reads and searches through the HTTP API in-process (FastAPI over an ASGI transport, no
  socket), the JSON serialisation of the page included.
MLflow (`pip install -e '.[bench]'`) gets the same number of versions in its SQLite registry (bulk inserts
too), then the same work: create a version and set an alias, one after another; list a model's versions; a
tag search. Its client is used in-process, like ours.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from bench.common import console, percentile, table, verdict, write_json
from services.registrar.bootstrap import bootstrap
from services.registrar.catalog import Registration, approval_status, register
from services.registrar.models import (
    ModelGroup,
    ModelVersion,
    VersionMetric,
    VersionStage,
    VersionTag,
    VersionWord,
)
from services.registrar.search import words
from services.registrar.settings import RegistrarSettings
from shared.app import build_app
from shared.db import UnitOfWork, make_engine
from shared.events import utcnow
from shared.identity import Principal
from shared.migrations import prepare_database
from shared.runtime import Runtime

POSTGRES_ADMIN = os.environ.get("MODELGATE_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
TEAMS = [f"team-{i}" for i in range(10)]
ENVS = ["dev", "test", "prod"]
WORDS = ["weekly", "retrain", "holiday", "baseline", "calibrated", "ensemble", "pruned", "distilled"]
SEARCH_P99_GOAL_MS = 50.0
REGISTRATION_RATIO_GOAL = 10.0


@dataclass
class Result:
    name: str
    label: str  # a short column heading
    seed_seconds: float = 0.0
    registrations_per_second: float = 0.0
    latencies: dict[str, list[float]] = field(default_factory=dict)  # query -> seconds


# ---------------------------------------------------------------- the catalog's data


class BenchAuthenticator:
    """The catalog's benchmark measures search, not credentials (bench/auth.py measures those): every
    request is the admin's."""

    async def authenticate(self, credential: str, source: str | None = None) -> Principal:
        return Principal(name="bench", roles=("admin",))


def group_names(groups: int) -> list[str]:
    return [f"model-{g:04d}" for g in range(groups)]


def group_rows(versions: int, groups: int, rng: random.Random, start: datetime) -> list[dict[str, Any]]:
    rows = []
    for g, name in enumerate(group_names(groups)):
        count = versions // groups + (1 if g < versions % groups else 0)
        rows.append({
            "name": name, "description": f"{rng.choice(['fraud', 'churn', 'credit', 'pricing'])} model of {TEAMS[g % 10]}",
            "latest_version": count, "tags": {"team": TEAMS[g % 10]}, "owners": [f"owner{g % 7}@example.com"],
            "created_at": start, "updated_at": start,
        })
    return rows


def version_rows(first: int, last: int, groups: int, rng: random.Random, start: datetime) -> dict[str, list[Any]]:
    """Versions first..last-1, spread round-robin over the groups; 3 metrics, 2 tags, 1-3 stages, a
    description for 1 in 5."""
    names = group_names(groups)
    rows: dict[str, list[Any]] = {"versions": [], "metrics": [], "tags": [], "stages": [], "words": []}
    for i in range(first, last):
        group, number = names[i % groups], i // groups + 1
        vid, at = f"{group}/{number}", start + timedelta(seconds=i)
        stages = {"dev": rng.choices(["Deployed", "Rejected", "PendingApproval"], [75, 15, 10])[0]}
        if stages["dev"] == "Deployed" and rng.random() < 0.4:
            stages["test"] = rng.choices(["Deployed", "PendingApproval", "Rejected"], [50, 40, 10])[0]
            if stages["test"] == "Deployed" and rng.random() < 0.3:
                stages["prod"] = rng.choice(["Deployed", "PendingApproval"])
        metrics = {"auc": rng.uniform(0.5, 1.0), "precision": rng.uniform(0.3, 1.0), "recall": rng.uniform(0.3, 1.0)}
        tags = {"team": TEAMS[(i % groups) % 10], "env": rng.choice(ENVS)}
        description = " ".join(rng.sample(WORDS, 2)) if rng.random() < 0.2 else ""
        rows["versions"].append({
            "id": vid, "group_name": group, "version": number, "artifact_uri": f"s3://bench-artifacts/{vid}/model.bin",
            "registered_by": f"user{i % 50}@example.com", "source": "manual", "framework": "xgboost",
            "params": {"max_depth": rng.randint(3, 10)}, "model_card": {}, "lineage": {}, "created_at": at,
            "metrics": metrics, "tags": tags, "stages": {s: {"status": status, "at": at.isoformat()} for s, status in stages.items()},
            "approval_status": approval_status({s: {"status": status} for s, status in stages.items()}),
            "description": description, "metadata": {},
        })
        rows["metrics"] += [(vid, k, v) for k, v in metrics.items()]  # in the order of CHILD_COLUMNS
        rows["tags"] += [(vid, k, v) for k, v in tags.items()]
        rows["stages"] += [(vid, stage, status) for stage, status in stages.items()]
        rows["words"] += [(vid, w) for w in words(f"{group} {description}")]
    return rows


# The one-row-per-value tables' rows are plain tuples of these columns (no defaults, nothing to convert).
CHILD_COLUMNS = {"metrics": ("version_id", "name", "value"), "tags": ("version_id", "key", "value"),
                 "stages": ("version_id", "stage", "status"), "words": ("version_id", "word")}
SEED_TABLES = {"versions": ModelVersion.__table__, "metrics": VersionMetric.__table__, "tags": VersionTag.__table__,
               "stages": VersionStage.__table__, "words": VersionWord.__table__}


async def seed(engine: AsyncEngine, versions: int, groups: int, rng: random.Random, chunk: int = 20_000) -> None:
    """Bulk inserts straight into the registrar's tables, `chunk` versions (and their rows) a transaction: COPY
    on PostgreSQL, executemany of plain tuples on SQLite. Values go through the columns' own bind processing
    (JSON, UTC timestamps), so the rows are what the ORM would have written; defaults are filled in."""
    start = utcnow() - timedelta(seconds=versions)
    dialect = engine.sync_engine.dialect
    async with engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        write = _copy if dialect.name == "postgresql" else _executemany
        await write(raw, dialect, {"groups": ModelGroup.__table__}, {"groups": group_rows(versions, groups, rng, start)})
        for first in range(0, versions, chunk):
            await write(raw, dialect, SEED_TABLES, version_rows(first, min(versions, first + chunk), groups, rng, start))
    async with engine.connect() as conn:  # what autovacuum does to a table that grew, before measuring
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM ANALYZE" if dialect.name == "postgresql" else "ANALYZE"))


def _tuples(key: str, table_: Any, dialect: Any, items: list[Any]) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The table's columns and each row's values in their order, as the driver takes them."""
    if key in CHILD_COLUMNS:
        return list(CHILD_COLUMNS[key]), items
    columns = list(table_.columns)
    processors = [c.type.dialect_impl(dialect).bind_processor(dialect) for c in columns]
    defaults = [_default(c) for c in columns]
    empty: dict[str, Any] = {}
    out = []
    for item in items:
        row = []
        for column, process, default in zip(columns, processors, defaults, strict=True):
            value = item[column.name] if column.name in item else default()
            if process is None or value is None:
                row.append(value)
            else:  # most JSON values are empty: converted once
                row.append(empty.setdefault(column.name, process(value)) if value == {} else process(value))
        out.append(tuple(row))
    return [c.name for c in columns], out


def _default(column: Any) -> Callable[[], Any]:
    """A column's Python-side default as a function of nothing (SQLAlchemy's take the execution context)."""
    if column.default is None:
        return lambda: None
    if column.default.is_callable:
        return lambda: column.default.arg(None)
    return lambda: column.default.arg


async def _copy(connection: Any, dialect: Any, tables: dict[str, Any], rows: dict[str, list[dict[str, Any]]]) -> None:
    async with connection.transaction():
        for key, table_ in tables.items():
            columns, records = _tuples(key, table_, dialect, rows[key])
            await connection.copy_records_to_table(table_.name, records=records, columns=columns)


async def _executemany(connection: Any, dialect: Any, tables: dict[str, Any], rows: dict[str, list[dict[str, Any]]]) -> None:
    connection = connection._connection if hasattr(connection, "_connection") else connection  # the sqlite3 one
    cursor = connection.cursor()
    cursor.execute("BEGIN")
    for key, table_ in tables.items():
        columns, records = _tuples(key, table_, dialect, rows[key])
        quoted = ", ".join(f'"{c}"' for c in columns)
        cursor.executemany(f'INSERT INTO "{table_.name}" ({quoted}) VALUES ({", ".join("?" * len(columns))})', records)
    cursor.execute("COMMIT")
    cursor.close()


# ---------------------------------------------------------------- the backends


@dataclass
class Backend:
    """One registry under test: how to register a version, and its queries by kind."""

    result: Result
    register: Callable[[int], Awaitable[None]]
    queries: dict[str, Callable[[int], Awaitable[None]]]
    close: Callable[[], Awaitable[None]]


def http_queries(groups: int, per_group: int, rng: random.Random) -> dict[str, Callable[[int], tuple[str, dict[str, Any]]]]:
    """Each query kind, as (path, params) for the i-th call; values vary so that caches do not flatter."""
    names = group_names(groups)

    def group() -> str:
        return rng.choice(names)

    return {
        "get a version": lambda i: (f"/v1/groups/{group()}/versions/{rng.randint(1, per_group)}", {}),
        "list a group, page of 50": lambda i: (
            f"/v1/groups/{group()}/versions", {"limit": 50, "offset": rng.randrange(0, max(1, per_group - 50))}
        ),
        "group newest 50": lambda i: ("/v1/versions", {"group": group(), "sort": "version", "limit": 50}),
        "metric auc>=X, newest 50": lambda i: ("/v1/versions", {"metric": f"auc>={rng.uniform(0.6, 0.99):.3f}"}),
        "metric auc>=0.999 (rare)": lambda i: ("/v1/versions", {"metric": "auc>=0.999"}),
        "tag team=T": lambda i: ("/v1/versions", {"tag": f"team={rng.choice(TEAMS)}"}),
        "stage prod Deployed": lambda i: ("/v1/versions", {"stage": "prod", "stage_status": "Deployed"}),
        "status + metric": lambda i: ("/v1/versions", {"status": "Approved", "metric": f"recall>={rng.uniform(0.5, 0.95):.2f}"}),
        "group + tag + metric": lambda i: (
            "/v1/versions", {"group": group(), "tag": f"env={rng.choice(ENVS)}", "metric": "auc>=0.8"}
        ),
        "text: a word": lambda i: ("/v1/versions", {"q": rng.choice(WORDS)}),
        "text: two word beginnings": lambda i: ("/v1/versions", {"q": " ".join(w[:4] for w in rng.sample(WORDS, 2))}),
        "text: no match": lambda i: ("/v1/versions", {"q": f"zz{i}"}),
        "best 50 by auc": lambda i: ("/v1/versions", {"sort": "metrics.auc", "limit": 50}),
        "page 100 (offset 5000)": lambda i: ("/v1/versions", {"offset": 5000, "limit": 50}),
    }


async def catalog_backend(name: str, label: str, url: str, args: argparse.Namespace) -> Backend:
    result = Result(name, label)
    rng = random.Random(7)
    engine = make_engine(url)
    await prepare_database(engine, "registrar")
    started = time.perf_counter()
    await seed(engine, args.versions, args.groups, rng)
    result.seed_seconds = time.perf_counter() - started
    sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    names = group_names(args.groups)

    async def register_one(i: int) -> None:
        reg = Registration(
            artifact_uri=f"s3://bench-artifacts/new/{i}.bin", registered_by="bench@example.com",
            metrics={"auc": rng.uniform(0.5, 1), "precision": 0.8, "recall": 0.7},
            tags={"team": "team-1", "alias": "champion"},
        )
        async with UnitOfWork(sessionmaker) as uow:
            await register(uow, rng.choice(names), reg)
            await uow.commit()

    settings = RegistrarSettings(database_url=url, check_artifacts=False)
    runtime = Runtime(settings=settings, engine=engine, sessionmaker=sessionmaker, aws={}, publisher=None)  # type: ignore[arg-type]
    wiring = await bootstrap(runtime, authenticator=BenchAuthenticator())
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(runtime, wiring)), base_url="http://registrar",
                               headers={"Authorization": "Bearer bench"})

    def calling(make: Callable[[int], tuple[str, dict[str, Any]]]) -> Callable[[int], Awaitable[None]]:
        async def call(i: int) -> None:
            path, params = make(i)
            response = await client.get(path, params=params)
            assert response.status_code == 200, response.text

        return call

    async def close() -> None:
        await client.aclose()
        await engine.dispose()

    kinds = http_queries(args.groups, args.versions // args.groups, rng)
    return Backend(result, register_one, {kind: calling(make) for kind, make in kinds.items()}, close)


def mlflow_backend(path: Path, args: argparse.Namespace) -> Backend:
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise SystemExit("MLflow is not installed: .venv/bin/pip install -e '.[bench]' (or run with --no-mlflow)") from None
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    result = Result("MLflow (SQLite)", "MLflow")
    rng = random.Random(7)
    uri = f"sqlite:///{path}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    names = group_names(args.groups)
    started = time.perf_counter()
    for name in names:
        client.create_registered_model(name)
    now_ms = int(time.time() * 1000)
    versions, tags = [], []
    for i in range(args.versions):
        name, number = names[i % args.groups], i // args.groups + 1
        versions.append((name, number, now_ms, now_ms, "", "bench", "None", f"s3://bench-artifacts/{name}/{number}",
                         None, "READY", None, "", f"s3://bench-artifacts/{name}/{number}"))
        tags += [("team", TEAMS[(i % args.groups) % 10], name, number), ("env", rng.choice(ENVS), name, number)]
    with sqlite3.connect(path) as db:  # bulk, like our seed; through MLflow's API it would take an hour
        db.executemany(
            "INSERT INTO model_versions (name, version, creation_time, last_updated_time, description, user_id,"
            " current_stage, source, run_id, status, status_message, run_link, storage_location)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", versions,
        )
        db.executemany("INSERT INTO model_version_tags (key, value, name, version) VALUES (?, ?, ?, ?)", tags)
        db.execute("ANALYZE")
    result.seed_seconds = time.perf_counter() - started

    async def register_one(i: int) -> None:  # MLflow's client is synchronous: it runs on the loop, alone
        name = rng.choice(names)
        version = client.create_model_version(name, source=f"s3://bench-artifacts/new/{i}.bin", tags={"team": "team-1", "env": "dev"})
        client.set_registered_model_alias(name, "champion", version.version)

    async def group_newest(i: int) -> None:
        client.search_model_versions(f"name='{rng.choice(names)}'", max_results=50, order_by=["version_number DESC"])

    async def tag(i: int) -> None:
        client.search_model_versions(f"tags.team='{rng.choice(TEAMS)}'", max_results=50)

    async def close() -> None:
        pass

    return Backend(result, register_one, {"group newest 50": group_newest, "tag team=T": tag}, close)


# ---------------------------------------------------------------- measuring


async def measure(backends: list[Backend], args: argparse.Namespace) -> None:
    """Registrations in chunks and queries in rounds, taking turns between the backends, so that the load of
    the machine at any moment weighs on all of them alike."""
    chunk = 50
    for backend in backends:
        for i in range(20):  # warm-up
            await backend.register(-i)
    seconds: dict[str, list[float]] = {b.result.name: [] for b in backends}
    for start in range(0, args.registrations, chunk):
        for backend in backends:
            for i in range(start, min(start + chunk, args.registrations)):
                begun = time.perf_counter()
                await backend.register(i)
                seconds[backend.result.name].append(time.perf_counter() - begun)
    for backend in backends:
        backend.result.registrations_per_second = len(seconds[backend.result.name]) / sum(seconds[backend.result.name])
    for i in range(5 + args.queries):  # the first 5 rounds warm up
        for backend in backends:
            for kind, query in backend.queries.items():
                begun = time.perf_counter()
                await query(i)
                if i >= 5:
                    backend.result.latencies.setdefault(kind, []).append(time.perf_counter() - begun)


# ---------------------------------------------------------------- running


async def postgres_database() -> tuple[str, Callable[[], Awaitable[None]]]:
    import asyncpg

    name = f"mg_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(POSTGRES_ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()

    async def drop() -> None:
        admin = await asyncpg.connect(POSTGRES_ADMIN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()

    host = POSTGRES_ADMIN.split("://", 1)[1].rsplit("/", 1)[0]
    return f"postgresql+asyncpg://{host}/{name}", drop


async def run(args: argparse.Namespace) -> list[Result]:
    backends: list[Backend] = []
    cleanups: list[Callable[[], Awaitable[None]]] = []
    with tempfile.TemporaryDirectory(prefix="modelgate-bench-registrar-") as scratch:
        try:
            if "sqlite" in args.databases:
                console.print(f"[dim]• SQLite: seeding {args.versions:,} versions…[/]")
                backends.append(await catalog_backend("modelgate (SQLite)", "SQLite", f"sqlite+aiosqlite:///{scratch}/registrar.db", args))
            if "postgres" in args.databases:
                console.print(f"[dim]• PostgreSQL: seeding {args.versions:,} versions…[/]")
                url, drop = await postgres_database()
                cleanups.append(drop)
                backends.append(await catalog_backend("modelgate (PostgreSQL)", "Postgres", url, args))
            if args.mlflow:
                console.print(f"[dim]• MLflow: seeding {args.versions:,} versions…[/]")
                backends.append(mlflow_backend(Path(scratch) / "mlflow.db", args))
            console.print(f"[dim]• measuring, load average {os.getloadavg()[0]:.1f}…[/]")
            await measure(backends, args)
        finally:
            for backend in backends:
                await backend.close()
            for cleanup in cleanups:
                await cleanup()
    return [b.result for b in backends]


def report(results: list[Result], args: argparse.Namespace) -> dict[str, Any]:
    kinds = list(dict.fromkeys(q for r in results for q in r.latencies))
    columns = ["query (ms)"] + [f"{r.label} {p}" for r in results for p in ("p50", "p99")]
    rows = []
    for kind in kinds:
        cells: list[object] = [kind]
        for r in results:
            ms = [s * 1000 for s in r.latencies.get(kind, [])]
            cells += [percentile(ms, 50), percentile(ms, 99)] if ms else ["–", "–"]
        rows.append(cells)
    rows.append(["registrations/s"] + [c for r in results for c in (r.registrations_per_second, "")])
    rows.append(["seed (s)"] + [c for r in results for c in (r.seed_seconds, "")])
    title = (f"registrar catalog: {args.versions:,} versions in {args.groups} groups; {args.registrations} registrations, "
             f"{args.queries} calls per query; {', '.join(f'{r.label} = {r.name}' for r in results)}")
    console.print(table(title, columns, rows))
    if args.markdown:
        print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
        for row in rows:
            print("| " + " | ".join(f"{c:.1f}" if isinstance(c, float) else str(c) for c in row) + " |")

    summary: dict[str, Any] = {"versions": args.versions, "results": {}}
    mlflow = next((r for r in results if r.name.startswith("MLflow")), None)
    for r in results:
        worst = max(percentile([s * 1000 for s in v], 99) for k, v in r.latencies.items() if k != "get a version")
        summary["results"][r.name] = {"registrations_per_second": r.registrations_per_second, "worst_search_p99_ms": worst,
                                      "seed_seconds": r.seed_seconds,
                                      "p99_ms": {k: percentile([s * 1000 for s in v], 99) for k, v in r.latencies.items()}}
        if r is mlflow:
            continue
        console.print(f"{r.name}: worst search p99 {worst:.1f} ms (goal ≤ {SEARCH_P99_GOAL_MS:.0f}) {verdict(worst <= SEARCH_P99_GOAL_MS)}")
        if mlflow:
            ratio = r.registrations_per_second / mlflow.registrations_per_second
            summary["results"][r.name]["registration_ratio_vs_mlflow"] = ratio
            console.print(f"{r.name}: registrations {ratio:.1f}× MLflow's (goal ≥ {REGISTRATION_RATIO_GOAL:.0f}×) "
                          f"{verdict(ratio >= REGISTRATION_RATIO_GOAL)}")
            for kind in mlflow.latencies:
                ours, theirs = (percentile([s * 1000 for s in x.latencies[kind]], 99) for x in (r, mlflow))
                console.print(f"{r.name}: '{kind}' p99 {ours:.1f} ms, MLflow's {theirs:.1f} ms ({theirs / ours:.1f}×)")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.registrar", description=__doc__.split("\n\n")[0])
    parser.add_argument("--versions", type=int, default=100_000, help="versions in the catalog (default 100000)")
    parser.add_argument("--groups", type=int, default=0, help="model groups (default: one per 1000 versions)")
    parser.add_argument("--registrations", type=int, default=1000, help="timed registrations (default 1000)")
    parser.add_argument("--queries", type=int, default=200, help="timed calls per query (default 200)")
    parser.add_argument("--databases", default="sqlite,postgres", help="sqlite, postgres or both (default)")
    parser.add_argument("--no-mlflow", dest="mlflow", action="store_false", help="skip MLflow")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    args = parser.parse_args()
    args.groups = args.groups or max(1, args.versions // 1000)
    args.databases = {d.strip() for d in args.databases.split(",")}
    console.print(f"[bold]{' '.join(['python -m bench.registrar', *sys.argv[1:]])}[/]")
    console.print(f"[dim]{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start[/]")
    results = asyncio.run(run(args))
    console.print(f"[dim]load average {os.getloadavg()[0]:.1f} at the end[/]")
    write_json(args.json, report(results, args))


if __name__ == "__main__":
    main()
