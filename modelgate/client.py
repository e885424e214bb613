"""The CLI's way to the services: the HTTP clients of their APIs (shared.client, which the console uses too)."""

from shared.client import (
    ApiError,
    Approver,
    Clients,
    Deployer,
    Registrar,
    ServiceError,
    Unreachable,
    find_token,
    live_by_stage,
    token_file,
)

__all__ = ["ApiError", "Approver", "Clients", "Deployer", "Registrar", "ServiceError", "Unreachable", "find_token", "live_by_stage",
           "token_file"]
