"""Execution engines beyond one machine (see :mod:`shadowlab.engine` for the summary contract)."""
