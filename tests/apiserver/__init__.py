"""A protocol-faithful fake Kubernetes API server for tests and benchmarks.

with ApiServer("fixtures/bundles/apiserver-sample") as server:
    server.write_kubeconfig(tmp / "kubeconfig")
    ...  # point kubectl or the kubernetes client at it
"""

from .faults import Fault, FaultSet
from .server import ApiServer, RequestRecord

__all__ = ["ApiServer", "Fault", "FaultSet", "RequestRecord"]
