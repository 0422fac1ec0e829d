"""Mock upstreams and media shared by the tests, the benchmark and seed_logs (never by the gateway itself)."""
