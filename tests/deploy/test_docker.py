"""The container image recipe: what an operator relies on, read from the Dockerfile itself.

No container engine runs in CI, so the image is never built here: these checks read the
Dockerfile and `.dockerignore`, hadolint lints it (also part of `make lint`), and the entry point
`gateway serve` is run as the image runs it (configured only by the environment).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import gateway_env, wait_answering
from tests.observability.live import free_port

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def test_hadolint_finds_nothing_at_warning_level() -> None:
    result = subprocess.run(
        [str(HADOLINT), "--failure-threshold", "warning", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_base_image_is_pinned_by_exact_tag_or_digest() -> None:
    args = dict(
        (rest.split("=", 1)[0], rest.split("=", 1)[1])
        for word, rest in instructions()
        if word == "ARG" and "=" in rest
    )
    froms = [rest.split()[0] for word, rest in instructions() if word == "FROM"]
    assert len(froms) >= 2, "multi-stage: a build stage and a runtime stage"
    for image in froms:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        pinned = "@sha256:" in image or re.search(r":\d+\.\d+\.\d+[-\w.]*$", image)
        assert pinned, f"{image} is not pinned to an exact version or digest"


def test_the_runtime_stage_runs_gateway_serve_as_a_non_root_user_with_a_healthcheck() -> None:
    stage = final_stage()
    words = [word for word, _ in stage]
    user = [rest for word, rest in stage if word == "USER"][-1]
    assert user.split(":")[0] not in ("root", "0"), user
    assert words.index("USER") < words.index("ENTRYPOINT")
    health = [rest for word, rest in stage if word == "HEALTHCHECK"][-1]
    assert "/healthz" in health and "CMD" in health
    entry = [rest for word, rest in stage if word in ("ENTRYPOINT", "CMD")]
    assert entry == ['["gateway"]', '["serve"]']
    # Only the virtualenv is taken from the build stage (no sources, no build tools).
    copies = [rest for word, rest in stage if word == "COPY"]
    assert copies == ["--from=build /opt/gateway /opt/gateway"]


def test_the_usage_spill_is_written_outside_tmp() -> None:
    """`/tmp` is a tmpfs (compose) or a scratch `emptyDir` (Kubernetes): records spilled there
    at a stop during a database outage were thrown away with the container."""
    env = " ".join(rest for word, rest in final_stage() if word == "ENV")
    assert "GATEWAY_USAGE_SPILL_PATH=/var/lib/gateway/" in env
    assert "GATEWAY_USAGE_DEAD_LETTER_PATH=/var/lib/gateway/" in env
    runs = " ".join(rest for word, rest in final_stage() if word == "RUN")
    assert "--owner 10001" in runs and "/var/lib/gateway" in runs


def test_no_secret_is_baked_into_the_image() -> None:
    secret = re.compile(r"(SECRET|TOKEN|PASSWORD|API_KEY|DATABASE_URL|REDIS_URL)", re.I)
    for word, rest in instructions():
        if word in ("ENV", "ARG", "LABEL"):
            assert not secret.search(rest), f"{word} {rest}"


def test_the_build_context_holds_only_what_the_dockerfile_copies() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    rules = [line for line in ignore if line and not line.startswith("#")]
    assert rules[0] == "*", ".dockerignore starts by excluding everything"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = set()
    for word, rest in instructions():
        if word == "COPY" and not rest.startswith("--from"):
            copied.update(part.rstrip("/") for part in rest.split()[:-1])
    assert copied == allowed, (copied, allowed)
    for name in copied:
        assert (ROOT / name).exists(), name


def test_gateway_serve_takes_host_port_and_workers_from_the_environment(
    sqlite_url: str, tmp_path: Path
) -> None:
    """The image starts `gateway serve` with no arguments: PORT, GATEWAY_HOST and
    GATEWAY_WORKERS configure it."""
    port = free_port()
    env = gateway_env(
        sqlite_url,
        PORT=str(port),
        GATEWAY_HOST="127.0.0.1",
        GATEWAY_WORKERS="2",
        OPENAI_BASE_URL="http://127.0.0.1:9/v1",
        GATEWAY_METRICS_DIR=str(tmp_path / "metrics"),
    )
    subprocess.run(
        [str(Path(sys.executable).parent / "gateway"), "db", "upgrade"], env=env, check=True
    )
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "gateway"), "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        # Two spawned workers import everything anew: as long as serve_gateway (live.py) allows.
        wait_answering(f"http://127.0.0.1:{port}/healthz", proc, log_path, timeout_s=60)
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
        assert "starting 2 workers" in log_path.read_text()
    finally:
        proc.terminate()
        # SIGTERM is a normal stop: every worker drains, then the supervisor exits 0.
        assert proc.wait(timeout=30) == 0, log_path.read_text()[-3000:]
