"""The soak's verdict (bench/soak.py): a series that drifts is called growing, noise around a level is flat."""

from __future__ import annotations

import random

from bench.soak import fit


def test_noise_around_a_level_is_flat_and_a_leak_is_not():
    rng = random.Random(1)
    journeys = [1000 * i for i in range(4, 21)]
    flat = fit("RSS registrar (MB)", [(x, 120 + rng.gauss(0, 2)) for x in journeys], 20_000)
    leak = fit("RSS registrar (MB)", [(x, 120 + x / 1000 * 3 + rng.gauss(0, 1)) for x in journeys], 20_000)
    assert flat is not None and flat.flat
    assert leak is not None and not leak.flat and abs(leak.per_thousand - 3) < 0.5


def test_too_few_samples_give_no_slope():
    assert fit("latency p99 (ms)", [(1000, 80.0), (2000, 90.0)], 2000) is None
