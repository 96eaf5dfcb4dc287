"""kdoctor: a doctor for Kubernetes nodes and clusters."""

__version__ = "0.1.0"
