"""The first hour of a new user: the README's commands and the mistakes people make, run as
root and as an unprivileged user (``nobody``). Every exit code is what the contract says and
no traceback ever reaches stderr.

Nothing here changes the machine: ``check`` only reads, ``fix`` runs as ``--dry-run`` or
without a terminal (so every plan is declined), state goes to temporary directories.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, validate_report

README_CRON_OUTPUT = Path("/var/lib/node_exporter/textfile/kdoctor.prom")


@dataclass
class User:
    """Runs ``kdoctor`` as a given user from that user's own home directory."""

    name: str
    prefix: list[str]
    python: str
    home: Path
    pythonpath: str

    def kdoctor(
        self, *args: str, timeout: float = 180, extra_env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": str(self.home),
            "KUBECONFIG": "",
            "PYTHONPATH": self.pythonpath,
            "PYTHONDONTWRITEBYTECODE": "1",
            "LANG": "C.UTF-8",
            **(extra_env or {}),
        }
        proc = subprocess.run(
            [*self.prefix, "env", *(f"{k}={v}" for k, v in env.items()), self.python, "-m",
             "doctor", *args],
            capture_output=True, text=True, timeout=timeout, cwd=self.home,
            stdin=subprocess.DEVNULL, env={"PATH": env["PATH"]},
        )  # fmt: skip
        assert "Traceback" not in proc.stderr, f"{self.name}: kdoctor {args}:\n{proc.stderr}"
        assert "Traceback" not in proc.stdout, f"{self.name}: kdoctor {args}:\n{proc.stdout}"
        return proc


def _works(prefix: list[str], python: str, pythonpath: str) -> bool:
    probe = subprocess.run(
        [*prefix, "env", f"PYTHONPATH={pythonpath}", python, "-c", "import doctor, rich"],
        capture_output=True,
        timeout=60,
        cwd="/",
    )
    return probe.returncode == 0


def _unprivileged(home: Path) -> User:
    if os.geteuid() != 0:
        pytest.skip("needs root to run commands as nobody")
    runuser = shutil.which("runuser") or shutil.which("setpriv")
    if runuser is None:
        pytest.skip("needs runuser or setpriv (util-linux)")
    if runuser.endswith("runuser"):
        prefix = [runuser, "-u", "nobody", "--"]
    else:
        prefix = [runuser, "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    os.chown(home, *_nobody_ids())
    site = os.pathsep.join(
        dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    )
    # The venv's interpreter may live where nobody cannot read it (a pyenv under /root):
    # then the system python3 of the same version runs the venv's packages.
    candidates = [(sys.executable, str(REPO))]
    system = shutil.which("python3", path="/usr/bin:/bin")
    if system:
        candidates.append((system, f"{REPO}{os.pathsep}{site}"))
    for python, pythonpath in candidates:
        if _works(prefix, python, pythonpath):
            return User("nobody", prefix, python, home, pythonpath)
    pytest.skip("no Python interpreter with kdoctor's packages is readable by nobody")


def _nobody_ids() -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


@pytest.fixture(params=["root", "nobody"])
def user(request: pytest.FixtureRequest) -> Iterator[User]:
    # Not under pytest's tmp_path: its parent is private to root and nobody could not enter.
    home = Path(tempfile.mkdtemp(prefix="kdt-home-", dir="/tmp"))
    home.chmod(0o755)
    try:
        if request.param == "root":
            if os.geteuid() != 0:
                pytest.skip("the root half runs as root (CI does)")
            yield User("root", [], sys.executable, home, str(REPO))
        else:
            yield _unprivileged(home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_the_first_hour(user: User) -> None:
    home = user.home
    assert user.kdoctor("--version").returncode == 0
    listing = user.kdoctor("list")
    assert listing.returncode == 0 and "node.services" in listing.stdout
    assert user.kdoctor("explain", "node.services").returncode == 0
    assert user.kdoctor("frobnicate").returncode == 3
    assert user.kdoctor("explain", "node.nope").returncode == 3

    # the first check on this machine: whatever it finds, a verdict and a Nagios code
    first = user.kdoctor("check")
    assert first.returncode in (0, 1, 2, 3) and first.stdout.strip(), first.stderr
    report = user.kdoctor("check", "--json")
    doc = validate_report(report.stdout)
    assert report.returncode == {"ok": 0, "warn": 1, "fail": 2, "error": 3}[doc["status"]]
    quiet_node = user.kdoctor("check", "--scope", "node", "--json")
    validate_report(quiet_node.stdout)

    # mistakes: one line and exit 3
    for args in (
        ["check", "--kubeconfig", "/nonexistent"],
        ["check", "--only", "node.nope"],
        ["check", "--bundle", str(home)],
        ["check", "--output", str(home / "missing" / "report.json")],
        ["tui"],
    ):
        proc = user.kdoctor(*args)
        assert proc.returncode == 3, (args, proc.stdout, proc.stderr)
        assert proc.stderr.startswith("kdoctor: error: "), (args, proc.stderr)

    # the README's monitoring cron line
    if not README_CRON_OUTPUT.parent.exists() or user.name != "root":
        cron = user.kdoctor("check", "--format", "prometheus", "--output", str(README_CRON_OUTPUT))
        assert cron.returncode == 3 and cron.stderr.startswith("kdoctor: error: ")
        assert str(README_CRON_OUTPUT.parent) in cron.stderr
    prom = home / "textfile" / "kdoctor.prom"
    prom.parent.mkdir()
    if user.name != "root":
        os.chown(prom.parent, *_nobody_ids())
    cron = user.kdoctor("check", "--format", "prometheus", "--output", str(prom))
    assert cron.returncode in (0, 1, 2, 3) and prom.read_text().startswith("# HELP")

    # collect: onto a file is refused, into a new directory writes a bundle check reads
    (home / "afile").write_text("x")
    assert user.kdoctor("collect", str(home / "afile")).returncode == 3
    collected = user.kdoctor("collect", str(home / "bundle"), "--scope", "node")
    assert collected.returncode == 0, collected.stderr
    again = user.kdoctor("check", "--bundle", str(home / "bundle"), "--scope", "node")
    assert again.returncode in (0, 1, 2, 3)
    dry_bundle = user.kdoctor("fix", "--dry-run", "--bundle", str(home / "bundle"))
    assert dry_bundle.returncode in (0, 1), dry_bundle.stderr

    # fix: a dry run changes nothing; without a terminal every plan is declined
    dry = user.kdoctor("fix", "--dry-run", "--state-dir", str(home / "state"))
    assert dry.returncode in (0, 1), dry.stdout + dry.stderr
    state = home / "state" if user.name == "root" else Path("/var/lib/kdoctor")
    unattended = user.kdoctor("fix", "--state-dir", str(state))
    assert unattended.returncode in (0, 1, 3), unattended.stdout + unattended.stderr
    if user.name != "root":
        undo = user.kdoctor("undo")
        assert undo.returncode == 3 and undo.stderr.startswith("kdoctor: error: ")
    else:
        assert user.kdoctor("undo", "--state-dir", str(home / "state")).returncode == 3


def test_fix_as_a_non_root_user_refuses_with_the_reason() -> None:
    """Without root: the default state directory cannot be written (usage error), and a fix
    that runs systemctl is refused by its preflight before anything changes."""
    from tests.shims.fakesystemd import FakeSystemd

    home = Path(tempfile.mkdtemp(prefix="kdt-home-", dir="/tmp"))
    home.chmod(0o755)
    try:
        nobody = _unprivileged(home)
        proc = nobody.kdoctor("fix", "--yes")
        assert proc.returncode == 3, proc.stdout + proc.stderr
        error, hint = proc.stderr.strip().splitlines()
        assert error.startswith("kdoctor: error: ") and "/var/lib/kdoctor" in error
        assert "root" in hint and "--state-dir" in hint

        node = FakeSystemd(
            home / "node",
            {
                "docker": {"ActiveState": "active", "UnitFileState": "enabled"},
                "kubelet": {"ActiveState": "inactive", "UnitFileState": "disabled"},
            },
        )
        # The shim keeps its state, lock and log beside the node: nobody's calls use them too.
        node.base.chmod(0o777)
        for path in (node.log_file, node.state_file):
            path.chmod(0o666)
        state = home / "state"
        state.mkdir()
        os.chown(state, *_nobody_ids())
        proc = nobody.kdoctor(
            "fix", "node.services", "--yes", "--root", str(node.root), "--state-dir", str(state),
            extra_env=node.env(),
        )  # fmt: skip
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "refused" in proc.stdout and "root" in proc.stdout
        assert node.changes() == []
        assert not (state / "backups").exists() or not any((state / "backups").iterdir())
    finally:
        shutil.rmtree(home, ignore_errors=True)
