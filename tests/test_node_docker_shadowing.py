"""node.docker.drift: a setting defined in two places where one silently wins is reported,
naming both and the winner (systemd's and dockerd's precedence rules)."""

from __future__ import annotations

import shutil
from pathlib import Path

from checks.node_docker_drift import DockerDrift
from doctor.core.model import Severity, Status
from tests.conftest import BUNDLES, run_on_bundle

SHADOWED = BUNDLES / "docker-settings-shadowed"


def copy_bundle(src: Path, tmp_path: Path) -> Path:
    """A private copy, keeping the unit links as links (they point at node paths)."""
    dst = tmp_path / "b"
    shutil.copytree(src, dst, symlinks=True)
    return dst


def by_variable(result: object) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for finding in result.findings:  # type: ignore[attr-defined]
        name = finding.evidence.get("variable") or finding.evidence.get("setting")
        if "wins" in finding.evidence:
            out[str(name)] = {"message": finding.message, **finding.evidence}
            assert finding.severity is Severity.WARN
    return out


def test_two_dropins_setting_one_variable_the_last_name_wins() -> None:
    result = run_on_bundle(DockerDrift, SHADOWED)
    found = by_variable(result)["HTTP_PROXY"]
    assert found["message"] == (
        "HTTP_PROXY is set in /etc/systemd/system/docker.service.d/10-proxy.conf:2 and in "
        "/etc/systemd/system/docker.service.d/20-proxy.conf:3: drop-ins are read in lexical "
        "order of their names, the last one wins; dockerd gets 'http://proxy-b.lab:3128'"
    )
    assert found["wins"] == "/etc/systemd/system/docker.service.d/20-proxy.conf:3"


def test_environment_file_overrides_a_dropin_environment() -> None:
    result = run_on_bundle(DockerDrift, SHADOWED)
    found = by_variable(result)["HTTPS_PROXY"]
    assert found["wins"] == "/etc/sysconfig/docker:35"
    assert "systemd applies EnvironmentFile= after Environment=" in str(found["message"])
    assert str(found["message"]).endswith(
        "dockerd gets 'http://proxy-old.lab:3128' (from EnvironmentFile=/etc/sysconfig/docker)"
    )


def test_daemon_json_against_an_unpassed_sysconfig_flag() -> None:
    result = run_on_bundle(DockerDrift, SHADOWED)
    found = by_variable(result)["registry-mirrors"]
    assert found["wins"] == "/etc/docker/daemon.json:2"
    assert found["sysconfig"] == "/etc/sysconfig/docker:34"
    assert result.status is Status.WARN
    assert "set in two places: HTTP_PROXY (" in result.summary


def test_same_value_in_two_places_is_not_reported(tmp_path: Path) -> None:
    bundle = copy_bundle(SHADOWED, tmp_path)
    dropin = bundle / "host/etc/systemd/system/docker.service.d/20-proxy.conf"
    dropin.write_text('[Service]\nEnvironment="HTTP_PROXY=http://proxy-a.lab:3128"\n')
    assert "HTTP_PROXY" not in by_variable(run_on_bundle(DockerDrift, bundle))


def test_credentials_in_a_shadowed_proxy_are_masked(tmp_path: Path) -> None:
    bundle = copy_bundle(SHADOWED, tmp_path)
    dropin = bundle / "host/etc/systemd/system/docker.service.d/20-proxy.conf"
    dropin.write_text('[Service]\nEnvironment="HTTP_PROXY=http://bob:s3cret@proxy-b.lab:3128"\n')
    result = run_on_bundle(DockerDrift, bundle)
    assert "s3cret" not in repr(result.findings) and "s3cret" not in result.summary
