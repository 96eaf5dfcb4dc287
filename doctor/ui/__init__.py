"""What a person uses: the command line (:mod:`doctor.ui.cli`), the text report
(:mod:`doctor.ui.text`) and the interactive fixer (:mod:`doctor.ui.tui`).

Inside this layer imports run text < tui < cli: the TUI never imports the CLI.
"""
