"""What every provider module defines: the Provider interface, with the defaults most providers share.

A provider answers two kinds of question. How requests reach it: route prefixes, the upstream
base URL, where the client puts its credential, the shape of its error bodies. How its traffic
reads: the model a request names, whether it asked for a stream, the usage an answer reports,
how a stream's events add up to the answer, which event first carries content, the
conversation a payload holds, files embedded in answers or pointed to by them, and how its
model names map onto price-table entries.
"""

import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, unquote_plus, urlsplit

Payload = Any  # parsed JSON: dict, list, str, number, bool or None
StreamEvent = tuple[str | None, Payload]  # (SSE event name, its data parsed as JSON, None when not JSON)
Turn = dict[str, Any]  # one conversation turn: {"role", "parts": [...], "reply"?, "finish"?}


@dataclass(frozen=True)
class Usage:
    """Model and token counts of one answer, with one meaning across providers.

    input_tokens: every prompt token, cached ones included; cached_tokens: the part read from a
    prompt cache; output_tokens: every generated token, reasoning included (that is how they are
    billed); reasoning_tokens: the part spent thinking; total_tokens: as reported, else
    input + output. Anything the provider did not report is None, never 0.
    For pricing only (not columns of the log): cache_write_tokens, the part of the input written
    to a prompt cache (billed at a premium); price_counts, the counts genai-prices prices apart,
    by its own usage keys (PRICE_COUNT_KEYS: audio and image tokens, which cost several times
    text; 1-hour cache writes; web searches), each a part of a count above or a count of its own;
    and price_context, what selects a price variant in genai-prices (("service_tier", "flex"),
    ("processing", "batch")).
    refused: the counts the provider reported that are not token counts (negative, or past MAX_COUNT), as
    "name (why)": each is None here, and the exchange's cost is unknown (logs/pricing says why on its row).
    """

    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    total_tokens: int | None = None
    cache_write_tokens: int | None = None
    price_counts: tuple[tuple[str, int], ...] = ()
    price_context: tuple[tuple[str, str], ...] = ()
    refused: tuple[str, ...] = ()


SUBPROTOCOL_HEADER = "sec-websocket-protocol"
USAGE_FIELDS = ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens", "total_tokens")
# genai-prices' usage keys the providers report beside the columns (Usage.price_counts): the parts of the
# input, cached input and output that were audio or images, the part of a cache write kept an hour, and
# server-side web searches (counted apart from tokens).
PRICE_COUNT_KEYS = ("input_audio_tokens", "cache_audio_read_tokens", "output_audio_tokens", "input_image_tokens",
                    "output_image_tokens", "cache_write_1h_tokens", "web_searches")
# Every count a Usage has: the log's columns, then those only its price needs (a realtime session sums them all).
COUNT_FIELDS = (*USAGE_FIELDS, "cache_write_tokens", *PRICE_COUNT_KEYS)


# The most tokens one count may hold: a billion is far past any model's context or output, and keeps input + output
# within the log's token columns (32-bit integers on PostgreSQL, which refuses a larger one, and the row with it).
MAX_COUNT = 10**9


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT else None


def _refusal(name: str, value: Any) -> str | None:
    """Why a reported integer is not a token count ("input_tokens (negative)"), None when it is one or is no
    integer (a count the provider did not report, or reported as another type, is unknown without a note)."""
    if not isinstance(value, int) or isinstance(value, bool) or _count(value) is not None:
        return None
    return f"{name} ({'negative' if value < 0 else f'over {MAX_COUNT:,}'})"


def usage_make(model: Any, inp: int | None, out: int | None, cached: int | None = None,
               reasoning: int | None = None, total: int | None = None, *, cache_write: int | None = None,
               priced: dict[str, int | None] | None = None,
               price_context: tuple[tuple[str, str], ...] = (),
               parts: dict[str, dict[str, int | None]] | None = None) -> Usage:
    """A Usage, with the total filled in when both parts are known; priced: PRICE_COUNT_KEYS' counts
    (those reported; None and non-counts left out). A count that is negative or past MAX_COUNT is None and
    named in `refused`: stored, it would make a negative or absurd cost, or a row the database refuses. parts:
    the figures, by the provider's names, that a count adds up, by the count's name ({"input_tokens": {...}}): a
    refused one makes its count unknown (a negative one could hide in the sum)."""
    reported = {"input_tokens": inp, "output_tokens": out, "cached_tokens": cached, "reasoning_tokens": reasoning,
                "total_tokens": total, "cache_write_tokens": cache_write, **(priced or {})}
    refused: tuple[str, ...] = ()
    for count, figures in (parts or {}).items():
        wrong = tuple(why for k, v in figures.items() if (why := _refusal(k, v)) is not None)
        if wrong:
            refused, reported[count] = refused + wrong, None
    refused += tuple(why for k, v in reported.items() if (why := _refusal(k, v)) is not None)
    inp, out, cached, reasoning, total, cache_write = (_count(reported[k]) for k in (*USAGE_FIELDS,
                                                                                     "cache_write_tokens"))
    if reported["total_tokens"] is None and inp is not None and out is not None:  # a refused total stays unknown
        total = inp + out
    name = model[:255] if isinstance(model, str) and model else None
    counts = tuple((k, v) for k in PRICE_COUNT_KEYS if (v := _count((priced or {}).get(k))) is not None)
    return Usage(name, inp, out, cached, reasoning, total, cache_write_tokens=cache_write, price_counts=counts,
                 price_context=price_context, refused=refused)


def usage_counts(model: Any, counts: dict) -> Usage:
    """A Usage of stored counts (a realtime session's sums, COUNT_FIELDS); anything not a count is None."""
    return usage_make(model, *(_count(counts.get(f)) for f in USAGE_FIELDS[:2]), _count(counts.get("cached_tokens")),
                      _count(counts.get("reasoning_tokens")), _count(counts.get("total_tokens")),
                      cache_write=_count(counts.get("cache_write_tokens")), priced=counts)


def usage_count_items(usage: Usage) -> dict[str, int]:
    """Every count a Usage has, by COUNT_FIELDS' names (None left out): what a realtime session sums."""
    items = {name: getattr(usage, name) for name in (*USAGE_FIELDS, "cache_write_tokens")}
    return {**{k: v for k, v in items.items() if v is not None}, **dict(usage.price_counts)}


def int_of(obj: Any, *keys: str) -> int | None:
    """The first of `keys` holding an int in a dict (bools excluded), else None."""
    if not isinstance(obj, dict):
        return None
    for key in keys:
        value = obj.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def sub(obj: Any, key: str) -> Any:
    """obj[key] when obj is a dict, else None."""
    return obj.get(key) if isinstance(obj, dict) else None


def str_of(obj: Any, key: str) -> str | None:
    """obj[key] when it is a non-empty string (cut to 255 characters), else None."""
    value = sub(obj, key)
    return value[:255] if isinstance(value, str) and value else None


def strings_of(obj: Any, limit: int = 64) -> dict[str, str]:
    """The string (and number) values of a dict as strings, at most `limit` of them, each cut to 255."""
    if not isinstance(obj, dict):
        return {}
    out: dict[str, str] = {}
    for key, value in obj.items():
        if len(out) >= limit:
            break
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and str(key):
            out[str(key)[:64]] = str(value)[:255]
    return out


@dataclass(frozen=True)
class RequestTags:
    """Who a request is made for and what it belongs to: the end user, the session, free metadata.

    Read from the gateway's own headers (logs/tags.py) and from what a provider's request body
    says (Provider.request_tags); None / {} when nothing says.
    """

    user: str | None = None
    session: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class EmbeddedFile:
    """A file carried inside a JSON answer (a base64 image), to be stored apart from the body.

    The log stores `data` as a file and sets holder[key] to a reference to it, so the logged
    body keeps its shape without the base64 text.
    """

    label: str  # stable within the answer ("image0"): names the stored file on a replay too
    content_type: str
    data: bytes
    holder: dict | list
    key: str | int  # an index when the holder is a list (a Replicate output's items)


@dataclass
class AudioChunk:
    """Base64 audio inside a realtime event; the log stores it in a file and leaves a reference."""

    track: str  # "input" (what the client speaks) or "output" (what the model speaks)
    holder: dict
    key: str  # holder[key] is the base64 text


@dataclass
class RealtimeRead:
    """What one realtime (WebSocket) event means for the log."""

    audio: list[AudioChunk] = field(default_factory=list)
    ends: list[str] = field(default_factory=list)  # tracks whose current audio file this event completes
    formats: dict[str, tuple[str, int]] = field(default_factory=dict)  # track -> (codec, sample rate)
    usage: "Usage | None" = None  # a completed response's usage
    model: str | None = None
    # A client's event asking for a model (OpenAI's session.update, Gemini Live's setup): a key limited to models or
    # with a budget checks it before it goes upstream.
    asks_model: str | None = None


class UsageUnknowable(ValueError):
    """usage_inject cannot tell whether a request streams, so whether its answer will report usage: the message
    says why (a key counting spend or tokens is refused it, proxy/steps.py)."""


class Provider:
    """One provider. Subclasses override what differs; everything here is OpenAI-like."""

    name: str = ""
    label: str = ""  # for people: "OpenAI"
    prefixes: tuple[str, ...] = ()  # gateway paths it serves, e.g. ("/anthropic/v1/",)
    upstream_prefix: str = "/v1/"  # what replaces the matched prefix upstream
    upstream_env: str = ""  # the environment variable holding its upstream base URL
    upstream_default: str = ""
    # API versions its clients put at the start of every path: an upstream base URL that ends in one sent
    # every call to .../v1/v1/... (a 404 from the upstream that said nothing of why).
    path_versions: tuple[str, ...] = ("v1",)
    credential_headers: tuple[str, ...] = ("authorization",)  # lowercase
    credential_query: tuple[str, ...] = ()
    # Request headers besides the body that change what the upstream answers or whose account answers
    # (lowercase): the response cache keeps answers apart by them (proxy/cache.py).
    answer_headers: tuple[str, ...] = ("openai-organization", "openai-project", "openai-beta")
    # WebSocket subprotocols that carry a credential after this prefix (lowercase), where a browser,
    # which cannot set headers on a WebSocket, puts its key.
    credential_subprotocols: tuple[str, ...] = ()
    prices_id: str | None = None  # its provider id in the genai-prices library; None: not priced there
    # Answer headers that hand the client a URL of the upstream to call next (lowercase): pointed at the
    # gateway instead, so that call is proxied and logged too (Gemini's resumable upload).
    link_headers: tuple[str, ...] = ()
    # JSON fields of an answer (top level, or of the items of its `data` list) that do the same, in the
    # answers to the upstream paths starting with link_paths (each such answer is relayed whole).
    link_fields: tuple[str, ...] = ()
    link_paths: tuple[str, ...] = ()
    # POSTs (upstream paths) that create or change an object the upstream keeps: a replayed answer would
    # name an object made for another call (a batch, an upload, a job, an expired session secret), or
    # nothing would be cancelled. The response cache never answers or stores them.
    stateful_posts: "re.Pattern[str] | None" = None
    # POSTs (upstream paths, percent-decoded) that run a model the request may leave unnamed, the upstream
    # then choosing one (OpenAI's images default to a model of their own, a thread's run takes its
    # assistant's): a key limited to models refuses such a request when it names none.
    model_posts: "re.Pattern[str] | None" = None
    # POSTs (upstream paths, percent-decoded) known to run no model: uploads, cancels, objects kept upstream, the
    # administration API. With model_posts and a model named in the path, these are the POSTs the gateway knows the
    # model of; any other (an endpoint the upstream added since) may run any model, at any price, and is refused to
    # a key limited to models or with a budget (fail closed).
    free_posts: "re.Pattern[str] | None" = None
    # POSTs (upstream paths, percent-decoded) whose model use never comes in an answer the gateway logs: batches
    # (their results come later, as a file), fine-tuning jobs (training is billed apart), ephemeral client
    # secrets (their holder calls the upstream directly). A key counting spend or tokens is refused them.
    unmetered_posts: "re.Pattern[str] | None" = None
    # POSTs whose answer reports its usage in some formats only (a transcription asked for plain text reports
    # none): usage_withheld reads the request to say whether this one's will.
    usage_format_posts: "re.Pattern[str] | None" = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    # --- reaching it
    def prefix_of(self, path: str) -> str | None:
        """The prefix of this provider that claims a gateway path, or None."""
        for prefix in self.prefixes:
            if path.startswith(prefix):
                return prefix
        return None

    def upstream_path(self, path: str) -> str | None:
        """The upstream path for a gateway path, or None when no prefix of this provider claims it."""
        prefix = self.prefix_of(path)
        return None if prefix is None else self.upstream_prefix + path[len(prefix):]

    def base_url_version(self, url: str) -> str | None:
        """The API version an upstream base URL wrongly ends with ("/v1"), or None when it is usable."""
        last = urlsplit(url).path.rstrip("/").rpartition("/")[2]
        return f"/{last}" if last in self.path_versions else None

    def credential(self, headers: list[tuple[str, str]], query: str = "") -> str:
        """The client's credential (the token, without its scheme), or ""."""
        for name, value in headers:
            if name.lower() in self.credential_headers:
                return value.split(" ", 1)[-1].strip()
        for name, value in headers:
            if name.lower() == SUBPROTOCOL_HEADER and (found := self.subprotocol_credential(value)):
                return found
        if self.credential_query and query:
            for name, value in parse_qsl(query):
                if name in self.credential_query:
                    return value
        return ""

    def subprotocol_credential(self, value: str) -> str:
        """The credential a Sec-WebSocket-Protocol value carries (a browser's key), or ""."""
        for entry in value.split(",") if self.credential_subprotocols else ():
            entry = entry.strip()
            for prefix in self.credential_subprotocols:
                if entry.lower().startswith(prefix) and len(entry) > len(prefix):
                    return entry[len(prefix):]
        return ""

    def subprotocols_without_credential(self, value: str) -> str:
        """A Sec-WebSocket-Protocol value without its credential entries (another credential goes upstream)."""
        return ", ".join(e.strip() for e in value.split(",")
                         if not any(e.strip().lower().startswith(p) for p in self.credential_subprotocols))

    def query_without_credential(self, query: str) -> str:
        """A query string without the client's credential parameters (another credential goes upstream), the
        rest as sent."""
        if not self.credential_query or not query:
            return query
        return "&".join(p for p in query.split("&") if unquote_plus(p.partition("=")[0]) not in self.credential_query)

    def credential_pair(self, credential: str) -> tuple[str, str]:
        """The header that carries a credential to this provider (a gateway key's stored one)."""
        return "Authorization", f"Bearer {credential}"

    def error_body(self, message: str, *, kind: str = "gateway_error", status: int = 500) -> bytes:
        """An error answer in this provider's own shape, so its SDK raises its usual exception."""
        return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": None}}).encode()

    def stream_ended(self, tail: bytes) -> bool:
        """Whether a stream whose last bytes relayed were these had sent its final event (a client
        may hang up on it before the upstream's end of body comes): OpenAI's `data: [DONE]`, the
        Responses API's terminal events."""
        return tail.rstrip().endswith(b"data: [DONE]") or any(
            end in tail for end in (b"response.completed", b"response.failed", b"response.incomplete"))

    def stream_cut(self, tail: bytes, result: Payload) -> bool:
        """Whether a stream the upstream ended cleanly (its end of body came, no error) still lacks what ends
        its answer, so the answer may be incomplete (tail: its last bytes; result: stream_reassemble's). Only
        a provider that can tell says so: by default nothing is claimed."""
        return False

    def stream_error_event(self, message: str) -> bytes:
        """The last event of a stream the upstream broke off, in this provider's shape, so its SDK raises its
        usual error: `event: error` with the error body of a 502 (OpenAI's SDK and Anthropic's read it so)."""
        return b"event: error\ndata: " + self.error_body(message, kind=self.error_kind(502), status=502) + b"\n\n"

    def error_text(self, answer: Payload) -> str | None:
        """The message of an error answer ({"error": {"message": ...}}, or {"error": "..."}), for the log's lists."""
        error = sub(answer, "error")
        return error[:500] if isinstance(error, str) and error else str_of(error, "message")

    def failure_text(self, answer: Payload) -> str | None:
        """What failed, when a successful (2xx) answer reports work that failed, for the log's lists; else None.
        Most providers answer a failure with an error status: a 200 holding an `error` object is not one."""
        return None

    def error_kind(self, status: int) -> str:
        """The error type this provider gives a status of its own (its SDK raises by status)."""
        return "server_error" if status >= 500 else "invalid_request_error"

    def content_policy_answer(self, endpoint: str, query: str, payload: Payload) -> tuple[int, str, bytes]:
        """What the provider answers when its safety system refuses a prompt: (status, content type, body).

        OpenAI's: a 400 whose code is content_policy_violation (its SDK raises BadRequestError).
        """
        body = {"error": {"message": "Your request was rejected as a result of our safety system. Your prompt may "
                                     "contain text that is not allowed by our safety system.",
                          "type": "invalid_request_error", "param": None, "code": "content_policy_violation"}}
        return 400, "application/json", json.dumps(body).encode()

    # --- reading its requests
    def request_model(self, endpoint: str, payload: Payload) -> str | None:
        """The model a request asks for."""
        return str_of(payload, "model")

    def model_runs(self, method: str, endpoint: str) -> bool:
        """Whether the request runs a model (model_posts), named in it or not."""
        return method == "POST" and self.model_posts is not None and bool(self.model_posts.search(unquote(endpoint)))

    def post_known(self, endpoint: str) -> bool:
        """Whether the gateway knows which model a POST runs: none (free_posts), the one its body names
        (model_posts), the one its path names, or a batch's (batch_models)."""
        path = unquote(endpoint)
        return (any(p is not None and p.search(path) for p in (self.model_posts, self.free_posts))
                or bool(self.request_model(path, None)) or self.batch_models(path, {}) is not None)

    def post_unmetered(self, method: str, endpoint: str) -> bool:
        """Whether the request runs models whose use no answer the gateway logs reports (unmetered_posts)."""
        return (method == "POST" and self.unmetered_posts is not None
                and bool(self.unmetered_posts.search(unquote(endpoint))))

    def usage_withheld(self, endpoint: str, payload: Payload) -> str:
        """Why the answer to this request (a usage_format_posts one) will report no usage, or "" when it will."""
        return ""

    def batch_models(self, endpoint: str, payload: Payload) -> list[str | None] | None:
        """The models a request creating a batch asks for (None for a model the gateway cannot read, [] when
        they are all in an uploaded file); None when the request creates no batch."""
        return None

    def stream_requested(self, endpoint: str, payload: Payload) -> bool:
        """Whether the request asks for an event stream."""
        return sub(payload, "stream") is True

    def request_tags(self, endpoint: str, payload: Payload) -> RequestTags:
        """The end user, session and metadata the request body names in the provider's own fields."""
        return RequestTags()

    def cache_refusal(self, method: str, endpoint: str, body: bytes) -> str:
        """Why the response cache may neither answer this request from a stored answer nor store its answer
        ("" when it may). Only POSTs: a GET reads an object that changes (a background response, a batch, a
        prediction, a long-running operation polled until it ends), and a stored copy would answer every
        later poll with the state of the first, so the client would poll forever; DELETE and PATCH change
        what the upstream keeps."""
        if method != "POST":
            return f"a {method} reads or changes what the upstream keeps"
        if self.stateful_posts is not None and self.stateful_posts.search(unquote(endpoint)):  # as upstreams route
            return "this request creates or changes an object the upstream keeps (a batch, a file, a job)"
        return ""

    # --- reading its answers
    def usage(self, answer: Payload) -> Usage:
        """Model and token counts of a JSON answer (or of a reassembled stream's result)."""
        return Usage()

    def stream_reassemble(self, events: list[StreamEvent]) -> Payload:
        """The answer a stream adds up to (what the provider would have answered unstreamed), or None."""
        return None

    def event_has_content(self, name: str | None, payload: Payload) -> bool:
        """Whether a stream event carries content (text, a tool call, thinking): time to first token."""
        return False

    def conversation(self, endpoint: str, request: Payload, answer: Payload) -> list[Turn]:
        """The turns a request sent and its answer returned, for reading; [] when not a conversation."""
        return []

    def embedded_files(self, answer: Payload) -> list[EmbeddedFile]:
        """Files inside a JSON answer that the log stores apart from the body."""
        return []

    def output_urls(self, answer: Payload) -> list[str]:
        """URLs of files an answer points to that the log should copy (candidates; hosts are checked by the caller)."""
        return []

    def price_names(self, model: str) -> list[str]:
        """Names to look a model up by in a price table (PRICE_TABLE_PATH, genai-prices), most specific first."""
        return [model]

    # --- realtime sessions (WebSocket)
    def realtime_model(self, endpoint: str, query: str) -> str | None:
        """The model a WebSocket upgrade asks for, or None when only the session's messages name it."""
        return None

    def realtime_model_in_first_message(self, endpoint: str) -> bool:
        """Whether a session on this WebSocket endpoint names its model only in its first client message (read by
        realtime_read as asks_model), its upgrade never: a key limited to models or with a budget is then held to
        that message, checked before it goes upstream, instead of to the upgrade."""
        return False

    def realtime_read(self, direction: str, event: Payload) -> RealtimeRead:
        """Audio, turn ends, formats and usage in one event of a realtime session ("client"/"upstream")."""
        return RealtimeRead()

    # Whether its realtime protocol has error events (realtime_error gives one): a refused client message is then
    # answered with one and the session goes on; else the refusal ends the session, its close frame saying why.
    realtime_error_events = False

    def realtime_error(self, message: str, *, kind: str, code: str, event_id: str | None = None) -> str | None:
        """The gateway's own error event in this provider's realtime protocol (event_id: the client event it
        answers), or None when the protocol has none (the close frame's reason then says it)."""
        return None

    # --- changing what goes upstream (STREAM_USAGE=inject)
    def usage_injectable(self, method: str, upstream_path: str) -> bool:
        """Whether requests to this endpoint can be asked for their stream's usage (usage_inject may change them)."""
        return False

    def usage_inject(self, method: str, upstream_path: str, payload: Payload) -> Payload | None:
        """The request's JSON asking the stream to report usage (a new value: payload is left as it is), or None
        when nothing needs to change; UsageUnknowable when whether it streams cannot be read for sure."""
        return None

    def injected_event(self, payload: Payload) -> bool:
        """True for the usage-only event that usage_inject made the upstream send (hidden from the client)."""
        return False


def json_bytes(value: Any) -> bytes:
    """A body as JSON, UTF-8; a string holding an escaped lone surrogate (valid JSON, no character that
    UTF-8 can hold) is written escaped, as it came."""
    try:
        return json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return json.dumps(value).encode()


def names_without(model: str, suffixes: tuple) -> list[str]:
    """A model name, then the names left by removing each matching version suffix (compiled regexes)."""
    names = [model]
    for suffix in suffixes:
        base = suffix.sub("", model)
        if base != model and base not in names:
            names.append(base)
    return names


def base_url_tail(url: str) -> str:
    """The query string or fragment of an upstream base URL ("?api-version=1"), "" when it has none. The gateway
    puts the client's path after the base URL, so such a tail ended up inside the path (every request 404'd, the
    query lost): the start refuses it."""
    # Found by its delimiter, not by urlsplit's parts: a bare "?" or "#" has an empty part and broke the path too.
    cut = min((i for i in (url.find("?"), url.find("#")) if i >= 0), default=-1)
    return url[cut:] if cut >= 0 else ""
