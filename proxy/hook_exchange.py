"""What a request hook sees (GATEWAY_HOOKS): one request on its way upstream, and later its answer.

A plain object with the fields the hook API documents (docs/hooks.md). It is built from the
Exchange but never is one: hooks change copies, and proxy/hooks.py applies what changed (and
logs it) once the hooks have run. The body is read and parsed only when a hook asks for it.
"""

import json
from typing import Any
from urllib.parse import unquote

from django.http import HttpResponse

from providers.base import json_bytes
from proxy.exchange import Exchange
from proxy.request_body import READ_DECODED_MAX, body_decoded, body_payload, headers_for_json
from proxy.session_policy import model_in_first_message

_UNSET = object()


def metadata_copy(metadata: dict[str, Any]) -> dict[str, Any]:
    """The metadata with every dict and list in it copied, all the way down (anything else, shared: what the log
    keeps of it is its text). Each is copied in one C call, so a hook still writing into it from its thread
    cannot break the copy: its write lands in the copy or not at all. Without recursion: a hook may keep a
    request's JSON there, as deep as json.loads reads; a container held twice (or holding itself) is copied once."""
    copies: dict[int, tuple[Any, Any]] = {}  # id of an original -> (it, kept alive so its id stays its own; its copy)
    pending: list[Any] = []

    def copied(value: Any) -> Any:
        kind = type(value)
        if kind is not dict and kind is not list:
            return value
        if id(value) not in copies:
            copy = kind(value)
            copies[id(value)] = (value, copy)
            pending.append(copy)
        return copies[id(value)][1]

    top = copied(metadata)
    while pending:
        copy = pending.pop()
        for k, v in (copy.items() if type(copy) is dict else enumerate(copy)):
            copy[k] = copied(v)  # a key's value replaced, none added: iterating on is safe
    return top


class HookExchange:
    """One exchange as hooks see it; every request field is assignable, the answer's body too."""

    def __init__(self, x: Exchange) -> None:
        self._x = x
        self.request_id: str = x.request_id
        self.provider: str = x.provider.name
        self.method: str = x.method
        self.path: str = x.route.upstream_path  # the path upstream, still percent-encoded
        self.query: str = x.query
        # What goes upstream (hop-by-hop headers and the gateway key already left out).
        self.headers: list[tuple[str, str]] = list(x.forward_headers)
        key = x.gateway_key
        self.gateway_key: str | None = key.name if key is not None else None
        self.websocket: bool = x.websocket  # a realtime session's upgrade: no body, its model in the query or later
        # Its model comes in its first message (Gemini Live): None in on_request, on_session_model sees it.
        self.model_in_first_message: bool = model_in_first_message(x)
        self._session_model: Any = _UNSET  # what the message judged asks for (on_session_model)
        self.metadata: dict[str, Any] = {}
        self._body: Any = _UNSET
        self._json: Any = _UNSET
        self.json_handed = False  # a hook asked for the parsed body (it may change it in place)
        self.body_changed = False
        self.body_was_decoded = False  # the body shown is the request's, its Content-Encoding undone
        # The answer (on_response only).
        self.status: int | None = None
        self.response_headers: list[tuple[str, str]] = []
        self.streamed = False
        self._response_body: bytes | None = None
        self.response_body_changed = False

    # --- the request body, read on first use
    @property
    def body(self) -> bytes:
        """The body that goes upstream (bytes); assign bytes to replace it."""
        if self._body is _UNSET:
            x = self._x
            raw = x.forward_body if x.forward_body is not None else (x.body.read_all() if x.body.size else b"")
            # A compressed body is shown decoded (a hook masking a prompt must see the prompt); one that cannot
            # be decoded, or decodes past READ_DECODED_MAX (a few KB of zstd from anyone), is shown as it is.
            decoded = body_decoded(self.headers, raw, READ_DECODED_MAX) if raw else raw
            self._body = decoded if decoded is not None else raw
            self.body_was_decoded = decoded is not None and decoded is not raw
        return self._body

    @body.setter
    def body(self, value: bytes | bytearray | str) -> None:
        if isinstance(value, str):
            value = value.encode("utf-8")
        if not isinstance(value, (bytes, bytearray)):
            raise TypeError(f"body must be bytes, not {type(value).__name__}")
        self._body, self._json, self.body_changed = bytes(value), _UNSET, True

    @property
    def json(self) -> Any:
        """The body parsed as JSON, or None when it is not JSON; assigning replaces the body."""
        self.json_handed = True  # a hook may change it in place: proxy/hooks.py compares it with the body after
        return self._parsed()

    def _parsed(self) -> Any:
        if self._json is _UNSET:
            try:
                self._json = json.loads(self.body) if self.body else None
            except (ValueError, RecursionError):
                self._json = None
        return self._json

    @json.setter
    def json(self, value: Any) -> None:
        try:
            json.dumps(value, allow_nan=False)  # NaN and Infinity are no JSON: an upstream would refuse them
        except ValueError as exc:
            raise ValueError(f"json must be JSON: {exc}") from None
        self.body = json_bytes(value)
        self._json = value
        try:  # a form's type would tell the upstream to read a form
            fixed = headers_for_json(self.headers)
        except (TypeError, ValueError):  # headers the hook left malformed: proxy/hooks.py says what is wrong
            return
        if fixed == list(self.headers):
            return
        if isinstance(self.headers, list):
            self.headers[:] = fixed  # in place: a hook may hold the list it appends to
        else:
            self.headers = fixed

    def json_edits_take(self) -> None:
        """The parsed body a hook changed in place (`exchange.json["model"] = ...`) becomes the body, as if assigned."""
        if not self.json_handed:
            return
        self.json_handed = False
        if self._json is _UNSET or self._json is None or self.body_changed:
            return
        try:
            same = self._json == json.loads(self.body)
        except (ValueError, RecursionError):
            same = True
        if not same:
            self.json = self._json

    def _payload(self) -> Any:
        payload = self._parsed()
        if payload is None and self.body:
            content_type = next((v for k, v in self.headers if k.lower() == "content-type"), "")
            payload = body_payload(self.body, content_type)
        return payload

    @property
    def model(self) -> str | None:
        """The model the request names (in its body or path, as the provider puts it; a form's model field; a
        realtime session's in its query, or, for one that names it in its first message as Gemini Live does, None
        in on_request; in on_session_model, the model the message judged asks for)."""
        if self._session_model is not _UNSET:
            return self._session_model
        if self.websocket:
            return self._x.provider.realtime_model(unquote(self.path), self.query)
        return self._x.provider.request_model(unquote(self.path), self._payload())

    @property
    def batch_models(self) -> list[str | None] | None:
        """Every model a batch's requests name (None for one that names none; [] when they are in an
        uploaded file, which the gateway does not read), or None when the request is no batch."""
        return self._x.provider.batch_models(unquote(self.path), self._payload())

    def session_model_set(self, model: str | None) -> None:
        """The model a realtime session's client message asks for (None: none, or not for sure), for
        on_session_model."""
        self._session_model = model

    def error_answer(self, status: int, message: str, *, kind: str = "invalid_request_error") -> HttpResponse:
        """An error answer in the provider's own shape (its SDK raises its usual error): return it from on_request."""
        body = self._x.provider.error_body(message, kind=kind, status=status)
        return HttpResponse(body, status=status, content_type="application/json")

    # --- the answer (on_response)
    @property
    def response_body(self) -> bytes | None:
        """The answer's body (decoded) when it was not streamed, else None; assign bytes to replace it."""
        return self._response_body

    @response_body.setter
    def response_body(self, value: bytes | bytearray | str) -> None:
        if self.streamed or self._response_body is None:
            raise ValueError("a streamed answer (or one over HOOKS_RESPONSE_MAX_BYTES) cannot be replaced")
        if isinstance(value, str):
            value = value.encode("utf-8")
        if not isinstance(value, (bytes, bytearray)):
            raise TypeError(f"response_body must be bytes, not {type(value).__name__}")
        self._response_body, self.response_body_changed = bytes(value), True

    def detached(self, response_body: bytes | None = None) -> "HookExchange":
        """A fresh copy for the hooks after one that failed: the request as the Exchange holds it (what the hooks
        before it changed is applied there), the metadata so far, the answer with `response_body`. A hook that
        timed out may still be running in its thread and writing here, into the metadata's lists and dicts too:
        nothing reads this object, or any of them, any more."""
        fresh = HookExchange(self._x)
        fresh.metadata = metadata_copy(self.metadata)
        fresh._session_model = self._session_model
        if self.status is not None:
            fresh.answer_set(self.status, self.response_headers, None if self.streamed else response_body)
        return fresh

    def answer_set(self, status: int, headers: list[tuple[str, str]], body: bytes | None) -> None:
        """Fill in the answer before on_response runs (body None: streamed, observe only)."""
        self.status, self.response_headers = status, list(headers)
        self.streamed, self._response_body = body is None, body
