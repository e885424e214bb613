"""Names, roles and throttling as a user meets them: look-alikes are one person or refused, each role does
what docs/identity.md says, and guessing is held back."""

from __future__ import annotations

import pytest

from shared.errors import Refused
from shared.identity import Principal, Role, new_token, normalise_name, token_digest
from shared.throttle import FailureThrottle, Throttled


@pytest.mark.parametrize("raw, name", [("Lee", "lee"), ("ＬＥＥ", "lee"), (" ana@example.com ", "ana@example.com"),
                                       ("ci-fraud.main", "ci-fraud.main")])
def test_spellings_of_one_name_are_one_principal(raw: str, name: str) -> None:
    assert normalise_name(raw) == name


@pytest.mark.parametrize("raw", ["lee\u200b", "lее", "", "-lee", "lee smith", "a" * 101, "lee;drop"])  # zero-width, Cyrillic е
def test_look_alikes_and_unsafe_names_are_refused_with_what_is_allowed(raw: str) -> None:
    with pytest.raises(ValueError, match="use 1-100 of a-z 0-9"):
        normalise_name(raw)


def test_each_role_does_what_the_table_says() -> None:
    viewer = Principal(name="v", roles=("viewer",))
    approver = Principal(name="a", groups=("ml-leads",))
    prod_operator = Principal(name="o", roles=("operator:prod",))
    admin = Principal(name="root", roles=("admin",))
    nobody = Principal(name="n")
    assert viewer.may(Role.VIEWER) and not viewer.may(Role.REGISTRANT) and not viewer.may(Role.AUDITOR)
    assert approver.may(Role.APPROVER) and not approver.may(Role.OPERATOR, "prod")
    assert prod_operator.may(Role.OPERATOR, "prod") and not prod_operator.may(Role.OPERATOR, "dev")
    assert prod_operator.may(Role.VIEWER)
    assert all(admin.may(role, "prod") for role in Role)
    assert not nobody.may(Role.VIEWER)
    with pytest.raises(Refused, match="o may not roll back fraud in dev: that needs the operator:dev role") as refused:
        prod_operator.require(Role.OPERATOR, "dev", to="roll back fraud in dev")
    assert refused.value.status == 403


def test_tokens_are_random_and_kept_only_as_peppered_digests() -> None:
    a, b = new_token(), new_token()
    assert a != b and a.startswith("mgt_") and len(a) >= 40
    assert token_digest(b"pepper", a) != token_digest(b"other", a) and a not in token_digest(b"pepper", a)


def test_failed_attempts_are_throttled_until_the_window_passes(monkeypatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("shared.throttle.time.monotonic", lambda: now[0])
    throttle = FailureThrottle(limit=3, window_seconds=60)
    for _ in range(3):
        throttle.check("source:10.0.0.1", "10.0.0.1")
        throttle.failed("source:10.0.0.1")
        now[0] += 1
    with pytest.raises(Throttled) as held:
        throttle.check("source:10.0.0.1", "10.0.0.1")
    assert held.value.status == 429 and held.value.retry_after == 57  # the oldest failure (t=1000) leaves at t=1060
    throttle.check("source:10.0.0.2", "10.0.0.2")  # another source is not held back
    now[0] += 60
    throttle.check("source:10.0.0.1", "10.0.0.1")
