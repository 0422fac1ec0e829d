"""The gateway's own request tags: X-Gateway-User, X-Gateway-Session-Id and X-Gateway-Meta-<Name> headers.

A client names the end user, the session (a conversation, an agent run) and any metadata in
these headers; the proxy keeps them out of the upstream request (proxy/steps.py TagsStep) and
the log stores them on the request row, together with what the provider's own body fields say
(Provider.request_tags). The headers win where both name something. No Django here.
"""

from providers import RequestTags

USER_HEADER = "x-gateway-user"
SESSION_HEADER = "x-gateway-session-id"
META_PREFIX = "x-gateway-meta-"
META_MAX = 64  # metadata entries kept per request
VALUE_MAX = 255  # the user and session columns' size; metadata values are cut to it too


def tag_header(name: str) -> bool:
    """Whether a header is one of the gateway's tag headers (never sent upstream)."""
    name = name.lower()
    return name in (USER_HEADER, SESSION_HEADER) or (name.startswith(META_PREFIX) and len(name) > len(META_PREFIX))


def tags_from_headers(headers: list) -> RequestTags:
    """The tags a request's headers carry ([name, value] pairs; metadata names lowercased, as HTTP/2 sends them)."""
    user = session = None
    metadata: dict[str, str] = {}
    for name, value in headers:
        low = name.lower()
        value = _utf8(value).strip()[:VALUE_MAX]
        if not value:
            continue
        if low == USER_HEADER:
            user = value
        elif low == SESSION_HEADER:
            session = value
        elif low.startswith(META_PREFIX) and len(low) > len(META_PREFIX) and len(metadata) < META_MAX:
            metadata[low[len(META_PREFIX):][:64]] = value
    return RequestTags(user=user, session=session, metadata=metadata)


def _utf8(value: str) -> str:
    """A header value as its sender wrote it: HTTP carries bytes, read as latin-1; a client sending a name
    like "Jürgen" sends it as UTF-8 ("JÃ¼rgen" read so). Values that are not UTF-8 stay as read."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def tags_merge(headers: RequestTags, body: RequestTags | None) -> RequestTags:
    """The headers' tags, completed by the body's (the headers win on each name)."""
    if body is None:
        return headers
    metadata = {**body.metadata, **headers.metadata}
    return RequestTags(user=headers.user or body.user, session=headers.session or body.session,
                       metadata=dict(list(metadata.items())[:META_MAX]))
