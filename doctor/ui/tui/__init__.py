"""``kdoctor tui``: the interactive fixer (Textual).

Only ``doctor.ui.cli.cmd_tui`` imports this package, so node-only ``check`` runs never load
textual. The pieces without textual (filters, plan colouring, the target and fix plumbing)
live in :mod:`doctor.ui.tui.logic` and :mod:`doctor.ui.tui.backend` and are tested on their own.
"""
