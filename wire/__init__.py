"""Wire formats the gateway reads without any provider's or Django's help: SSE, multipart, JSON, byte ranges."""
