"""Names of the built-in tools an agent spec may list.

The control plane validates agent specs against this catalogue at PUT time; the data plane
(`gateway.agents.tools`) implements each entry, and a test keeps the two in step.
"""

from __future__ import annotations

BUILTIN_TOOLS: dict[str, str] = {
    "current_time": "Current date and time in UTC (ISO 8601).",
    "calculator": "Evaluate an arithmetic expression: numbers, + - * / // % ** and parentheses.",
}
