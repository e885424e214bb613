"""Scoring rows through a deployed model's endpoint (POST /invocations of services/inference)."""

from __future__ import annotations

import httpx
import numpy as np

BATCH_ROWS = 10_000


def fraud_probabilities(endpoint_url: str, X: np.ndarray, batch_rows: int = BATCH_ROWS) -> np.ndarray:
    """P(fraud) for each row, asked of the endpoint in batches of JSON rows."""
    answers: list[np.ndarray] = []
    with httpx.Client(base_url=endpoint_url, timeout=60) as http:
        for start in range(0, len(X), batch_rows):
            rows = X[start : start + batch_rows].tolist()
            response = http.post("/invocations", json={"instances": rows})
            response.raise_for_status()
            answers.append(np.asarray(response.json()["probabilities"])[:, 1])
    return np.concatenate(answers)
