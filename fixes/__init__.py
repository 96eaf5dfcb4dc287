"""Fix actions: the only code in kdoctor that changes a node or a cluster.

A :class:`~fixes.base.Fix` is an ordered list of :class:`~fixes.base.Action` s. Each action
can describe itself exactly (for the dry-run plan), back up what it will change, apply, and
undo from its backup. The engine in :mod:`doctor.core.fixengine` drives them.
"""
