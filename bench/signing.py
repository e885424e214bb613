"""What signed events cost per event, against handling the same event unsigned, in one process.

Rows, each the median over the five event types at their real sizes (tests.factories.sample_events):
- baseline: what a consumer did before signatures (parse the JSON into the typed event);
- sign: what the publisher adds (the producer's Ed25519 signature over the canonical JSON);
- verify: what the consumer adds before parsing (ownership, key lookup from the cached key list, signature).
The consumer's key list is read from Parameter Store once per producer and key id, so it is not in the
per-event cost; the journey's throughput with signatures on is `python -m bench.journey`.

    python -m bench.signing --events 20000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable

from bench.common import conditions, console, table
from shared.events import parse_event
from shared.signing import KeyRing, Signer, Verifier, private_key_from_secret
from shared.topology import OWNER
from tests.factories import sample_events

ROUNDS = 10


def signers() -> dict[str, Signer]:
    return {service: Signer(service, private_key_from_secret(f"bench-{service}".encode())) for service in set(OWNER.values())}


def verifier(keys: dict[str, Signer]) -> Verifier:
    ring = KeyRing(ssm=None, namespace="bench")
    ring.keys = {service: {s.key_id: s.private.public_key()} for service, s in keys.items()}
    return Verifier(ring)


def per_event(loop: asyncio.AbstractEventLoop, work: Callable[[], object], count: int) -> float:
    """Seconds per call of `work` (awaited in one coroutine when it returns one, so no loop start-up counts)."""

    async def repeat() -> float:
        started = time.perf_counter()
        for _ in range(count):
            done = work()
            if asyncio.iscoroutine(done):
                await done
        return time.perf_counter() - started

    return loop.run_until_complete(repeat()) / count


def measure(events: int) -> list[tuple[str, float]]:
    keys, loop = signers(), asyncio.new_event_loop()
    check = verifier(keys)
    bodies = [e.model_dump_json() for e in sample_events()]
    signed = [keys[OWNER[parse_event(b).event_type]].sign(b) for b in bodies]
    cases: dict[str, list[Callable[[], object]]] = {
        "baseline: parse the event": [lambda b=b: parse_event(b) for b in bodies],
        "sign (publisher)": [lambda b=b, k=keys[OWNER[parse_event(b).event_type]]: k.sign(b) for b in bodies],
        "verify (consumer, before parsing)": [lambda s=s: check.check(s) for s in signed],
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    each = max(1, events // ROUNDS // len(bodies))
    for _ in range(ROUNDS):  # interleaved, so a busy moment of the machine falls on every case alike
        for name, works in cases.items():
            samples[name] += [per_event(loop, work, each) for work in works]
    loop.close()
    return [(name, statistics.median(values)) for name, values in samples.items()]


def report(medians: list[tuple[str, float]], events: int) -> None:
    base = medians[0][1]
    rows = [(name, f"{m * 1e6:.1f}", f"{(m - base) * 1e6:+.1f}" if i else "", f"{m / base:.2f}×")
            for i, (name, m) in enumerate(medians)]
    console.print(table(f"signed events: median µs per event over {events} events in-process ({conditions()})",
                        ["step", "µs / event", "vs baseline", "ratio"], rows))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20000)
    args = parser.parse_args(argv)
    report(measure(args.events), args.events)


if __name__ == "__main__":
    main()
