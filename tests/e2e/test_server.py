"""The real server (uvicorn in a subprocess): what a client gets for a WebSocket upgrade on any path."""

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.procs import GatewayProcess, db_rows, migrated_copy, sqlite_only

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
WS_PATHS = ["/v1/realtime?model=gpt-4o-realtime-preview", "/anthropic/v1/messages", "/nobody/serves/this",
            "/v1/../admin/", "/admin/", "/health", "/static/admin/css/base.css"]


def test_websocket_upgrade_is_refused_cleanly(served):
    gw, db = served
    for path in WS_PATHS:
        with pytest.raises(InvalidStatus) as refused:
            with connect(f"ws://127.0.0.1:{gw.port}{path}", open_timeout=10):
                pass
        assert refused.value.response.status_code == 403, path
    assert "Traceback" not in gw.stderr() and "Exception in ASGI application" not in gw.stderr()
    assert db_rows(db, "SELECT count(*) FROM requests") == [(0,)]  # not relayed, so nothing to log
