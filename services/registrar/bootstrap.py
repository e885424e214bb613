"""The registrar's composition root: its handlers, routes and parts, built once from the runtime.

`serve` (shared.service) runs what this returns; tests call the same `bootstrap` with a Runtime of their own.
"""

from __future__ import annotations

from services.registrar import handlers
from services.registrar.comet_writeback import CometWriteback
from services.registrar.deps import Registrar
from services.registrar.routes import comet as comet_routes
from services.registrar.routes import groups, history, versions
from services.registrar.sagemaker_bridge import SageMakerBridge
from services.registrar.sagemaker_writeback import SageMakerWriteback
from services.registrar.settings import RegistrarSettings
from services.registrar.writebacks import CometWritebackWorker
from shared.identity import Authenticator, closer, introspecting
from shared.runtime import Runtime, Wiring, Worker, stop_all
from shared.secrets import service_key
from shared.wiring import inject

HANDLERS = {
    "ApprovalRequested": handlers.on_approval_requested,
    "ApprovalDecided": handlers.on_approval_decided,
    "Deployed": handlers.on_deployed,
    "DeploymentFailed": handlers.on_deployment_failed,
    "DeploymentStarted": handlers.on_deployment_started,
    "DeploymentSuperseded": handlers.on_deployment_superseded,
    "RolloutStepped": handlers.on_rollout_stepped,
    "RolloutPromoted": handlers.on_rollout_promoted,
    "RolloutRolledBack": handlers.on_rollout_rolled_back,
}


async def bootstrap(
    runtime: Runtime[RegistrarSettings], comet: CometWriteback | None = None, authenticator: Authenticator | None = None
) -> Wiring:
    """The registrar's wiring; `comet` defaults to CometWriteback.from_env() (does nothing unless
    COMET_API_KEY and COMET_WORKSPACE are set), `authenticator` to asking the approver (shared.identity)."""
    registrar = Registrar(runtime=runtime, comet=CometWriteback.from_env() if comet is None else comet)
    authenticator = authenticator or introspecting(runtime.settings, await service_key(runtime))
    sagemaker = sagemaker_writeback(runtime)
    workers: list[Worker] = [writeback_worker(registrar, sagemaker)] if registrar.comet.enabled or sagemaker else []
    if runtime.settings.sagemaker_bridge:
        bridge = SageMakerBridge(registrar)
        workers.append(bridge)
        runtime.healthy["sagemaker_queue"] = lambda: bridge.last_poll_ok
    return Wiring(
        handlers=inject(HANDLERS, comet=registrar.comet, wake=registrar.writeback_wake,
                        sagemaker_writeback=sagemaker is not None),
        routers=[groups.router, versions.router, history.router, comet_routes.router],
        workers=workers,
        context=registrar,
        authenticator=authenticator,
        on_stop=stop_all(closer(authenticator)),
        title="modelgate registrar",
        description="The catalog of model groups and versions: metrics, model cards, lineage, per-stage status.",
    )


def sagemaker_writeback(runtime: Runtime[RegistrarSettings]) -> SageMakerWriteback | None:
    """The SageMaker write-back, when the bridge and its write-back are on (docs/sagemaker.md)."""
    settings = runtime.settings
    if not (settings.sagemaker_bridge and settings.sagemaker_writeback):
        return None
    if "sagemaker" not in runtime.aws:
        raise RuntimeError("MODELGATE_SAGEMAKER_BRIDGE is on but the registrar has no SageMaker client")
    return SageMakerWriteback(runtime.aws["sagemaker"])


def writeback_worker(registrar: Registrar, sagemaker: SageMakerWriteback | None = None) -> CometWritebackWorker:
    """The worker that carries out the Comet (and SageMaker) write-backs the handlers record."""
    return CometWritebackWorker(registrar.runtime.uow, registrar.comet, registrar.writeback_wake, sagemaker=sagemaker)
