"""Run Python code inside a named network namespace (`ip netns add NAME`), root only.

Python 3.11 has no os.setns, so this calls libc's setns(2) through ctypes. A network namespace
is a per-thread attribute: the call happens in a fresh thread that ends afterwards, so the
caller's thread never changes namespace. Sockets created there stay in that namespace for
their whole life, which is how the API server listens inside a node namespace.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["call_in_netns", "netns_path"]

CLONE_NEWNET = 0x40000000
T = TypeVar("T")
_libc: Any = None


def netns_path(name: str) -> str:
    return f"/run/netns/{name}"


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def call_in_netns(name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """FN(*ARGS, **KWARGS) run in a new thread that has joined network namespace NAME."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            fd = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(fd)
            finally:
                os.close(fd)
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=run, name=f"netns-{name}", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]
