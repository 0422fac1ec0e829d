"""The hook example in docs/hooks.md, run as written there: it must keep working."""

import json
import re
import sys

import httpx
import pytest

from tests.procs import ROOT

pytestmark = pytest.mark.django_db(transaction=True)
AUTH = {"Authorization": "Bearer sk-" + "docEXAMPLEkey0123456789abcdef"}


@pytest.fixture
def example(tmp_path, monkeypatch):
    """docs/hooks.md's example, saved as the module it says it is (myhooks/audit.py)."""
    text = (ROOT / "docs" / "hooks.md").read_text()
    code = re.search(r"```python\n(# myhooks/audit\.py.*?)```", text, re.S).group(1)
    assert len(code.strip().splitlines()) <= 15
    (tmp_path / "myhooks").mkdir()
    (tmp_path / "myhooks" / "__init__.py").write_text("")
    (tmp_path / "myhooks" / "audit.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "myhooks.audit.Tagger"
    sys.modules.pop("myhooks.audit", None)
    sys.modules.pop("myhooks", None)


def test_the_documented_example(example, settings, upstream, gateway):
    settings.GATEWAY_HOOKS = [example]
    r = httpx.post(f"{gateway.url}/v1/chat/completions", headers=AUTH,
                   json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200 and "our-model" in r.text and "gpt-4o" not in r.text
    sent = upstream.received[-1]
    assert json.loads(sent.body)["user"] == "anonymous" and sent.header("openai-project") == "proj_audited"
    r = httpx.post(f"{gateway.url}/v1/chat/completions", headers=AUTH,
                   json={"model": "gpt-4-32k", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400 and r.json()["error"]["message"] == "gpt-4-32k is retired: use gpt-4o"
