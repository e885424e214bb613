"""What the registrar's routes share: the service's own object (`RegistrarDep`), the group-name path
parameter, and the route class that turns invalid requests into one readable 422 sentence per problem."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Path, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from services.registrar.artifacts import ArtifactPolicy, check_location, check_policy
from services.registrar.catalog import GROUP_NAME, GROUP_NAME_RULE
from services.registrar.comet_writeback import CometWriteback
from services.registrar.pinning import pin_artifact
from services.registrar.settings import RegistrarSettings
from shared.http import context_of
from shared.pins import Pin
from shared.runtime import Runtime


@dataclass
class Registrar:
    """The registrar's own parts, built once by bootstrap(): its runtime, the Comet write-back and the event
    that wakes its worker."""

    runtime: Runtime[RegistrarSettings]
    comet: CometWriteback
    writeback_wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def settings(self) -> RegistrarSettings:
        return self.runtime.settings

    async def check_artifact(self, uri: str) -> Pin | None:
        """422 unless the artifact is where the policy allows (always) and exists (when checks are on), then
        pins it (digest and VersionId); None when not checked."""
        check_policy(uri, ArtifactPolicy(tuple(self.settings.artifact_buckets), self.settings.allow_local_artifacts))
        if not self.settings.check_artifacts:
            return None
        check_location(uri)
        return await pin_artifact(self.runtime.aws["s3"], uri)


RegistrarDep = Annotated[Registrar, Depends(context_of)]
GroupName = Annotated[str, Path(pattern=GROUP_NAME, description="Letters, digits, '.', '_' and '-'.", examples=["fraud-detector"])]


class ReadableErrors(APIRoute):
    """422 with `detail` one readable sentence per problem (`metrics.auc: ...`) and the raw `errors`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                return invalid_request(exc)

        return route


def invalid_request(exc: RequestValidationError) -> JSONResponse:
    problems = []
    for error in exc.errors():
        where, *path = error["loc"]
        field = ".".join(str(p) for p in path) if where == "body" else f"{where} {'.'.join(str(p) for p in path)}"
        message = GROUP_NAME_RULE if error.get("ctx", {}).get("pattern") == GROUP_NAME else error["msg"]
        problems.append(f"{field or 'body'}: {message}")
    return JSONResponse({"detail": "; ".join(problems), "errors": jsonable_encoder(exc.errors())}, status_code=422)
