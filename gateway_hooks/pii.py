"""Masks e-mail addresses, phone numbers and card numbers in prompts before they go upstream.

Only the text a person wrote is searched: string values under the keys prompts use across the
providers (messages' content, Gemini's parts' text, instructions, system, input, prompt, Anthropic's
plain-text documents), never ids, URLs (in a text too) or base64 data; and every string of a tool
call's arguments or a tool's result (but for ids and links), which carry what the user wrote under
names of their own. Each distinct value becomes a placeholder such as [EMAIL_1], numbered in the
order the model reads the prompt (its system prompt first); the placeholder-to-value mapping goes
into the exchange's metadata, which only the log keeps (responses.steps). The answer keeps the placeholders: the model never saw the values, and the
client reads them back from its own prompt.
"""

import re
from typing import Any

TEXT_KEYS = frozenset({"content", "text", "prompt", "input", "system", "instructions", "system_prompt",
                       "negative_prompt", "query",
                       # Anthropic: a document's context, and a citation's quote of a document and its title,
                       # which an assistant turn sent back carries.
                       "context", "cited_text", "document_title"})
# The prompt's preamble, which the model reads before the conversation (Anthropic's system, Gemini's
# systemInstruction, the Responses API's instructions): masked first, so its placeholders are the same on every
# turn. The SDKs write it after the messages, whose values grow turn by turn.
PREAMBLE_KEYS = ("system", "systemInstruction", "system_instruction", "instructions")
# Blocks whose title is the user's text (Anthropic's document and search result blocks), unlike a JSON
# schema's title in a tool's declaration.
TITLED_TYPES = frozenset({"document", "search_result"})
# A tool call's arguments and a tool's result, where what the user wrote comes back under any name:
# OpenAI's function.arguments (a JSON string), Gemini's functionCall.args and functionResponse,
# and (an object under "input") Anthropic's tool_use.input and Replicate's input.
TOOL_KEYS = frozenset({"arguments", "args", "functionResponse", "function_response", "output"})
# E-mail addresses, non-ASCII ones too (josé@example.com, jürgen@müller.de): \w is Unicode.
EMAIL = re.compile(r"(?<![\w.+-])[\w.%+-]{1,64}@[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,24}(?![\w-])")
# 13 to 19 digits, optionally in groups split by single spaces or dashes; must pass the Luhn check.
CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")
# An optional +country code, then 9 to 15 digits in groups split by spaces, dots, dashes or parentheses.
# After a country code the first group may be one digit (+33 6 12 34 56 78, +61 4 1234 5678). Not
# the tail of something longer: a UUID's last group (-446655440000), a version (10.0.19045.2965),
# a number grouped by spaces (8 000 000 000).
PHONE = re.compile(r"(?<![\w+.\-/])(?<!\d[ ,])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}"
                   r"|(?:\(\d{1,4}\)[ .-]?)?\d{2,4})(?:[ .-]?\d{2,4}){2,4}(?![\w])(?![.\-/]\w)")
# A URL or data: URI in a text: never searched (its digits are paths and ids, not phone numbers).
URL = re.compile(r"(?:https?://|data:)\S+")
# Ids and links by their field's name, never searched even among a tool's arguments (call_id, image_url).
NOT_TEXT_KEY = re.compile(r"(?:^|_)(?:id|url|uri)$|Id$|Url$|Uri$")
PHONE_DIGITS = (9, 15)
# Digit runs shaped like a phone number that are not one: an ISO date (and its time), an IPv4 address.
NOT_PHONE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[ T]\d{2})?|\d{1,3}(?:\.\d{1,3}){3}")


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum every payment card number passes."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


class Masker:
    """Replaces sensitive values with numbered placeholders, the same value always with the same one."""

    def __init__(self) -> None:
        self.mapping: dict[str, str] = {}  # placeholder -> original
        self._by_value: dict[tuple[str, str], str] = {}
        self._counts: dict[str, int] = {}

    def _placeholder(self, kind: str, value: str) -> str:
        key = (kind, value)
        if key not in self._by_value:
            self._counts[kind] = self._counts.get(kind, 0) + 1
            name = f"[{kind}_{self._counts[kind]}]"
            self._by_value[key], self.mapping[name] = name, value
        return self._by_value[key]

    def _card(self, match: re.Match) -> str:
        digits = re.sub(r"\D", "", match.group(0))
        return self._placeholder("CARD", match.group(0)) if luhn_ok(digits) else match.group(0)

    def _phone(self, match: re.Match) -> str:
        value = match.group(0)
        digits = re.sub(r"\D", "", value)
        low, high = PHONE_DIGITS
        if not low <= len(digits) <= high or NOT_PHONE.fullmatch(value):
            return value
        return self._placeholder("PHONE", value)

    def text(self, text: str) -> str:
        """One text with its e-mail addresses, card numbers and phone numbers masked (in that order); the
        URLs in it as they are."""
        pieces = URL.split(text)
        if len(pieces) > 1:  # masked between the URLs only
            urls = URL.findall(text)
            return "".join(self.text(piece) + (urls[i] if i < len(urls) else "") for i, piece in enumerate(pieces))
        text = EMAIL.sub(lambda m: self._placeholder("EMAIL", m.group(0)), text)
        text = CARD.sub(self._card, text)
        return PHONE.sub(self._phone, text)

    def prompt(self, payload: Any) -> Any:
        """A request body with its prompt texts masked (walk), its preamble first, its keys in their order."""
        if not isinstance(payload, dict):
            return self.walk(payload)
        first = {k: self.walk(payload[k], k) for k in PREAMBLE_KEYS if k in payload}
        return {k: first[k] if k in first else self.walk(v, k if isinstance(k, str) else None)
                for k, v in payload.items()}

    def walk(self, value: Any, key: str | None = None, tool: bool = False, listed: bool = False) -> Any:
        """The JSON value with the prompt texts in it masked (every string of a tool call's arguments, but
        for ids and links).

        An object under "input" is a tool's input (Anthropic's tool_use, Replicate's); a list under it is
        the Responses API's conversation, whose items are read as messages.
        """
        if key is not None and NOT_TEXT_KEY.search(key):
            return value
        tool = tool or key in TOOL_KEYS
        if isinstance(value, str):
            return self.text(value) if tool or key in TEXT_KEYS else value
        tool = tool or key == "input" and isinstance(value, dict) and not listed
        if isinstance(value, list):
            return [self.walk(item, key, tool, listed=True) for item in value]
        if isinstance(value, dict):
            kind = value.get("type")
            # Anthropic's plain-text document source ({"type": "text", "media_type": "text/plain", "data": ...})
            # holds the document's text under "data", which elsewhere is base64; its title, the user's text too.
            texts = {"data"} if kind == "text" else {"title"} if kind in TITLED_TYPES else set()
            return {k: self.text(v) if k in texts and isinstance(v, str)
                    else self.walk(v, k if isinstance(k, str) else None, tool) for k, v in value.items()}
        return value


class PiiMask:
    """The hook: masks the JSON body's prompts; logs which placeholders stand for what."""

    blocking = False  # CPU work only: runs on the event loop, no thread hop

    def on_request(self, exchange) -> None:
        payload = exchange.json
        if payload is None:
            return
        masker = Masker()
        masked = masker.prompt(payload)
        if masker.mapping:
            exchange.json = masked
            exchange.metadata["pii_masked"] = masker.mapping
