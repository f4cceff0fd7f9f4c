"""The per-instance directory of prometheus_client's multiprocess mode.

Kept free of prometheus_client imports: the `gateway serve` parent process calls this before
it exports `PROMETHEUS_MULTIPROC_DIR` for the workers it spawns.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess_dir(base: str | None, port: int) -> Path:
    """A fresh, empty multiprocess directory for one gateway instance.

    The directory is `<base>/port<port>-pid<pid>` (base: `GATEWAY_METRICS_DIR` or
    `<tmp>/agent-gateway-metrics`): another instance on the same host has another port or pid,
    so two instances never share files. It is emptied if it exists (a crashed earlier instance
    whose pid was reused), and directories left by instances whose process is gone are removed.
    """
    parent = Path(base) if base else Path(tempfile.gettempdir()) / "agent-gateway-metrics"
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob("port*-pid*"):
        pid = stale.name.rpartition("-pid")[2]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    path = parent / f"port{port}-pid{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
