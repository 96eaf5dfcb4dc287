"""Judgement shared by several checks: walking packets through netfilter chains, finding the
cause of a stuck pod. Reads parsed facts; changes nothing."""
