"""The hold queue: a switch, and requests held until an operator (or the timeout) decides.

State lives in the database, so every worker and host sees the same switch and the same
decisions: proxy/hold.py (the HoldStep) polls it while a request waits. This app never imports
the proxy; the admin pages, the `hold` command and the proxy all go through services.py and
selectors.py.
"""
