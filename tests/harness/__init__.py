"""Reusable test harness: real OpenSSH servers on 127.0.0.1 and SSH hosts in network namespaces.

Register the fixtures with ``pytest_plugins = ["harness.sshd"]`` in ``tests/conftest.py``.
Everything started here is a direct child process, stopped by PID at teardown.
"""
