"""OpenAI-compatible servers (Groq, Ollama, vLLM, Together, ...), declared as GATEWAY_PROVIDERS entries."""

import re
from urllib.parse import urlsplit

from providers.base import base_url_tail
from providers.openai import OpenAI

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class Compatible(OpenAI):
    """An OpenAI-compatible server mounted at /{name}/v1/*; its base URL comes from configuration."""

    upstream_env = ""
    # OpenAI's, and the rerank and score endpoints of vLLM, Together, Jina..., named in the body.
    model_posts = re.compile(r"^/v1/(?:rerank|score)/?$|" + OpenAI.model_posts.pattern)

    def __init__(self, name: str, base_url: str) -> None:
        self.name = self.label = name
        # Priced by genai-prices when the name is one of its providers (groq, together, mistral...).
        self.prices_id = name
        self.prefixes = (f"/{name}/v1/",)
        self.upstream_default = base_url


def _port_valid(url: str) -> bool:
    """Whether the URL's port, if it has one, is a number up to 65535 (else every request was a 500)."""
    try:
        urlsplit(url).port
    except ValueError:
        return False
    return True


def compatible_parse(entries: tuple[str, ...], taken: frozenset[str]) -> tuple[Compatible, ...]:
    """Providers from "name=https://host/base" entries; ValueError naming the bad entry."""
    out: list[Compatible] = []
    for entry in entries:
        if not entry.strip():
            continue
        name, sep, url = entry.strip().partition("=")
        name, url = name.strip().lower(), url.strip()
        if not sep or not NAME_RE.match(name) or not url.startswith(("http://", "https://")) or not _port_valid(url):
            raise ValueError(f"GATEWAY_PROVIDERS entry {entry!r} must look like name=https://host/base, a port if "
                             "any a number to 65535 (name: letters (read as lowercase), digits, - or _)")
        if name in taken or any(p.name == name for p in out):
            raise ValueError(f"GATEWAY_PROVIDERS: the name {name!r} is already taken")
        if tail := base_url_tail(url):
            raise ValueError(f"GATEWAY_PROVIDERS entry {entry.strip()!r}: a base URL cannot hold {tail[0]} (it would "
                             "sit inside every request's path; the client's own query string is forwarded as sent)")
        provider = Compatible(name, url)
        if provider.base_url_version(url):
            # Every server's documentation gives its base URL with /v1; the gateway adds it.
            parts = urlsplit(url)
            base = parts._replace(path=parts.path.rstrip("/")[:-3]).geturl()
            raise ValueError(f"GATEWAY_PROVIDERS entry {entry.strip()!r}: leave /v1 out of the URL, the gateway "
                             f"adds it (/{name}/v1/... goes to {base}/v1/...): {name}={base}")
        out.append(provider)
    return tuple(out)
