"""The soak's chaos schedule: which faults, in a seeded random order, at seeded random times."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from tests.soak.poison import PoisonPlan

Action = Literal["api_fault", "kill_9", "broker_restart", "scale"]

# Sandbox knobs of each API fault while it lasts; each ends by setting them back to `CLEAR`.
API_FAULTS: Final[dict[str, dict[str, Any]]] = {
    "throttle_429_storm": {"throttle_429": 0.9},
    "errors_5xx_30pct": {"error_500": 0.1, "error_502": 0.1, "error_503": 0.1},
    "connection_resets": {"reset": 0.2},
    "hangs": {"hang": 0.05},
    "token_revoked": {"token_revoked": True},
}


def knobs_for(name: str, duration_s: float) -> dict[str, Any]:
    """The knobs that start API fault `name` (an outage is timed by the sandbox itself)."""
    if name == "api_outage":
        return {"outage_seconds": duration_s}
    return API_FAULTS[name]


CLEAR: Final[dict[str, Any]] = {
    "outage_seconds": 0,
    "throttle_429": 0.0,
    "error_500": 0.0,
    "error_502": 0.0,
    "error_503": 0.0,
    "reset": 0.0,
    "hang": 0.0,
    "token_revoked": False,
}


@dataclass(frozen=True, slots=True)
class Plan:
    """How much chaos: durations in seconds of each API fault, the process faults, and the
    poison injected mid-stream."""

    events: int
    window_s: float
    api_faults: dict[str, float]
    kills: int
    broker_restart: bool
    consumers: tuple[int, ...]
    poison: PoisonPlan = field(default_factory=PoisonPlan)

    @classmethod
    def full(cls, window_s: float, events: int) -> Plan:
        return cls(
            events=events,
            window_s=window_s,
            api_faults={
                "api_outage": 120,
                "throttle_429_storm": 30,
                "errors_5xx_30pct": 60,
                "connection_resets": 30,
                "hangs": 30,
                "token_revoked": 60,
            },
            kills=5,
            broker_restart=True,
            consumers=(1, 3, 1),
            poison=PoisonPlan.full(),
        )

    @classmethod
    def short(cls, window_s: float, events: int) -> Plan:
        return cls(
            events=events,
            window_s=window_s,
            api_faults={
                "api_outage": 12,
                "throttle_429_storm": 4,
                "errors_5xx_30pct": 6,
                "connection_resets": 4,
                "hangs": 4,
                "token_revoked": 6,
            },
            kills=2,
            broker_restart=False,
            consumers=(1, 2, 1),
            poison=PoisonPlan.short(),
        )


@dataclass(frozen=True, slots=True)
class ChaosEvent:
    """One scheduled fault: `at_s` after the start, lasting `duration_s` (0 for instant ones)."""

    at_s: float
    action: Action
    name: str
    duration_s: float = 0.0
    consumers: int = 0

    def describe(self) -> dict[str, Any]:
        return {
            "at_s": round(self.at_s, 1),
            "action": self.action,
            "name": self.name,
            "duration_s": self.duration_s,
        } | ({"consumers": self.consumers} if self.action == "scale" else {})


def schedule(plan: Plan, seed: int) -> list[ChaosEvent]:
    """API faults back to back in random order with random gaps (they share one knob set, so
    they never overlap); kills, the broker restart and scaling at random times in between."""
    rng = random.Random(seed)
    window = plan.window_s
    # Faults begin after a warm-up and end with room left for the last kill to recover.
    start, end = 0.08 * window, 0.85 * window
    names = list(plan.api_faults)
    rng.shuffle(names)
    busy = sum(plan.api_faults.values())
    slack = max(0.0, (end - start) - busy)
    cuts = sorted(rng.uniform(0, slack) for _ in names)
    events: list[ChaosEvent] = []
    at, used = start, 0.0
    for name, cut in zip(names, cuts, strict=True):
        at += cut - used
        used = cut
        events.append(ChaosEvent(at, "api_fault", name, plan.api_faults[name]))
        at += plan.api_faults[name]
    for _ in range(plan.kills):
        events.append(ChaosEvent(rng.uniform(start, end), "kill_9", "kill_9"))
    if plan.broker_restart:
        events.append(ChaosEvent(rng.uniform(start, end), "broker_restart", "broker_restart"))
    steps = plan.consumers[1:]
    moments = sorted(rng.uniform(start, end) for _ in steps)
    for moment, count in zip(moments, steps, strict=True):
        events.append(ChaosEvent(moment, "scale", f"consumers_{count}", consumers=count))
    return sorted(events, key=lambda event: event.at_s)
