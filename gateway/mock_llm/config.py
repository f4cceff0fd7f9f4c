"""Configuration of the mock LLM server."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MockConfig:
    """Server-wide knobs of the mock LLM server.

    Per-request behaviour (faults, extra latency) is driven by markers in the last user
    message; see :mod:`gateway.mock_llm`.
    """

    latency_ms: float = 0
    """Delay in milliseconds before answering (non-streaming) or before the first chunk."""

    stream_delay_ms: float = 0
    """Delay in milliseconds between two streamed deltas (0 = send the whole stream at once)."""

    fault_rate: float = 0.0
    """Probability (0..1) that a request fails with ``fault_status`` (seeded, deterministic)."""

    fault_status: int = 500
    """HTTP status returned by random faults drawn with ``fault_rate``."""

    seed: int = 0
    """Seed of the random generator used for ``fault_rate``."""

    tool_secret: str | None = None
    """Tool-signing secret `POST /_mock/tools/{name}` verifies calls with (None: not checked)."""

    stall_seconds: float = 30.0
    """How long a ``timeout`` / ``stall`` fault hangs before carrying on."""

    def __post_init__(self) -> None:
        # A knob out of range would quietly test nothing (a fault status of 200 injects no
        # fault, a rate of 2 or NaN is not a probability): refused at start.
        for name in ("latency_ms", "stream_delay_ms", "stall_seconds"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, not {value}")
        if not 0.0 <= self.fault_rate <= 1.0:  # NaN fails both comparisons
            raise ValueError(f"fault_rate must be a probability in 0..1, not {self.fault_rate}")
        if not 400 <= self.fault_status <= 599:
            raise ValueError(
                f"fault_status must be an HTTP error status (400..599), not {self.fault_status}"
            )
