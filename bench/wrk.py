"""Drive a point with `wrk` (preferred when installed): a Lua script sets the POST body and
headers and counts non-200 and incorrect responses (a 200 body missing any of the expected
strings); `--latency` gives the percentiles. wrk times whole responses only: the time to the
first byte of a streamed answer is measured by `bench.loadgen`."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.loadgen import REQUEST_TIMEOUT_S, ExpectArg, LoadResult, expectation

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_VALUE = r"([\d.]+)(us|ms|s|m|h)"
_PERCENTILE = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+" + _VALUE + r"\s*$", re.MULTILINE)
_REQUESTS = re.compile(r"(\d+) requests in " + _VALUE)
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_COUNTS = re.compile(r"BENCH non200=(\d+) incorrect=(\d+)")

_SCRIPT = """
wrk.method = "POST"
wrk.body = [==[{body}]==]
{headers}
local expect = {{{expect}}}
local ends_with = {ends_with}
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args) non200 = 0; incorrect = 0 end
function response(status, headers, body)
  if status ~= 200 then non200 = non200 + 1; return end
  for _, e in ipairs(expect) do
    if not string.find(body, e, 1, true) then incorrect = incorrect + 1; return end
  end
  if ends_with then
    local stripped = string.gsub(body, "%s+$", "")
    if string.sub(stripped, -#ends_with) ~= ends_with then incorrect = incorrect + 1 end
  end
end
function done(summary, latency, requests)
  local n, b = 0, 0
  for _, t in ipairs(threads) do n = n + t:get("non200"); b = b + t:get("incorrect") end
  io.write(string.format("BENCH non200=%d incorrect=%d\\n", n, b))
end
"""


def available() -> bool:
    return shutil.which("wrk") is not None


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS_MS[unit]


def lua_script(body: bytes, headers: dict[str, str], expect: ExpectArg) -> str:
    checks = expectation(expect)
    lines = [f'wrk.headers["{k}"] = [==[{v}]==]' for k, v in headers.items()]
    lines.insert(0, 'wrk.headers["Content-Type"] = "application/json"')
    return _SCRIPT.format(
        body=body.decode(),
        headers="\n".join(lines),
        expect=", ".join(f"[==[{e.decode()}]==]" for e in checks.contains),
        ends_with=f"[==[{checks.ends_with.decode()}]==]" if checks.ends_with else "nil",
    )


def parse(output: str, connections: int) -> LoadResult:
    """A LoadResult from wrk's `--latency` report plus our script's counts line."""
    requests = _REQUESTS.search(output)
    if requests is None:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    result = LoadResult(
        tool="wrk",
        connections=connections,
        duration_s=_ms(requests.group(2), requests.group(3)) / 1000,
        requests=int(requests.group(1)),
    )
    percentiles = {float(p): _ms(v, u) for p, v, u in _PERCENTILE.findall(output)}
    result.p50_ms, result.p99_ms = percentiles.get(50.0), percentiles.get(99.0)
    if (socket := _SOCKET.search(output)) is not None:
        result.socket_errors = sum(int(n) for n in socket.groups())
    if (counts := _COUNTS.search(output)) is not None:
        result.non_200, result.incorrect = int(counts.group(1)), int(counts.group(2))
    return result


def run_wrk(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    connections: int,
    duration_s: float,
    expect: ExpectArg = None,
    cpus: str | None = "1",
) -> LoadResult:
    """One closed-loop wrk run (one thread), pinned to `cpus` when given."""
    seconds = max(1, round(duration_s))
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(lua_script(body, headers, expect))
        command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s"]
        command += [f"--timeout={int(REQUEST_TIMEOUT_S)}s", "--latency", "-s", str(script), url]
        if cpus is not None:
            command = ["taskset", "-c", cpus, *command]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + REQUEST_TIMEOUT_S + 10
        )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return parse(done.stdout, connections)
