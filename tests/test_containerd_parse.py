"""doctor.parse.containerd against the real containerd: Debian's containerd merges the same
fixture files (``containerd config dump``, no daemon) and must agree with kdoctor's reading."""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from doctor.parse.containerd import (
    CRI_V2,
    load_config,
    parse_containerd_version,
    v1_plugin_name,
)
from doctor.parse.toml_lines import TomlSyntaxError, key_lines, load_toml

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "containerd"
CASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "etc/containerd/config.toml").exists())


class Tree:
    """A node's files under a directory (what NodeFacts gives the parser)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _real(self, path: str) -> Path:
        return self.root / PurePosixPath(path).relative_to("/")

    def read_text(self, path: str) -> str | None:
        try:
            return self._real(path).read_text()
        except FileNotFoundError:
            return None

    def listdir(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(self._real(path)))
        except FileNotFoundError:
            return []


def installed_containerd() -> tuple[int, int, int]:
    if shutil.which("containerd") is None:
        pytest.skip("containerd is not installed (Debian package containerd)")
    if os.geteuid() != 0:
        pytest.skip(
            "needs root: fixtures are bind-mounted on /etc/containerd in a private mount namespace"
        )
    out = subprocess.run(["containerd", "--version"], capture_output=True, text=True, check=True)
    version = parse_containerd_version(out.stdout)
    assert version is not None, out.stdout
    return version


def containerd_dump(case: str) -> dict[str, Any]:
    """What containerd itself makes of the fixture: its files bind-mounted on /etc/containerd
    in a private mount namespace, run from / as systemd runs it."""
    etc = FIXTURES / case / "etc/containerd"
    script = f"mount --bind '{etc}' /etc/containerd && cd / && exec containerd config dump"
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return tomllib.loads(proc.stdout)


def dig(doc: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = doc
    for key in path:
        if not isinstance(node, dict) or key not in node:
            raise KeyError(path)
        node = node[key]
    return node


JUDGED = [
    ("plugins", CRI_V2, "sandbox_image"),
    ("plugins", CRI_V2, "containerd", "runtimes", "runc", "options", "SystemdCgroup"),
    ("plugins", CRI_V2, "registry", "config_path"),
]


@pytest.mark.parametrize("case", CASES)
def test_kdoctor_merges_like_containerd(case: str) -> None:
    version = installed_containerd()
    dump = containerd_dump(case)
    config = load_config(Tree(FIXTURES / case), version)
    assert config is not None
    compared = 0
    for path, located in config.leaves.items():
        try:
            real = dig(dump, path)
        except KeyError:
            continue  # a key this containerd does not know (dropped from its dump)
        if located.value == {} and isinstance(real, dict):
            continue
        assert real == located.value, f"{'.'.join(path)} at {located.where()}"
        compared += 1
    for path in JUDGED:
        located = config.get(path)
        if located is not None:
            assert dig(dump, path) == located.value, path
    assert [d.value for d in config.disabled_plugins] == dump.get("disabled_plugins", [])
    assert compared == len(config.leaves) or compared > 0 or not config.leaves


def test_an_import_replaces_the_whole_cri_section_on_containerd_1() -> None:
    version = installed_containerd()
    dump = containerd_dump("dropin-replaces-cri")
    config = load_config(Tree(FIXTURES / "dropin-replaces-cri"), version)
    assert config is not None
    # containerd itself: the drop-in's section replaced config.toml's, sandbox_image is back
    # to containerd's default and config_path is empty
    assert dig(dump, ("plugins", CRI_V2, "sandbox_image")) != "registry.k8s.io/pause:3.9"
    assert dig(dump, ("plugins", CRI_V2, "registry", "config_path")) == ""
    (replaced,) = config.replaced
    assert replaced.plugin == CRI_V2
    assert replaced.winner.where() == "/etc/containerd/conf.d/10-systemd-cgroup.toml:4"
    assert sorted(lost.where() for lost in replaced.lost) == [
        "/etc/containerd/config.toml:6",
        "/etc/containerd/config.toml:9",
    ]
    assert config.get(("plugins", CRI_V2, "sandbox_image")) is None


def test_a_relative_glob_import_loads_nothing_on_containerd_1() -> None:
    version = installed_containerd()
    dump = containerd_dump("relative-glob")
    options = ("plugins", CRI_V2, "containerd", "runtimes", "runc", "options", "SystemdCgroup")
    assert dig(dump, options) is False  # containerd did not read conf.d/
    config = load_config(Tree(FIXTURES / "relative-glob"), version)
    assert config is not None
    assert [f.path for f in config.files] == ["/etc/containerd/config.toml"]
    (glob,) = config.relative_globs
    assert glob.pattern == "conf.d/*.toml" and glob.resolved == "/conf.d/*.toml"
    # containerd 2.x joins it to the importing file's directory
    config2 = load_config(Tree(FIXTURES / "relative-glob"), (2, 1, 0))
    assert config2 is not None
    assert [f.path for f in config2.files][1] == "/etc/containerd/conf.d/10-systemd-cgroup.toml"


def test_version_3_paths_and_misplaced_keys() -> None:
    v3 = load_config(Tree(FIXTURES / "kubeadm-2.1"), (2, 1, 4))
    assert v3 is not None and v3.target_version == 3
    sandbox = v3.get(("plugins", "io.containerd.cri.v1.images", "pinned_images", "sandbox"))
    assert sandbox is not None and sandbox.value == "registry.k8s.io/pause:3.10"
    assert sandbox.where() == "/etc/containerd/config.toml:50"
    assert not v3.misplaced
    wrong = load_config(Tree(FIXTURES / "v2-keys-in-v3"), (2, 1, 4))
    assert wrong is not None
    assert [(m.located.where(), m.belongs_to) for m in wrong.misplaced] == [
        ("/etc/containerd/config.toml:5", 2),
        ("/etc/containerd/config.toml:7", 2),
    ]
    # ignored: nothing of it reaches the runtime plugin
    assert not wrong.under(("plugins", "io.containerd.cri.v1.runtime"))
    reverse = load_config(Tree(FIXTURES / "v3-keys-in-v2"), (1, 7, 25))
    assert reverse is not None
    assert [m.belongs_to for m in reverse.misplaced] == [3, 3]


def test_version_2_file_migrated_for_containerd_2() -> None:
    config = load_config(Tree(FIXTURES / "kubeadm-1.7"), (2, 0, 0))
    assert config is not None
    options = ("plugins", "io.containerd.cri.v1.runtime", "containerd", "runtimes", "runc")
    systemd = config.get((*options, "options", "SystemdCgroup"))
    assert systemd is not None and systemd.value is True
    sandbox = config.get(("plugins", "io.containerd.cri.v1.images", "pinned_images", "sandbox"))
    assert sandbox is not None and sandbox.value == "registry.k8s.io/pause:3.9"
    assert sandbox.key == ("plugins", CRI_V2, "sandbox_image")  # located where it is written


def test_v1_names() -> None:
    assert v1_plugin_name("cri") == CRI_V2
    assert v1_plugin_name("diff-service") == "io.containerd.service.v1.diff-service"
    assert v1_plugin_name(CRI_V2) == CRI_V2


def test_containerd_versions() -> None:
    assert parse_containerd_version(
        "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3"
    ) == (1, 6, 20)
    assert parse_containerd_version(
        "containerd containerd.io 1.7.25 bcc810d6b9066471b0b6fa75f557a15a1cbf31bb"
    ) == (1, 7, 25)
    assert parse_containerd_version(
        "containerd github.com/containerd/containerd/v2 v2.1.4 "
        "75cb2b7193e4e490e9fbdc236c0e811ccaba3376"
    ) == (2, 1, 4)
    assert parse_containerd_version("garbage") is None


def test_key_lines() -> None:
    text = (
        "version = 2\n"
        '[plugins."io.containerd.grpc.v1.cri"]\n'
        "  cdi = [\n"
        '    "a = b",\n'
        "  ]\n"
        "  x.y = { z = 1 }\n"
        "  s = '''\n"
        "k = v\n"
        "'''\n"
        '  [plugins."io.containerd.grpc.v1.cri".registry]\n'
        '    config_path = "/etc"\n'
    )
    lines = key_lines(text)
    assert lines[("version",)] == 1
    assert lines[("plugins", CRI_V2)] == 2
    assert lines[("plugins", CRI_V2, "cdi")] == 3
    assert ("a",) not in lines and ("k",) not in lines
    assert lines[("plugins", CRI_V2, "x", "y")] == 6
    assert lines[("plugins", CRI_V2, "registry", "config_path")] == 11


def test_broken_toml_names_file_and_line() -> None:
    with pytest.raises(TomlSyntaxError) as info:
        load_toml("version = 2\n[plugins\nx = 1\n", "/etc/containerd/config.toml")
    assert str(info.value).startswith("/etc/containerd/config.toml:2: invalid TOML: ")
    with pytest.raises(TomlSyntaxError) as info:
        load_toml('version = 2\nimports = ["a",\n', "/etc/containerd/config.toml")
    assert info.value.line is not None
