"""The audit log tables: one request, its response and the binary files of the exchange."""

from django.db import models

from logs.ids import uuid7
from logs.storage import payload_storage



def payload_upload_to(instance: "BinaryFile", filename: str) -> str:
    """Files are named by the gateway itself (logs/storage.py payload_name); keep that name."""
    return filename


# Response columns the admin list sorts by (each has a partial index, see Response.Meta).
USAGE_SORT_FIELDS = ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens", "total_tokens", "cost_usd")


class Request(models.Model):
    """What the client sent, as received (credentials masked)."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    provider = models.CharField(max_length=64, db_index=True)
    endpoint = models.CharField(max_length=1024)
    method = models.CharField(max_length=16)
    query_string = models.TextField(blank=True, default="")
    headers = models.JSONField(default=dict)
    body = models.TextField(null=True, blank=True)
    body_size = models.BigIntegerField(default=0)
    content_type = models.CharField(max_length=255, blank=True, default="")
    client_addr = models.CharField(max_length=64, blank=True, default="")
    # Indexed with created_at (migration 0002), which also serves sorting by model.
    model = models.CharField(max_length=255, null=True, blank=True)
    stream_requested = models.BooleanField(default=False)
    # Indexed together with created_at (Meta.indexes): "this key, newest first" walks one index.
    key_fingerprint = models.CharField(max_length=32, blank=True, default="")
    # The gateway access key the request presented: "name (fp 1a2b3c4d5e6f)", never the key itself.
    gateway_key = models.CharField(max_length=160, blank=True, default="", db_default="")
    instance = models.CharField(max_length=64, blank=True, default="")
    # Who the request was made for and what it belongs to (logs/tags.py): the X-Gateway-User,
    # X-Gateway-Session-Id and X-Gateway-Meta-<Name> headers, else the provider's own body fields.
    # Each of user and session is indexed with created_at: "this user, newest first", "this
    # session in order" walk one index.
    end_user = models.CharField(max_length=255, null=True, blank=True)
    session_id = models.CharField(max_length=255, null=True, blank=True)
    metadata = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        db_table = "requests"
        ordering = ["-created_at"]
        indexes = [
            # Made by migration 0002 as SQL; declared here so a table rebuild keeps them.
            models.Index(fields=["provider", "created_at"], name="requests_provider_created_idx"),
            models.Index(fields=["model", "created_at"], name="requests_model_created_idx"),
            models.Index(fields=["key_fingerprint", "created_at"], name="requests_keyfp_created_idx"),
            models.Index(fields=["gateway_key", "created_at"], name="requests_gwkey_created_idx"),
            models.Index(fields=["end_user", "created_at"], name="requests_user_created_idx"),
            models.Index(fields=["session_id", "created_at"], name="requests_session_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.method} {self.endpoint} ({self.id})"


class Response(models.Model):
    """What the upstream answered and how the exchange ended."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    request = models.OneToOneField(
        Request, on_delete=models.CASCADE, related_name="response", db_column="request_id"
    )
    status_code = models.IntegerField(null=True, blank=True, db_index=True)
    headers = models.JSONField(default=dict)
    body = models.TextField(null=True, blank=True)
    body_size = models.BigIntegerField(default=0)
    content_type = models.CharField(max_length=255, blank=True, default="")
    is_stream = models.BooleanField(default=False, db_index=True)
    stream_result = models.JSONField(null=True, blank=True)
    event_offsets_ms = models.JSONField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    ttfb_ms = models.FloatField(null=True, blank=True)
    is_error = models.BooleanField(default=False, db_index=True)
    error_message = models.TextField(blank=True, default="")
    # Values from logs/outcomes.py Outcome (no choices here: a new outcome needs no migration).
    outcome = models.CharField(max_length=32, db_index=True)
    model = models.CharField(max_length=255, null=True, blank=True)
    input_tokens = models.IntegerField(null=True, blank=True)
    output_tokens = models.IntegerField(null=True, blank=True)
    cached_tokens = models.IntegerField(null=True, blank=True)
    reasoning_tokens = models.IntegerField(null=True, blank=True)
    total_tokens = models.IntegerField(null=True, blank=True)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, null=True, blank=True)
    ttft_ms = models.FloatField(null=True, blank=True)
    usage_injected = models.BooleanField(default=False)
    # What the policy steps did (proxy/steps.py), in order: [{"step": name, "decision": ..., ...}];
    # NULL when no step acted. The request row keeps what the client sent; this says who changed
    # or answered it, and `forwarded` what went upstream instead (method, path, query, headers, body).
    steps = models.JSONField(null=True, blank=True)
    forwarded = models.JSONField(null=True, blank=True)
    # The response cache: True for an answer served from it (cache_source: the exchange it replays,
    # cost_saved_usd: what that one cost), False for an answer stored into it; NULL otherwise.
    cache_hit = models.BooleanField(null=True, blank=True, db_index=True)
    cache_source = models.UUIDField(null=True, blank=True)
    cost_saved_usd = models.DecimalField(max_digits=14, decimal_places=8, null=True, blank=True)
    # Which price table priced cost_usd (e.g. "genai-prices 0.2.3", "PRICE_TABLE_PATH").
    price_source = models.CharField(max_length=64, null=True, blank=True)
    # How long the request waited in the hold queue (not part of the upstream latency).
    held_ms = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        db_table = "responses"
        # Behind the admin's sortable columns: sorting lists the rows where the value is known
        # (IS NOT NULL), which these partial indexes serve in both directions on SQLite and
        # PostgreSQL without sorting; rows without usage cost nothing to write. Single-column
        # on purpose: (value, id) made log writes slower (docs/benchmark.md). The model index also gives the
        # "answering model" filter its choices.
        indexes = [
            models.Index(fields=[f], name=f"responses_{f.split('_')[0]}_sort_idx",
                         condition=models.Q(**{f"{f}__isnull": False}))
            for f in ("model", *USAGE_SORT_FIELDS)
        ]

    def __str__(self) -> str:
        return f"{self.status_code} for {self.request_id}"


class PendingRequest(models.Model):
    """A request that has no response row (yet): an exchange in flight, or one whose answer was never logged.

    Kept by database triggers on requests and responses (migration 0009), whatever writes the rows
    (the ingest's bulk inserts, prune_logs, the admin's delete), so "no response yet" reads this
    small table instead of checking every request for a response. A later migration that rebuilds
    `requests` or `responses` (SQLite) drops the triggers and must create them again.
    """

    request_id = models.UUIDField(primary_key=True)

    class Meta:
        db_table = "requests_pending"

    def __str__(self) -> str:
        return f"pending {self.request_id}"


class SpendSums(models.Model):
    """The figures spend_days and spend_hours keep for one (requested model, key, user) of one period.

    The key is the gateway key's label when one was presented, else the provider key's fingerprint; "" for none.
    Cost is in units of 1e-8 dollars (cost_usd's precision): integer sums stay exact.
    """

    model = models.CharField(max_length=255)
    key = models.CharField(max_length=160)
    end_user = models.CharField(max_length=255)
    exchanges = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    total_tokens = models.BigIntegerField(default=0)
    priced = models.BigIntegerField(default=0)  # answers with a known cost (none: the group's cost is unknown)
    cost_e8 = models.BigIntegerField(default=0)

    class Meta:
        abstract = True


class SpendDay(SpendSums):
    """Spend and tokens of one UTC day's answers for one (requested model, key, user): the spend page's whole days.

    Kept by database triggers on responses and requests (migration 0010), whatever writes or deletes
    the rows, so the spend page adds up a few rows per day instead of reading every exchange.
    A row's figures drop to zero when its answers are deleted. Responses are deleted before their
    requests (prune_logs, the admin, Django's collector): the triggers read the request's model, key
    and user then.
    """

    day = models.DateField()

    class Meta:
        db_table = "spend_days"
        constraints = [models.UniqueConstraint(fields=["day", "model", "key", "end_user"], name="spend_days_group_uniq")]

    def __str__(self) -> str:
        return f"{self.day} {self.model} {self.key} {self.end_user}"


class Landing(models.Model):
    """When an exchange's request or response row reached the database: what the live tail follows.

    created_at is when an exchange started: a stream that ran for minutes, or the rows a restart
    replays from a dead worker's journal, reach the database long after it. Kept by database
    triggers (migration 0016), one row per request and response row inserted, whatever writes them;
    rows older than ten minutes are dropped as requests are written (the tail reads the last seconds).
    """

    request_id = models.UUIDField()
    at = models.DateTimeField()

    class Meta:
        db_table = "landings"
        indexes = [models.Index(fields=["at"], name="landings_at")]

    def __str__(self) -> str:
        return f"{self.request_id} at {self.at}"


class TokenSecond(models.Model):
    """Tokens of one second's answers for one gateway key: what its tokens-per-minute limit adds up.

    Kept by database triggers on responses and requests (migration 0011), like SpendDay, so a
    limited key's last minute is at most 61 rows to read, however busy the key. The second is the
    answer's end (responses.created_at, the exchange's start, plus duration_ms) in whole epoch seconds. Rows over an hour old are dropped
    as new answers are written: nothing reads them.
    """

    key = models.CharField(max_length=160)
    second = models.BigIntegerField()
    tokens = models.BigIntegerField(default=0)

    class Meta:
        db_table = "token_seconds"
        constraints = [models.UniqueConstraint(fields=["key", "second"], name="token_seconds_key_second_uniq")]
        indexes = [models.Index(fields=["second"], name="token_seconds_second")]

    def __str__(self) -> str:
        return f"{self.key} {self.second}: {self.tokens}"


class SpendHour(SpendSums):
    """SpendDay's figures for one UTC hour: the spend page's partial days (a rolling range starts mid-day).

    Kept by the same kind of triggers (migration 0012), so the ends of a range read at most a day of
    hours each, and the log only for the minutes of an hour that a range leaves out.
    """

    hour = models.DateTimeField()

    class Meta:
        db_table = "spend_hours"
        constraints = [models.UniqueConstraint(fields=["hour", "model", "key", "end_user"],
                                               name="spend_hours_group_uniq")]

    def __str__(self) -> str:
        return f"{self.hour} {self.model} {self.key} {self.end_user}"


class AnswerHour(models.Model):
    """What the dashboard adds up about one UTC hour's answers from one answering model ("" when unknown).

    Kept by triggers on responses (migration 0012), so the dashboard reads a few rows per hour
    instead of every answer of its window. The hour is the response's created_at, as the dashboard
    buckets it. Token sums are over the answers that reported total_tokens (`tokened` of them), as
    the dashboard's "tokens by model" counts them; costs are in units of 1e-8 dollars, as in SpendDay.
    """

    hour = models.DateTimeField()
    model = models.CharField(max_length=255)
    exchanges = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)
    priced = models.BigIntegerField(default=0)
    cost_e8 = models.BigIntegerField(default=0)
    cache_hits = models.BigIntegerField(default=0)
    cache_fills = models.BigIntegerField(default=0)
    saved = models.BigIntegerField(default=0)  # answers with a known cost_saved_usd
    saved_e8 = models.BigIntegerField(default=0)
    tokened = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    total_tokens = models.BigIntegerField(default=0)

    class Meta:
        db_table = "answer_hours"
        constraints = [models.UniqueConstraint(fields=["hour", "model"], name="answer_hours_group_uniq")]

    def __str__(self) -> str:
        return f"{self.hour} {self.model}: {self.exchanges}"


class LatencyHour(models.Model):
    """How many of one UTC hour's answers fell in each latency histogram bin (logs/stats.py BINS).

    Kept by triggers on responses (migration 0012): the dashboard's percentiles per bucket come
    from these counts. `metric` is 0 for duration_ms, 1 for ttfb_ms; answers without the value
    are in no bin.
    """

    DURATION, TTFB = 0, 1

    hour = models.DateTimeField()
    metric = models.SmallIntegerField()
    bin = models.IntegerField()
    answers = models.BigIntegerField(default=0)

    class Meta:
        db_table = "latency_hours"
        constraints = [models.UniqueConstraint(fields=["hour", "metric", "bin"], name="latency_hours_bin_uniq")]

    def __str__(self) -> str:
        return f"{self.hour} {self.metric} #{self.bin}: {self.answers}"


class BinaryFile(models.Model):
    """A binary payload (or an oversized body) kept on the payload storage."""

    class Role(models.TextChoices):
        REQUEST_PART = "request_part"
        REQUEST_BODY = "request_body"
        RESPONSE_BODY = "response_body"
        RESPONSE_IMAGE = "response_image"
        RESPONSE_OUTPUT = "response_output"  # a file the answer pointed to (Replicate outputs), saved by the gateway
        FORWARDED_BODY = "forwarded_body"  # the body a policy step sent upstream instead of the client's
        SESSION_AUDIO = "session_audio"  # a realtime session's audio, one file per track and turn
        SESSION_FRAMES = "session_frames"  # a realtime session's binary frames (and text ones too large for their
        # rows), one file per direction and kind

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    request = models.ForeignKey(
        Request, on_delete=models.CASCADE, related_name="files", db_column="request_id"
    )
    response = models.ForeignKey(
        Response,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="files",
        db_column="response_id",
    )
    file = models.FileField(
        storage=payload_storage, upload_to=payload_upload_to, max_length=512, db_column="file_path"
    )
    role = models.CharField(max_length=32, choices=Role.choices)
    field_name = models.CharField(max_length=255, blank=True, default="")
    filename = models.CharField(max_length=255, blank=True, default="")
    content_type = models.CharField(max_length=255, blank=True, default="")
    size = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField()

    class Meta:
        db_table = "binary_files"

    def __str__(self) -> str:
        return self.file.name


class Frame(models.Model):
    """One message of a realtime (WebSocket) session: the session is an exchange, these are its frames."""

    id = models.BigAutoField(primary_key=True)
    request = models.ForeignKey(Request, on_delete=models.CASCADE, related_name="frames", db_column="request_id")
    seq = models.IntegerField()  # order in the session, both directions together
    direction = models.CharField(max_length=8)  # "client" or "upstream"
    offset_ms = models.FloatField()  # since the session's request arrived
    kind = models.CharField(max_length=8)  # "text" or "binary"
    event_type = models.CharField(max_length=128, blank=True, default="")  # a JSON event's "type"
    size = models.IntegerField()  # bytes on the wire
    # The text as sent, base64 audio replaced by {"$gateway_audio": {"track", "offset", "bytes"}}
    # (the track is the BinaryFile of this request with that field_name); a binary frame's bytes,
    # and a text frame's over LOG_BODY_INLINE_MAX_BYTES (text None), are in the file named by
    # file_key, from file_offset on (`size` bytes).
    text = models.TextField(null=True, blank=True)
    file_key = models.CharField(max_length=64, blank=True, default="")
    file_offset = models.BigIntegerField(null=True, blank=True)

    class Meta:
        db_table = "frames"
        constraints = [models.UniqueConstraint(fields=["request", "seq"], name="frames_request_seq_uniq")]

    def __str__(self) -> str:
        return f"{self.direction} #{self.seq} of {self.request_id}"


class DeletedSpend(models.Model):
    """What the deleted exchanges of one gateway key cost on one UTC day (their answers' created_at).

    Deleting exchanges (prune_logs, the admin) removes their cost from spend_days, which follows the
    log; the money was spent all the same, so a key's budget adds these rows: retention must not
    hand a key its budget back (a total budget of $25 with a 30-day retention would be $25 a month).
    Written by logs.retention.exchanges_delete in the delete's own transaction.
    """

    key = models.CharField(max_length=160)  # the gateway key's label, as requests.gateway_key holds it
    day = models.DateField()
    cost_e8 = models.BigIntegerField(default=0)  # units of 1e-8 dollars, as spend_days

    class Meta:
        db_table = "deleted_spend"
        constraints = [models.UniqueConstraint(fields=["key", "day"], name="deleted_spend_key_day_uniq")]

    def __str__(self) -> str:
        return f"{self.key} {self.day}: {self.cost_e8}e-8 USD"


class PayloadOrphan(models.Model):
    """A stored file of a deleted exchange that the store did not delete (unreachable, refusing).

    The rows went (their delete had committed); the file's name waits here, and every
    prune_logs tries again (logs/retention.py), so no file is left that nothing knows of.
    """

    name = models.CharField(max_length=512, primary_key=True)
    since = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "payload_orphans"

    def __str__(self) -> str:
        return self.name
