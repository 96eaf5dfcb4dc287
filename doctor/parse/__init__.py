"""Parsers: pure text -> data (iptables-save, systemd units, registry auth, ...).

No I/O and no knowledge of checks: a parser gets text and names its source, and raises
:class:`doctor.core.errors.FactError` with the file and line when the text is broken.
"""
