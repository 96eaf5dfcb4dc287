"""Running commands that change things, for fixes only. Every call is logged as a step."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field

FIX_COMMAND_TIMEOUT = 60.0


class CommandFailed(Exception):
    """A fix step's command exited non-zero, timed out or could not start."""


@dataclass
class CommandRunner:
    """Runs argv lists (never a shell) and reports each one to ``on_step``."""

    timeout: float = FIX_COMMAND_TIMEOUT
    on_step: Callable[[str], None] = field(default=lambda _line: None)

    def run(self, argv: list[str], stdin: str | None = None) -> str:
        """Run one command; return stdout, or raise :class:`CommandFailed`."""
        display = shlex.join(argv)
        self.on_step(f"$ {display}")
        try:
            proc = subprocess.run(
                argv,
                input=stdin.encode() if stdin is not None else None,
                stdin=None if stdin is not None else subprocess.DEVNULL,
                capture_output=True,
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise CommandFailed(f"`{display}` did not finish within {self.timeout:g}s") from exc
        except OSError as exc:
            raise CommandFailed(f"`{display}` could not run: {exc.strerror or exc}") from exc
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip()
            raise CommandFailed(f"`{display}` exited {proc.returncode}: {err}")
        return proc.stdout.decode("utf-8", "replace")
