"""``python -m gateway.mock_llm`` — run the mock LLM server."""

from __future__ import annotations

import argparse
import os

from .config import MockConfig
from .server import run_mock_server


def main(argv: list[str] | None = None) -> None:
    """Parse command-line options and serve until interrupted.

    Args:
        argv: Arguments (defaults to ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(prog="python -m gateway.mock_llm", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--stream-delay-ms", type=float, default=0.0)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--fault-status", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stall-seconds", type=float, default=30.0)
    parser.add_argument(
        "--parent-pid", type=int, default=None, help="exit once this process is gone"
    )
    args = parser.parse_args(argv)
    try:
        config = MockConfig(
            latency_ms=args.latency_ms,
            stream_delay_ms=args.stream_delay_ms,
            fault_rate=args.fault_rate,
            fault_status=args.fault_status,
            seed=args.seed,
            stall_seconds=args.stall_seconds,
            # From the environment, not the command line (which `ps` shows): `gateway demo` sets it.
            tool_secret=os.environ.get("MOCK_LLM_TOOL_SECRET") or None,
        )
    except ValueError as exc:
        parser.error(str(exc))
    run_mock_server(args.host, args.port, config, parent_pid=args.parent_pid)


if __name__ == "__main__":
    main()
