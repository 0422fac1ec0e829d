"""Gateway keys: who may call the gateway, with which providers and models, how often and for how much.

The model and its admin, the secrets (hashes only) and stored provider credentials (encrypted),
the limit store shared by every worker and host, and the limits themselves. The proxy asks this
app (proxy/access.py, proxy/key_policy.py); this app reads the log (logs.models) for tokens and
spend, and never imports the proxy.
"""
