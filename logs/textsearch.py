"""Word search over request and response bodies and endpoints, through the text index of migration 0008.

What matches: every word of the term, whole, anywhere in the text ("invoice paris" finds
"... paris ... invoice ...", "invoice pari" does not); case does not matter; only the first TEXT_CHARS characters
of a body are indexed. A JSON body is read as its string and number values, decoded ("\nQuarterly" holds
"quarterly", "K\u00fcndigung" "kündigung"), and an answer's reassembled stream beside its body, so a word
cut between two chunks is found (migration 0014). Bodies kept as files are not indexed. Words are runs of letters and digits; every other character
separates them ("gpt-4o" is the two words "gpt" "4o", so it also finds "gpt 4o"; "/v1/embeddings"
holds "v1" and "embeddings"). SQLite (FTS5, unicode61 tokenizer) and PostgreSQL ('simple' text
search configuration, after the SEPARATORS become spaces) split text the same way for ordinary
text; they may differ on rare characters PostgreSQL's parser treats specially (e.g. "<tag>").
A term made of no word character matches only models (nothing the index can look up).
"""

import re

from django.db import connection

# Whole words anywhere rather than a phrase or a word start: PostgreSQL answers a phrase (<->) by
# reading every candidate row's body again (seconds for a common word), and cannot estimate a word
# start (:*) from its statistics, so it planned a rare word as common (a scan of the log).
# As in logs/migrations/0008_body_text_index.py: the PostgreSQL expressions must be the indexed ones.
TEXT_CHARS = 200000
# PostgreSQL's parser keeps paths, URLs, e-mail addresses, hosts and numbers as single words; these
# characters become spaces first, so "/v1/embeddings" holds the word "embeddings" as with FTS5.
SEPARATORS = "'/.@:-?=&+#~', '           '"
# As in logs/migrations/0014_search_decoded_text.py: a JSON body's decoded values, an answer's stream_result too.
_PG_REQUEST_TEXT = ("to_tsvector('simple'::regconfig, translate(left(coalesce(endpoint, '') || ' ' || "
                    f"log_search_text(body), {TEXT_CHARS}), {SEPARATORS}))")
_PG_RESPONSE_TEXT = ("to_tsvector('simple'::regconfig, translate(left(log_search_text(body) || ' ' || "
                     f"log_search_text(stream_result::text), {TEXT_CHARS}), {SEPARATORS}))")

_WORD = re.compile(r"[^\W_]+")


def term_words(term: str) -> list[str]:
    """The words of a search term (what the index can look up)."""
    return _WORD.findall(term.lower())


def text_match_sql(term: str) -> tuple[str, list] | None:
    """SQL selecting the ids of requests whose endpoint or body, or whose response's body, holds the
    term's words, and its parameters; None when the term has no word (nothing the index can answer)."""
    words = term_words(term)
    if not words:
        return None
    if connection.vendor == "postgresql":
        query = " & ".join(words)
        return (f"SELECT id FROM requests WHERE {_PG_REQUEST_TEXT} @@ to_tsquery('simple', %s) "
                f"UNION SELECT request_id FROM responses WHERE {_PG_RESPONSE_TEXT} @@ to_tsquery('simple', %s)",
                [query, query])
    if connection.vendor == "sqlite":
        phrase = " ".join(f'"{w}"' for w in words)  # words hold no quote: no escaping needed
        return ("SELECT request_id FROM requests_text_fts WHERE requests_text_fts MATCH %s "
                "UNION SELECT request_id FROM responses_text_fts WHERE responses_text_fts MATCH %s", [phrase, phrase])
    raise NotImplementedError(f"no text index on {connection.vendor}")  # the gateway runs on SQLite or PostgreSQL
