"""Version of the ``runbook`` distribution."""

__version__ = "0.1.0"
