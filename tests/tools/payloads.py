"""Payload files for agents: payloads never go on a command line (argv is recorded)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def payload_file(workdir: Path, data: bytes) -> str:
    """Write `data` to a new file in `workdir` that an unprivileged agent can read."""
    fd, path = tempfile.mkstemp(dir=workdir, suffix=".payload")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o644)
    return path
