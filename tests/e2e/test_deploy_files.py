"""compose.yaml, the Dockerfile and docs/deploy.md run the instances with the command that
tests/e2e/test_two_instances.py proves, and nginx with the unbuffered settings of docs/deploy.md:
a change to one that is not made to the others fails here."""

import json
import re

import yaml

from tests.e2e.test_two_instances import INSTANCE_COMMAND
from tests.procs import ROOT


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
    servers = re.findall(r"server (gateway-[ab]):8080", conf)
    assert sorted(servers) == sorted(s for s in _compose()["services"] if s.startswith("gateway-"))
