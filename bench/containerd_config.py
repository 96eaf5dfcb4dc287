"""How long node.containerd.drift's reading of containerd's configuration takes, next to
containerd's own ``config dump``.

For each fixture under fixtures/containerd/ (and a node with N drop-in imports, default 200)
times kdoctor's merge (tomllib + the key-path line locator + containerd's merge rules) and,
when the binary is installed, ``containerd --config FILE config dump`` (a process start
included, run from the fixture's directory: relative imports only). Prints figures; asserts
nothing.

    .venv/bin/python bench/containerd_config.py [IMPORTS]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path, PurePosixPath

from doctor.parse.containerd import load_config

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "containerd"


class Tree:
    def __init__(self, root: Path) -> None:
        self.root = root

    def read_text(self, path: str) -> str | None:
        try:
            return (self.root / PurePosixPath(path).relative_to("/")).read_text()
        except FileNotFoundError:
            return None

    def listdir(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(self.root / PurePosixPath(path).relative_to("/")))
        except FileNotFoundError:
            return []


def time_kdoctor(root: Path, runs: int = 20) -> float:
    start = time.perf_counter()
    for _ in range(runs):
        load_config(Tree(root), (1, 6, 20))
    return (time.perf_counter() - start) / runs * 1000


def time_dump(config: Path, runs: int = 3) -> float | None:
    if shutil.which("containerd") is None:
        return None
    start = time.perf_counter()
    for _ in range(runs):
        subprocess.run(
            ["containerd", "--config", str(config), "config", "dump"],
            capture_output=True, check=False, cwd=config.parent,
        )  # fmt: skip
    return (time.perf_counter() - start) / runs * 1000


def many_imports(root: Path, count: int) -> None:
    etc = root / "etc/containerd"
    (etc / "conf.d").mkdir(parents=True)
    base = (FIXTURES / "kubeadm-1.7/etc/containerd/config.toml").read_text()
    glob = 'imports = ["/etc/containerd/conf.d/*.toml"]'
    (etc / "config.toml").write_text(base.replace("imports = []", glob))
    for index in range(count):
        (etc / f"conf.d/{index:04d}.toml").write_text(
            f'version = 2\n[plugins."io.containerd.internal.v1.opt"]\n  path = "/opt/c{index}"\n'
        )


def main() -> None:
    imports = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    print(f"{'case':28} {'kdoctor ms':>11} {'config dump ms':>15}")
    for case in sorted(p for p in FIXTURES.iterdir() if p.is_dir()):
        config = case / "etc/containerd/config.toml"
        dump = time_dump(config)
        shown = f"{dump:15.1f}" if dump is not None else f"{'-':>15}"
        print(f"{case.name:28} {time_kdoctor(case):11.2f} {shown}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        many_imports(root, imports)
        ms = time_kdoctor(root, runs=3)
        config = load_config(Tree(root), (1, 6, 20))
        files = len(config.files) if config else 0
        print(f"{f'{imports} imports ({files} files)':28} {ms:11.2f} {'-':>15}")


if __name__ == "__main__":
    main()
