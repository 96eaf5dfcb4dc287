"""Built-in checks: one module per check, found automatically (see doctor.core.registry).

Modules here must not import ``kubernetes`` or ``textual`` at import time: discovery imports
every module, and node-only runs must stay fast.
"""
