"""The approver's own parts, built once by bootstrap.py and reached by routes through ApproverDep."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import HTTPException

from services.approver.approvals import Urls
from services.approver.links import LinkSigner
from services.approver.policy import Policy
from services.approver.settings import ApproverSettings
from shared.runtime import Runtime


@dataclass
class Approver:
    runtime: Runtime[ApproverSettings]
    policy: Policy
    urls: Urls
    signer: LinkSigner | None = None  # the decision-link key, from Secrets Manager at start
    pepper: bytes = b""  # the key of token digests, from Secrets Manager at start

    @property
    def settings(self) -> ApproverSettings:
        return self.runtime.settings

    def links(self) -> LinkSigner:
        if self.signer is None:
            raise HTTPException(503, "decision links are not available: the approver has no link key yet")
        return self.signer
