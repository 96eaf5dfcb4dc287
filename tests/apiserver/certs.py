"""A throwaway CA and serving certificate made with the openssl CLI.

Clients verify the server against the kubeconfig's CA exactly as they would a real cluster,
so TLS code paths (CA files, SANs, hostname checks) are exercised too.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

_SERVER_EXT = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost, DNS:kubernetes, DNS:kubernetes.default, \
DNS:kubernetes.default.svc
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""


@dataclass(frozen=True)
class CertFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path


def _run(args: list[str]) -> None:
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} failed: {proc.stderr.strip()}")


def generate(directory: Path) -> CertFiles:
    """Write ca.crt, server.crt and server.key (EC P-256, valid ten years) into DIRECTORY."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl command is needed to make the test server's certificate")
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ext = directory / "server.ext"
    ext.write_text(_SERVER_EXT)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca_ext = ["-addext", "basicConstraints=critical,CA:TRUE"]
    ca_ext += ["-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"]
    out = ["-keyout", str(ca_key), "-out", str(ca_crt)]
    _run(
        [
            openssl,
            "req",
            "-x509",
            *ec,
            *out,
            "-days",
            "3650",
            "-subj",
            "/CN=kdoctor-test-ca",
            *ca_ext,
        ]
    )
    _run(
        [
            openssl,
            "req",
            "-new",
            *ec,
            "-keyout",
            str(key),
            "-out",
            str(csr),
            "-subj",
            "/CN=kube-apiserver",
        ]
    )
    signer = ["-CA", str(ca_crt), "-CAkey", str(ca_key), "-set_serial", "2", "-days", "3650"]
    _run(
        [openssl, "x509", "-req", "-in", str(csr), *signer, "-out", str(crt), "-extfile", str(ext)]
    )
    return CertFiles(ca_crt, crt, key)


_shared: CertFiles | None = None
_shared_lock = threading.Lock()


def shared() -> CertFiles:
    """One CA and certificate per process: making them costs more than a whole test."""
    global _shared
    with _shared_lock:
        if _shared is None or not _shared.ca_cert.exists():
            directory = Path(tempfile.mkdtemp(prefix="kdoctor-apiserver-pki-"))
            atexit.register(shutil.rmtree, directory, True)
            _shared = generate(directory)
        return _shared
