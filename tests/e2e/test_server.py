"""The real server (uvicorn in a subprocess), started as the README says: what it adds to answers, WebSockets."""

import re
import shlex
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.e2e.faults import wait_until
from tests.procs import ROOT, GatewayProcess, db_rows, migrated_copy, sqlite_only

pytestmark = sqlite_only


@pytest.fixture
def served(tmp_path, tmp_path_factory, mock_upstream):
    """A gateway process in front of the mock upstream, and its database file."""
    data = tmp_path / "data"
    db = migrated_copy(data, tmp_path_factory)
    gw = GatewayProcess(data, mock_upstream.url)
    yield gw, db
    gw.stop()


# Proxy paths (served, unknown, refused) and the gateway's own pages, which Django serves.
# Path -> the HTTP status the handshake gets: the gateway's own pages refuse WebSockets (403); a
# provider path is relayed: this HTTP-only mock upstream answers the upgrade with its 404, and
# Anthropic's upstream is unreachable here (502); a path no provider serves, or one escaping its
# prefix, is refused before anything is relayed.
WS_PATHS = {"/v1/realtime?model=gpt-4o-realtime-preview": 404, "/anthropic/v1/messages": 502,
            "/nobody/serves/this": 404, "/v1/../admin/": 400, "/admin/": 403, "/health": 403,
            "/static/admin/css/base.css": 403}


def test_websocket_upgrade_is_refused_cleanly(served):
    gw, db = served
    for path, status in WS_PATHS.items():
        with pytest.raises(InvalidStatus) as refused:
            with connect(f"ws://127.0.0.1:{gw.port}{path}", open_timeout=10):
                pass
        assert refused.value.response.status_code == status, path
    assert "Traceback" not in gw.stderr() and "Exception in ASGI application" not in gw.stderr()
    # The two relayed upgrades are logged with the upstream's answer; the refused ones are not.
    assert wait_until(lambda: db_rows(db, "SELECT r.endpoint, s.status_code FROM requests r JOIN responses s "
                                          "ON s.request_id = r.id ORDER BY r.endpoint") ==
                      [("/anthropic/v1/messages", 502), ("/v1/realtime", 404)], 10)


def readme_server_command() -> list[str]:
    """The `uvicorn …` step of the README's quick-start command, with this environment's uvicorn."""
    quick_start = (ROOT / "README.md").read_text().split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.*?)\n```", quick_start, re.S).group(1)
    command = next(step for step in map(shlex.split, block.split("&&")) if step[0] == "uvicorn")
    return [str(Path(sys.executable).parent / "uvicorn"), *command[1:]]


def _unstamped(body: bytes) -> bytes:
    return re.sub(rb'"created": ?\d+', b'"created": 0', body)


def _header_list(response: httpx.Response) -> Counter:
    """Every header of an answer as sent, repeats counted."""
    return Counter((k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers.raw)


@pytest.mark.parametrize("method,path,body", [
    ("GET", "/v1/models", None),
    ("POST", "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": [], "stream": True}),
])
def test_readme_server_adds_only_the_request_id(tmp_path, tmp_path_factory, mock_upstream, method, path, body):
    command = readme_server_command()
    assert command[1:3] == ["gateway_project.asgi:application", "--port"]  # the README's, parsed
    data = tmp_path / "data"
    migrated_copy(data, tmp_path_factory)
    gw = GatewayProcess(data, mock_upstream.url, command=command)
    try:
        with httpx.Client(timeout=10) as client:
            direct = client.request(method, f"{mock_upstream.url}{path}", json=body)
            proxied = client.request(method, f"{gw.url}{path}", json=body)
    finally:
        gw.stop()
    # The mock stamps each answer with the second it was made ("created"): a pair of calls may straddle one.
    assert proxied.status_code == direct.status_code == 200
    assert _unstamped(proxied.content) == _unstamped(direct.content)
    added = _header_list(proxied) - _header_list(direct)
    assert _header_list(direct) - _header_list(proxied) == Counter()  # nothing the upstream sent is lost
    assert list(added) == [("x-gateway-request-id", proxied.headers["x-gateway-request-id"])] and added.total() == 1


def test_start_says_on_the_console_what_will_not_work(tmp_path, tmp_path_factory, mock_upstream):
    """A Redis (CACHE_URL) nobody listens on and a PRICE_TABLE_PATH that does not exist were silent at start:
    the first was learnt from clients' 503s, the second printed a line per exchange priced. Each is one line at
    start, the Redis URL without its password."""
    from tests.procs import free_port

    data = tmp_path / "data"
    migrated_copy(data, tmp_path_factory)
    port, prices = free_port(), tmp_path / "prices.json"  # nothing listens there; no such file
    gw = GatewayProcess(data, mock_upstream.url, CACHE_URL=f"redis://ops:s3cretpw@127.0.0.1:{port}/13",
                        PRICE_TABLE_PATH=str(prices))
    try:
        assert wait_until(lambda: "PRICE_TABLE_PATH" in gw.stderr() and "Redis" in gw.stderr(), 10), gw.stderr()
        said = gw.stderr()
        assert f"Redis (CACHE_URL redis://127.0.0.1:{port}/13) cannot be reached (ConnectionError" in said
        assert f"PRICE_TABLE_PATH {prices} does not exist; genai-prices only until it does" in said
        assert "s3cretpw" not in said and "Traceback" not in said
    finally:
        gw.stop()


def test_console_lines_carry_time_level_and_logger_and_uvicorns_stay_its_own(tmp_path, tmp_path_factory,
                                                                              mock_upstream):
    """The gateway's warnings came bare ("PRICE_TABLE_PATH ... does not exist"): in a server log they could not be
    told from other output, nor dated. Each now starts with its UTC time, level and logger; uvicorn's own lines
    keep uvicorn's format, and a credential in a line is still masked."""
    from tests.procs import free_port

    data = tmp_path / "data"
    migrated_copy(data, tmp_path_factory)
    key = "sk-" + "consoleformat" * 3
    gw = GatewayProcess(data, mock_upstream.url, command=readme_server_command(), ALLOWED_HOSTS="gateway.example",
                        CACHE_URL=f"redis://127.0.0.1:{free_port()}/13", PRICE_TABLE_PATH=str(tmp_path / "none.json"))
    try:
        httpx.get(f"{gw.url}/health", headers={"Host": key}, timeout=10)  # a Host outside ALLOWED_HOSTS
        assert wait_until(lambda: "Invalid HTTP_HOST header" in gw.stderr(), 10), gw.stderr()
    finally:
        gw.stop()
    lines = gw.stderr().splitlines()
    ours = [line for line in lines if not line.startswith("INFO:     ")]
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    for logger, text in (("keys.store", "Redis (CACHE_URL"), ("logs.pricing", "PRICE_TABLE_PATH"),
                         ("django.security.DisallowedHost", "Invalid HTTP_HOST header")):
        assert [line for line in ours if re.fullmatch(rf"{stamp} WARNING {re.escape(logger)}: {re.escape(text)}.*",
                                                      line)], ours
    assert all(re.match(rf"{stamp} [A-Z]+ [\w.]+: ", line) for line in ours), ours
    assert key not in gw.stderr() and "sk-…" in gw.stderr()  # masked, and the line that held it was read
    assert any(line.startswith("INFO:     Uvicorn running on http://") for line in lines), lines
