"""compose.yaml, the Dockerfile and docs/deploy.md run the instances with the command that
tests/e2e/test_two_instances.py proves, and nginx with the unbuffered settings of docs/deploy.md:
a change to one that is not made to the others fails here."""

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
import yaml

from tests.e2e.test_two_instances import INSTANCE_COMMAND
from tests.procs import ROOT, GatewayProcess, migrated_copy, sqlite_only


def _compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_compose_gateways_run_the_tested_command():
    services = _compose()["services"]
    gateways = {name: s for name, s in services.items() if s.get("command", [None])[0] == "uvicorn"}
    assert sorted(gateways) == ["gateway-a", "gateway-b"]  # positive control: the services were found
    for service in gateways.values():
        assert service["command"] == INSTANCE_COMMAND
        assert service["environment"]["DATA_DIR"] == "/data" and len(service["volumes"]) == 1
    assert gateways["gateway-a"]["volumes"] != gateways["gateway-b"]["volumes"]  # a DATA_DIR each
    assert services["migrate"]["command"] == ["python", "manage.py", "migrate", "--noinput"]
    # A clean stop (docs/operations.md: up to twice SHUTDOWN_GRACE_SECONDS plus 15 s) fits in the stop timeout.
    grace = int(gateways["gateway-a"]["environment"].get("SHUTDOWN_GRACE_SECONDS", 10))
    assert all(int(s["stop_grace_period"].rstrip("s")) > 2 * grace + 15 for s in gateways.values())


def test_dockerfile_and_deploy_guide_give_the_same_command():
    cmd = re.search(r"^CMD (\[.*\])$", (ROOT / "Dockerfile").read_text(), re.M).group(1)
    assert json.loads(cmd) == INSTANCE_COMMAND
    assert " ".join(INSTANCE_COMMAND) in (ROOT / "docs" / "deploy.md").read_text()


def test_compose_nginx_has_the_guides_streaming_settings():
    guide = (ROOT / "docs" / "deploy.md").read_text().split("## The load balancer", 1)[1]
    example = re.search(r"```nginx\n(.*?)```", guide, re.S).group(1)
    directives = {line.split("#")[0].strip() for line in example.splitlines()
                  if line.strip().startswith(("proxy_", "client_max_body_size", "map ", "keepalive"))}
    assert "proxy_buffering off;" in directives and "proxy_request_buffering off;" in directives
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    used = {line.split("#")[0].strip() for line in conf.splitlines()}
    assert directives <= used
    # The Host with the port the client used (compose publishes 8080): nginx's $host drops it, and the admin's login
    # failed Django's CSRF Origin check (403) and Gemini upload URLs pointed at port 80.
    for text in (example, conf):
        assert re.search(r"^\s*proxy_set_header Host \$http_host;", text, re.M)
    servers = re.findall(r"server (gateway-[ab]):8080", conf)
    assert sorted(servers) == sorted(s for s in _compose()["services"] if s.startswith("gateway-"))


@sqlite_only
def test_the_containers_health_probe_passes_with_the_production_settings(tmp_path, tmp_path_factory):
    """ALLOWED_HOSTS set (docs/deploy.md): a probe naming 127.0.0.1 gets a 400; the Dockerfile's names an allowed host."""
    probe = json.loads(re.search(r"^\s+CMD (\[.*\])$", (ROOT / "Dockerfile").read_text(), re.M).group(1))
    production = {"ALLOWED_HOSTS": ".internal,gateway.example.com", "SECURE_SSL_REDIRECT": "true",
                  "TRUST_X_FORWARDED_PROTO": "true"}
    migrated_copy(tmp_path, tmp_path_factory)
    gateway = GatewayProcess(tmp_path, "http://127.0.0.1:9", **production)
    try:
        with pytest.raises(urllib.error.HTTPError, match="400"):  # positive control: the bare probe is refused
            urllib.request.urlopen(f"{gateway.url}/health", timeout=5)
        env = {**os.environ, **production, "UVICORN_PORT": str(gateway.port)}
        ran = subprocess.run([sys.executable if probe[0] == "python" else probe[0], *probe[1:]], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=30)
        assert ran.returncode == 0, ran.stderr
    finally:
        gateway.stop()
    ran = subprocess.run([sys.executable, *probe[1:]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert ran.returncode == 1 and "health probe failed" in ran.stderr  # the gateway stopped: unhealthy
