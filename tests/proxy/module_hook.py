"""A hook that is a module, imported by nothing but GATEWAY_HOOKS (tests/proxy/test_hooks.py)."""


def on_request(exchange):
    exchange.metadata["by"] = "a module"
