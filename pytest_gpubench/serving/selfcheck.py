"""Is the client, not the server, the bottleneck? Achieved vs target request rate, and the event loop's lag.

A loop that wakes late stamps chunks late: its lag is added to TTFT and bunches chunks so ITL shrinks
(vLLM's client at 1024 streams reported ITL 0.003 ms for a 10 ms server). Past LAG_LIMIT_MS at the 99th
percentile, or short of the asked request rate, the run is called client-bound and the warning says how
to fix it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .loadgen import LoadOutcome

# epoll's timeouts are whole milliseconds, rounded up: an idle loop's ticker already wakes up to 1 ms late,
# and chunk stamps (taken on I/O, not on timers) do not suffer that. Past 2 ms the loop itself is behind.
LAG_LIMIT_MS = 2.0
RATE_SHORTFALL = 0.9


@dataclass(frozen=True)
class SelfCheck:
    target_rate: float
    achieved_rate: float
    loop_lag_p50_ms: float
    loop_lag_p99_ms: float
    loop_lag_max_ms: float
    client_bound: bool
    warning: str

    def as_dict(self) -> dict[str, float]:
        return {
            "client_target_rate": self.target_rate, "client_achieved_rate": self.achieved_rate,
            "client_loop_lag_p50_ms": self.loop_lag_p50_ms, "client_loop_lag_p99_ms": self.loop_lag_p99_ms,
            "client_loop_lag_max_ms": self.loop_lag_max_ms, "client_bound": float(self.client_bound),
        }


def self_check(outcome: LoadOutcome, processes: int = 1) -> SelfCheck:
    lags_ms = np.asarray(outcome.loop_lag_s, dtype=float) * 1e3
    p50, p99, worst = (float(np.percentile(lags_ms, q)) for q in (50, 99, 100)) if lags_ms.size else (0.0, 0.0, 0.0)
    problems = []
    if p99 > LAG_LIMIT_MS:
        problems.append(f"the client's event loop ran {p99:.1f} ms late at p99 (limit {LAG_LIMIT_MS:g} ms), so TTFT and "
                        f"ITL include client delay; spread the streams with processes={processes * 2} or lower the concurrency")
    achieved = outcome.achieved_rate
    if not math.isinf(outcome.target_rate) and achieved < RATE_SHORTFALL * outcome.target_rate:
        problems.append(f"sent {achieved:.1f} requests/s of the {outcome.target_rate:g} asked for")
    return SelfCheck(outcome.target_rate, achieved, p50, p99, worst, bool(problems), "; ".join(problems))
