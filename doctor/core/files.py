"""Writing files so that a reader never sees half of one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(
    target: Path, content: str, mode: int = 0o644, owner: tuple[int, int] | None = None
) -> None:
    """Write via a temporary file in the same directory and rename, so readers never see half."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
        os.chmod(tmp, mode)
        if owner is not None and hasattr(os, "chown"):
            os.chown(tmp, *owner)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
