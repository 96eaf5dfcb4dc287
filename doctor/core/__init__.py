"""The core: the model, the check registry and runner, the report, the fix engine.

The bottom layer: it imports nothing of the other layers, of ``checks/``, ``fixes/`` or the UI.
What checks read (:mod:`doctor.core.sources`) and what fixes are (:mod:`doctor.core.fix`) are
defined here as interfaces; the layers above implement them.
"""
