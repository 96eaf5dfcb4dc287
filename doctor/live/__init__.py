"""Acting on the live network and cluster for a check: DNS queries, probe pods, exec."""
