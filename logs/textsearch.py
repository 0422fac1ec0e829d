"""Word search over request and response bodies and endpoints, through the text index of migration 0008.

What matches: the term's words, in order and adjacent, the last one as a word start ("invoice
pari" finds "... invoice paris ..."); case does not matter; only the first TEXT_CHARS characters
of a body are indexed. Words are runs of letters and digits; every other character
separates them ("gpt-4o" is the two words "gpt" "4o", so it also finds "gpt 4o"; "/v1/embeddings"
holds "v1" and "embeddings"). SQLite (FTS5, unicode61 tokenizer) and PostgreSQL ('simple' text
search configuration, after the SEPARATORS become spaces) split text the same way for ordinary
text; they may differ on rare characters PostgreSQL's parser treats specially (e.g. "<tag>").
A term made of no word character matches only models (nothing the index can look up).
"""

import re

from django.db import connection
from django.db.models import Q
from django.db.models.expressions import RawSQL

# As in logs/migrations/0008_body_text_index.py: the PostgreSQL expressions must be the indexed ones.
TEXT_CHARS = 200000
# PostgreSQL's parser keeps paths, URLs, e-mail addresses, hosts and numbers as single words; these
# characters become spaces first, so "/v1/embeddings" holds the word "embeddings" as with FTS5.
SEPARATORS = "'/.@:-?=&+#~', '           '"
_PG_REQUEST_TEXT = ("to_tsvector('simple'::regconfig, translate(left(coalesce(endpoint, '') || ' ' || "
                    f"coalesce(body, ''), {TEXT_CHARS}), {SEPARATORS}))")
_PG_RESPONSE_TEXT = f"to_tsvector('simple'::regconfig, translate(left(coalesce(body, ''), {TEXT_CHARS}), {SEPARATORS}))"

_WORD = re.compile(r"[^\W_]+")


def term_words(term: str) -> list[str]:
    """The words of a search term (what the index can look up)."""
    return _WORD.findall(term.lower())


def text_match_q(term: str) -> Q | None:
    """Requests whose endpoint or body, or whose response's body, holds the term's words; None when
    the term has no word at all (nothing the index can answer)."""
    words = term_words(term)
    if not words:
        return None
    if connection.vendor == "postgresql":
        query = " <-> ".join(words) + ":*"
        sql = (f"SELECT id FROM requests WHERE {_PG_REQUEST_TEXT} @@ to_tsquery('simple', %s) "
               f"UNION SELECT request_id FROM responses WHERE {_PG_RESPONSE_TEXT} @@ to_tsquery('simple', %s)")
        return Q(pk__in=RawSQL(sql, [query, query]))
    if connection.vendor == "sqlite":
        phrase = '"' + " ".join(words) + '"*'  # words hold no quote: no escaping needed
        sql = ("SELECT request_id FROM requests_text_fts WHERE requests_text_fts MATCH %s "
               "UNION SELECT request_id FROM responses_text_fts WHERE responses_text_fts MATCH %s")
        return Q(pk__in=RawSQL(sql, [phrase, phrase]))
    # Another database has no text index here: substring match, reading every body.
    return (Q(endpoint__icontains=term) | Q(body__icontains=term) | Q(response__body__icontains=term))
