"""`modelgate demo`: the fraud-detection story, end to end on LocalStack, printed as it happens.

Synthetic card transactions (0.17% fraud) -> raw and preprocessed dataset versions in S3 -> two XGBoost runs
logged to Comet offline -> the better one registered from its archive by ana (a registrant of team fraud)
-> approved for dev by policy -> deployed to dev on the local inference target -> the held-out test set
scored through the endpoint -> approved for test by lee (ml-leads) -> approved for prod by kim and raj
(model-risk; neither is the registrant) -> the notifications of each stage. The demo's principals are made
with the admin token `make up` leaves in var/<namespace>-admin.token (no fixed token). The ML parts are in
modelgate/fraud/.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import skops.io
from rich.console import Console
from rich.table import Table

from modelgate import stack as stack_mod
from modelgate.fraud import data, score, tracking, train
from modelgate.stack import Stack
from shared.infra import boto_client
from shared.lineage import DatasetVersion
from shared.topology import bucket_name, parameter_name

console = Console()

GROUP = "fraud-detector"
REGISTRANT = "ana"
TEAM = "fraud"
#: The demo's people: who registers, who approves test (ml-leads), who approves prod (two of model-risk).
PEOPLE = {
    REGISTRANT: {"roles": ["registrant"], "teams": [TEAM]},
    "lee": {"roles": ["viewer"], "groups": ["ml-leads"]},
    "kim": {"roles": ["viewer"], "groups": ["model-risk"]},
    "raj": {"roles": ["viewer"], "groups": ["model-risk"]},
}
PROMOTIONS = (("test", ("lee",)), ("prod", ("kim", "raj")))
DATASET = "creditcard-transactions"


class DemoFailed(RuntimeError):
    """The story could not go on; the message says where it stopped."""


@dataclass
class DemoResult:
    """What the story showed; true when it completed."""

    completed: bool = False
    model_version_id: str | None = None
    endpoint_url: str | None = None
    runs: dict[str, dict[str, float]] = field(default_factory=dict)  # run -> validation metrics
    test_metrics: dict[str, float] = field(default_factory=dict)  # scored through the endpoint
    pending_approval_id: str | None = None  # the test approval dev's deployment asked for
    stages: dict[str, str] = field(default_factory=dict)  # stage -> its status at the end
    approvals: dict[str, list[str]] = field(default_factory=dict)  # stage -> who approved it
    notifications: list[dict[str, Any]] = field(default_factory=list)  # what the notifier sent, in order
    seconds: float = 0.0

    def __bool__(self) -> bool:
        return self.completed


def run_demo(stack: Stack, keep_running: bool = False, timeout: float = 120.0, group: str = GROUP) -> DemoResult:
    """Tells the story on `stack`, starting it first (and stopping it after) unless it is already up.

    `group` is the model group; the Parameter Store pointers are per group, so stories told at the same time
    against one LocalStack need different groups."""
    started = time.monotonic()
    result = DemoResult()
    run_dir = stack.run_dir / "demo" / datetime.now().strftime("%Y%m%d-%H%M%S")
    already_up = all(stack_mod.running_pid(stack, s) for s in stack.ports)
    try:
        if not already_up:
            _configure(stack, run_dir)
            with step("starting LocalStack and the four services"):
                stack_mod.up(stack, progress=lambda m: console.print(f"  [dim]•[/] {m}"))
        _Story(stack, group, run_dir, result, timeout).tell()
        result.completed = True
    except DemoFailed as exc:
        console.print(f"[red]✗ {exc}[/]")
    except httpx.HTTPError as exc:
        console.print(f"[red]✗ a service did not answer as expected ({exc!r}); see {stack.run_dir / 'log'}[/]")
    finally:
        if not already_up and not keep_running:
            with step("stopping everything the demo started"):
                stack_mod.down(stack, progress=lambda m: console.print(f"  [dim]•[/] {m}"))
        result.seconds = time.monotonic() - started
        outcome = "[green]the story completed[/]" if result.completed else "[red]the story did not complete[/]"
        console.print(f"\n{outcome}; total {result.seconds:.1f}s")
    return result


def _configure(stack: Stack, run_dir: Path) -> None:
    """The demo's system: dev deploys to the local inference target, and fresh databases (a system the demo
    starts holds only its own story, and its approver writes a new admin token). Settings given are kept."""
    env = {
        "MODELGATE_TARGETS": json.dumps({"dev": "local"}),
        "MODELGATE_LOCAL_RUN_DIR": str(run_dir / "inference"),
        "MODELGATE_POLL_WAIT_SECONDS": "2",
    }
    stack.extra_env = {**env, **stack.extra_env}
    if not stack.database_urls:
        run_dir.mkdir(parents=True, exist_ok=True)
        stack.database_urls = {s: f"sqlite+aiosqlite:///{run_dir}/{s}.db" for s in stack.ports}


@contextmanager
def step(title: str) -> Iterator[None]:
    """Shows a spinner while the step runs, then the step with its time."""
    started = time.monotonic()
    with console.status(f"{title} ..."):
        yield
    console.print(f"[green]✓[/] {title} [dim]({time.monotonic() - started:.1f}s)[/]")


class _Story:
    def __init__(
        self,
        stack: Stack,
        group: str,
        run_dir: Path,
        result: DemoResult,
        timeout: float,
    ):
        self.stack = stack
        self.group = group
        self.run_dir = run_dir
        self.result = result
        self.timeout = timeout
        self.tokens: dict[str, str] = {}  # person -> their token, made by the admin at the start
        self.bucket = bucket_name(stack.namespace)
        self.s3 = boto_client("s3", stack.endpoint)
        self.http = httpx.Client(timeout=30)

    def tell(self) -> None:
        with self.http:
            self.people()
            datasets, prepared = self.datasets()
            runs, archives = self.experiments(prepared, datasets)
            chosen = train.best(runs)
            self.compare(runs, chosen)
            version = self.register(archives[chosen.name], chosen)
            self.journey(version)
            self.parameter_store()
            endpoint = self.endpoint(version)
            self.evaluate(endpoint, prepared, chosen)
            for stage, approvers in PROMOTIONS:
                self.promote(version, stage, approvers)
            self.notifications(version)

    # ------------------------------------------------------------ people

    def as_(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def people(self) -> None:
        """The story's principals, made (or given a new token) with the admin token the approver wrote."""
        self.tokens["admin"] = self.stack.admin_token()
        with step(f"adding the people, as admin: {', '.join(PEOPLE)}"):
            for name, fields in PEOPLE.items():
                url = f"{self.stack.url('approver')}/v1/principals"
                made = self.http.post(url, json={"name": name, **fields}, headers=self.as_("admin"))
                if made.status_code == 409:  # a system already up knows them: a new token of theirs
                    made = self.http.post(f"{url}/{name}/tokens", headers=self.as_("admin"))
                if made.status_code != 201:
                    raise DemoFailed(f"the approver refused to add {name} ({made.status_code}): {made.text}")
                self.tokens[name] = made.json()["token"]
        for name, fields in PEOPLE.items():
            what = ", ".join(f"{k} {'/'.join(v)}" for k, v in fields.items())
            console.print(f"  [bold]{name}[/]: {what}")

    # ------------------------------------------------------------ data

    def upload(self, key: str, content: bytes) -> str:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=content, ChecksumAlgorithm="SHA256")  # pinned cheaply
        return f"s3://{self.bucket}/{key}"

    def datasets(self) -> tuple[list[DatasetVersion], data.Prepared]:
        with step("generating card transactions (synthetic, 0.17% fraud)"):
            raw = data.generate()
            csv = raw.to_csv()
            raw_version = DatasetVersion(
                name=DATASET,
                version="1.0.0",
                aliases=["raw"],
                uri=self.upload(f"datasets/{DATASET}/1.0.0/transactions.csv", csv),
                metadata={
                    "rows": raw.rows,
                    "frauds": raw.frauds,
                    "fraud_rate": round(raw.frauds / raw.rows, 5),
                    "columns": raw.columns,
                    "sha256": data.sha256(csv),
                    "generator": "modelgate.fraud.data.generate(seed=7)",
                },
            )
        console.print(
            f"  {raw.rows:,} transactions, {raw.frauds} frauds ({raw.frauds / raw.rows:.2%}) "
            f"-> [bold]{DATASET}:1.0.0[/] (raw) {raw_version.uri}"
        )
        with step("preprocessing: duplicates, unneeded columns, split, StandardScaler"):
            prepared = data.preprocess(raw)
            npz = prepared.to_npz()
            scaler_buffer = skops.io.dumps(prepared.scaler)  # skops, not a pickle: loading it runs no code
            prefix = f"datasets/{DATASET}/2.0.0"
            preprocessed_version = DatasetVersion(
                name=DATASET,
                version="2.0.0",
                aliases=["preprocessed"],
                uri=self.upload(f"{prefix}/splits.npz", npz),
                metadata={
                    "derived_from": f"{DATASET}:1.0.0",
                    "duplicates_removed": prepared.duplicates_removed,
                    "dropped_columns": prepared.dropped_columns,
                    "features": len(prepared.features),
                    "split": prepared.sizes(),
                    "frauds": prepared.frauds(),
                    "scaler": "StandardScaler (fitted on train)",
                    "scaler_uri": self.upload(f"{prefix}/scaler.skops", scaler_buffer),
                    "scaler_format": "skops (load with skops.io.load)",
                    "sha256": data.sha256(npz),
                },
            )
        sizes = ", ".join(f"{name} {n:,}" for name, n in prepared.sizes().items())
        console.print(
            f"  {prepared.duplicates_removed} duplicates removed, {', '.join(prepared.dropped_columns)} dropped, "
            f"{sizes} -> [bold]{DATASET}:2.0.0[/] (preprocessed) {preprocessed_version.uri}"
        )
        return [raw_version, preprocessed_version], prepared

    # ------------------------------------------------------------ experiments

    def experiments(
        self, prepared: data.Prepared, datasets: list[DatasetVersion]
    ) -> tuple[list[train.Run], dict[str, Path]]:
        runs: list[train.Run] = []
        archives: dict[str, Path] = {}
        for name, params in train.RUNS.items():
            with step(f"training {name} (booster {params['booster']}) and logging it to Comet offline"):
                run = train.train(name, params, prepared)
                model = run.to_ubj()
                key, archive = tracking.log_offline(
                    run,
                    datasets,
                    lambda key, model=model: self.upload(f"models/{self.group}/{key}/model.ubj", model),
                    self.run_dir / "comet",
                )
            runs.append(run)
            archives[name] = archive
            self.result.runs[name] = run.validation.metrics()
            console.print(f"  validation auc {run.validation.auc:.4f}; Comet experiment {key} -> {archive}")
        return runs, archives

    def compare(self, runs: list[train.Run], chosen: train.Run) -> None:
        table = Table(title="the two runs, on the validation split", caption=f"both: {_pairs(train.BASE)}")
        for column in ("run", "booster", "max_depth", "AUC", "precision", "recall", "F1", "train"):
            table.add_column(column)
        for run in runs:
            v = run.validation
            table.add_row(
                f"[bold]{run.name}[/] ✓" if run is chosen else run.name,
                run.params["booster"],
                str(run.params.get("max_depth", "-")),
                f"{v.auc:.4f}",
                f"{v.precision:.3f}",
                f"{v.recall:.3f}",
                f"{v.f1:.3f}",
                f"{run.seconds:.1f}s",
            )
        console.print(table)
        console.print(f"  registering the better run: [bold]{chosen.name}[/] (higher validation AUC)")

    # ------------------------------------------------------------ the journey

    def register(self, archive: Path, run: train.Run) -> dict[str, Any]:
        card = {
            "summary": "Scores card transactions for fraud (XGBoost)",
            "intended_use": "Flag transactions for a fraud analyst's review; not for blocking cards automatically",
            "limitations": "Trained on synthetic transactions; the threshold 0.5 favours precision over recall",
            "training_data": f"{DATASET}:2.0.0 (preprocessed from {DATASET}:1.0.0), train split",
            "evaluation": f"validation split: AUC {run.validation.auc:.4f}, precision {run.validation.precision:.3f}, "
            f"recall {run.validation.recall:.3f}",
            "risk_rating": "Medium",
        }
        with step(f"registering {run.name} from its Comet archive"):
            response = self.http.post(
                f"{self.stack.url('registrar')}/v1/groups/{self.group}/versions/comet-archive",
                files={"archive": (archive.name, archive.read_bytes(), "application/zip")},
                data={"model_card": json.dumps(card)}, headers=self.as_(REGISTRANT),
            )
            if response.status_code != 201:
                raise DemoFailed(f"the registrar refused the archive ({response.status_code}): {response.text}")
            version = response.json()
        self.result.model_version_id = version["model_version_id"]
        datasets = ", ".join(f"{d['name']}:{d['version']} ({', '.join(d['aliases'])})" for d in version["lineage"]["datasets"])
        console.print(
            f"  [bold]{version['model_version_id']}[/] by {version['registered_by']}, source {version['source']}, "
            f"experiment {version['lineage']['experiment_key']}\n  artifact {version['artifact_uri']}\n"
            f"  datasets {datasets}"
        )
        return version

    def journey(self, version: dict[str, Any]) -> None:
        url = f"{self.stack.url('registrar')}/v1/groups/{self.group}/versions/{version['version']}/history"
        with step("waiting for approval (dev policy: auc >= 0.8) and deployment to dev"):
            deadline = time.monotonic() + self.timeout
            history: list[dict[str, Any]] = []
            while time.monotonic() < deadline:
                history = self.http.get(url, headers=self.as_(REGISTRANT)).json()
                seen = {(e["event_type"], e["payload"].get("stage"), e["payload"].get("decision")) for e in history}
                if {("Deployed", "dev", None), ("ApprovalRequested", "test", None)} <= seen:
                    break
                if seen & {("DeploymentFailed", "dev", None), ("ApprovalDecided", "dev", "Rejected")}:
                    break
                time.sleep(0.2)
        _print_journey(history)
        dev = [e for e in history if e["payload"].get("stage") == "dev"]
        if not any(e["event_type"] == "Deployed" for e in dev):
            last = dev[-1]["payload"] if dev else {}
            why = last.get("reason") or last.get("comment") or f"no Deployed(dev) within {self.timeout:.0f}s"
            raise DemoFailed(f"the version did not reach dev: {why} (logs in {self.stack.run_dir / 'log'})")

    def parameter_store(self) -> None:
        name = parameter_name(self.group, "dev")
        pointer = boto_client("ssm", self.stack.endpoint).get_parameter(Name=name)["Parameter"]
        console.print(f"Parameter Store [bold]{name}[/] = {json.dumps(json.loads(pointer['Value']), indent=2)}")

    def endpoint(self, version: dict[str, Any]) -> str:
        deployments = self.http.get(f"{self.stack.url('deployer')}/v1/deployments", params={"group": self.group},
                                    headers=self.as_(REGISTRANT)).json()
        live = [
            d for d in deployments
            if d["stage"] == "dev" and d["model_version_id"] == version["model_version_id"] and d["status"] == "Deployed"
        ]
        if not live or not live[-1].get("endpoint_url"):
            target = live[-1]["target"] if live else "unknown"
            raise DemoFailed(
                f"dev has no inference endpoint (its target is {target}); the demo needs the deployer's dev stage on "
                "the local target: stop the running system (modelgate down) and run the demo again, or start it with "
                """MODELGATE_TARGETS='{"dev": "local"}'"""
            )
        self.result.endpoint_url = live[-1]["endpoint_url"]
        return self.result.endpoint_url

    def evaluate(self, endpoint: str, prepared: data.Prepared, run: train.Run) -> None:
        X_test, y_test = prepared.splits["test"]
        with step(f"scoring the held-out test set ({len(y_test):,} transactions) through {endpoint}/invocations"):
            try:
                scored = train.evaluate(y_test, score.fraud_probabilities(endpoint, X_test))
            except httpx.HTTPError as exc:
                raise DemoFailed(f"the deployed endpoint did not answer: {exc}") from None
        self.result.test_metrics = scored.metrics()
        table = Table(title=f"{self.result.model_version_id} in dev: test set through the endpoint")
        for column in ("set", "AUC", "precision", "recall", "F1", "confusion [[TN FP] [FN TP]]"):
            table.add_column(column)
        for label, e in (("validation (at training)", run.validation), ("test (deployed endpoint)", scored)):
            table.add_row(label, f"{e.auc:.4f}", f"{e.precision:.3f}", f"{e.recall:.3f}", f"{e.f1:.3f}", str(e.confusion))
        console.print(table)

    def pending_approval(self, version: dict[str, Any], stage: str = "test") -> dict[str, Any]:
        """The version's pending request for `stage` (waited for), shown with what it needs."""
        deadline = time.monotonic() + self.timeout
        while True:
            pending = self.http.get(f"{self.stack.url('approver')}/v1/approvals", headers=self.as_(REGISTRANT),
                                    params={"status": "pending", "model_version_id": version["model_version_id"]}).json()
            ours = [a for a in pending if a["stage"] == stage]
            if ours or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if not ours:
            raise DemoFailed(f"no pending {stage} approval for {version['model_version_id']}")
        request = ours[0]
        if stage == "test":
            self.result.pending_approval_id = request["approval_id"]
        checks = ", ".join(f"{c['metric']} {c['value']:.4f} {c['op']} {c['threshold']} {'✓' if c['passed'] else '✗'}"
                           for c in request["checks"])
        console.print(
            f"\n[yellow]pending[/]: {stage} approval [bold]{request['approval_id']}[/] for {request['model_version_id']}: "
            f"{request['required_approvals']} approver(s) from '{request['approver_group']}', not "
            f"{request['registered_by']}" + (f"; checks: {checks}" if checks else "")
        )
        return request

    def promote(self, version: dict[str, Any], stage: str, approvers: tuple[str, ...]) -> None:
        """Each approver decides over the API with their own token; then the stage is deployed."""
        request = self.pending_approval(version, stage)
        refused = self.decide(request, REGISTRANT)
        console.print(f"  {REGISTRANT} tries to approve her own version: [red]{refused.status_code}[/] "
                      f"{refused.json()['detail']}")
        for who in approvers:
            decided = self.decide(request, who)
            if decided.status_code != 200:
                raise DemoFailed(f"{who}'s approval was refused ({decided.status_code}): {decided.text}")
            body = decided.json()
            console.print(f"  {who} approves: {len(body['approved_by'])} of {body['required_approvals']} -> {body['status']}")
        self.result.approvals[stage] = list(approvers)
        with step(f"waiting for the deployment to {stage}"):
            status = self.stage_status(version, stage)
        self.result.stages[stage] = status
        if status != "Deployed":
            raise DemoFailed(f"{version['model_version_id']} did not reach {stage}: {status}")
        console.print(f"  {stage} serves [green]{version['model_version_id']}[/]")

    def decide(self, request: dict[str, Any], who: str) -> httpx.Response:
        return self.http.post(f"{self.stack.url('approver')}/v1/approvals/{request['approval_id']}/decision",
                              json={"decision": "approve", "comment": "AUC and recall hold on the test set"},
                              headers=self.as_(who))

    def stage_status(self, version: dict[str, Any], stage: str) -> str:
        url = f"{self.stack.url('registrar')}/v1/groups/{self.group}/versions/{version['version']}"
        deadline = time.monotonic() + self.timeout
        status = ""
        while time.monotonic() < deadline:
            status = self.http.get(url, headers=self.as_(REGISTRANT)).json()["stages"].get(stage, "")
            if status in ("Deployed", "DeploymentFailed"):
                break
            time.sleep(0.2)
        return status

    def notifications(self, version: dict[str, Any]) -> None:
        """What the notifier told people at each step (read as admin: the delivery log names recipients)."""
        with step("reading the notifications of each stage"):
            deadline = time.monotonic() + 30
            while True:
                rows = self.http.get(f"{self.stack.url('notifier')}/v1/deliveries", headers=self.as_("admin"),
                                     params={"correlation_id": version["model_version_id"]}).json()
                if any(r["event_type"] == "Deployed" and "prod" in r["subject"] for r in rows) or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
        self.result.notifications = rows
        table = Table(title=f"notifications of {version['model_version_id']}")
        for column in ("event", "channel", "to", "status", "subject"):
            table.add_column(column)
        for row in rows:
            table.add_row(row["event_type"], row["channel"], row["recipient"], row["status"], row["subject"])
        console.print(table)


def _pairs(values: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in values.items())


def _print_journey(history: list[dict]) -> None:
    table = Table(title="journey")
    for column in ("+ms", "event", "by", "stage", "detail"):
        table.add_column(column)
    if history:
        start = datetime.fromisoformat(history[0]["occurred_at"])
        for event in history:
            p = event["payload"]
            at = (datetime.fromisoformat(event["occurred_at"]) - start).total_seconds() * 1000
            detail = (
                p.get("decision") or p.get("endpoint_url") or p.get("policy_rule") or p.get("parameter_name")
                or p.get("reason") or p.get("artifact_uri", "")
            )
            table.add_row(f"{at:.0f}", event["event_type"], event["producer"], p.get("stage", ""), str(detail))
    console.print(table)
