"""A hook module that fails as it is imported (tests/proxy/test_hooks.py)."""

raise RuntimeError("this module is broken")
