"""Each provider's content-policy refusal (the hold queue's third rejection) and its error type by status."""

import json

from providers import registry

REG = registry(["groq=https://api.groq.com/openai"])


def test_openai_and_compatible_servers_answer_content_policy_violation():
    for name in ("openai", "groq"):
        status, ctype, body = REG.get(name).content_policy_answer("/v1/chat/completions", "", {"model": "m"})
        error = json.loads(body)["error"]
        assert (status, ctype, error["code"], error["type"]) == (400, "application/json", "content_policy_violation",
                                                                 "invalid_request_error")


def test_anthropic_answers_its_error_object():
    status, _, body = REG.get("anthropic").content_policy_answer("/v1/messages", "", {"model": "claude"})
    assert status == 400 and json.loads(body) == {"type": "error", "error": {
        "type": "invalid_request_error", "message": "Output blocked by content filtering policy"}}
    assert REG.get("anthropic").error_kind(500) == "api_error" and REG.get("openai").error_kind(500) == "server_error"


def test_gemini_answers_a_blocked_prompt_in_each_of_its_forms():
    gemini = REG.get("gemini")
    status, ctype, body = gemini.content_policy_answer("/v1beta/models/gemini-2.0-flash:generateContent", "", None)
    answer = json.loads(body)
    assert status == 200 and ctype.startswith("application/json") and "candidates" not in answer
    assert answer["promptFeedback"]["blockReason"] == "SAFETY" and answer["modelVersion"] == "gemini-2.0-flash"
    path = "/v1beta/models/gemini-2.0-flash:streamGenerateContent"
    status, ctype, body = gemini.content_policy_answer(path, "alt=sse", None)
    assert ctype == "text/event-stream" and body.startswith(b"data: {") and body.endswith(b"\r\n\r\n")
    status, ctype, body = gemini.content_policy_answer(path, "", None)
    assert json.loads(body)[0]["promptFeedback"]["blockReason"] == "SAFETY"


def test_replicate_answers_a_failed_prediction():
    status, _, body = REG.get("replicate").content_policy_answer(
        "/v1/models/black-forest-labs/flux-schnell/predictions", "", {"input": {"prompt": "p"}})
    prediction = json.loads(body)
    assert status == 201 and prediction["status"] == "failed" and "(E005)" in prediction["error"]
    assert prediction["model"] == "black-forest-labs/flux-schnell" and prediction["input"] == {"prompt": "p"}
    assert prediction["output"] is None and prediction["urls"]["get"].endswith(prediction["id"])


def test_the_gateways_own_anthropic_errors_carry_anthropics_types():
    anthropic = registry().get("anthropic")
    kinds = {status: json.loads(anthropic.error_body("x", kind="gateway_error", status=status))["error"]["type"]
             for status in (401, 413, 502, 504, 500)}
    assert kinds == {401: "authentication_error", 413: "request_too_large", 502: "api_error", 504: "api_error",
                     500: "api_error"}
    assert json.loads(anthropic.error_body("x", kind="rate_limit_error", status=429))["error"]["type"] == "rate_limit_error"


def test_an_anthropic_status_with_a_type_of_its_own_keeps_it_whatever_kind_is_passed():
    # The gateway's refusals default to invalid_request_error (OpenAI's word for a 4xx): a body over
    # MAX_REQUEST_BODY_BYTES answered Anthropic's clients a 413 typed invalid_request_error, not request_too_large.
    anthropic = registry().get("anthropic")
    kinds = {status: json.loads(anthropic.error_body("x", kind="invalid_request_error", status=status))["error"]["type"]
             for status in (400, 403, 413, 429, 431)}
    assert kinds == {400: "invalid_request_error", 403: "permission_error", 413: "request_too_large",
                     429: "rate_limit_error", 431: "invalid_request_error"}
