"""Fake executables for tests (put this directory first on PATH) and their Python handles."""
