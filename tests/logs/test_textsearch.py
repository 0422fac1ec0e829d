"""The list's word search goes through the text index of migration 0008, on SQLite and PostgreSQL."""

import pytest
from django.core.management import call_command
from django.db import connection

from logs.models import Request, Response
from logs.selectors import search_q
from tests.logs.factory import exchange_make

pytestmark = pytest.mark.django_db
LIST = "/admin/logs/request/"


def _found(term: str) -> set:
    return set(Request.objects.filter(search_q(term)).values_list("pk", flat=True))


def _ids(r) -> list[str]:
    return [o.pk.hex for o in r.context["cl"].result_list]


def test_search_finds_a_word_in_a_request_body_and_in_a_response_body(admin_client):
    asked = exchange_make(body={"messages": [{"role": "user", "content": "What is a quokka?"}]})
    answered = exchange_make(resp_body={"choices": [{"message": {"content": "A quokka is a small wallaby."}}]})
    exchange_make(body={"messages": [{"role": "user", "content": "What is a kangaroo?"}]})
    r = admin_client.get(LIST, {"q": "quokka"})
    assert r.status_code == 200
    assert set(_ids(r)) == {asked.pk.hex, answered.pk.hex}


def test_a_rare_word_among_many_rows_returns_exactly_its_rows():
    rows = [exchange_make(body={"input": f"common words number {i}"}) for i in range(30)]
    rare = {exchange_make(body={"input": "the zygomorphic flower"}).pk,
            exchange_make(resp_body={"output": "ZYGOMORPHIC, said the model"}).pk}
    assert _found("zygomorphic") == rare  # case does not matter
    assert _found("common") == {r.pk for r in rows}
    assert _found("xylophonist") == set()


def test_every_word_matches_whole_in_any_order():
    hit = exchange_make(body={"input": "send the invoice to paris today"})
    exchange_make(body={"input": "paris has no bill"})
    assert _found("paris invoice") == {hit.pk}  # every word, in any order
    assert _found("invoice to par") == set()  # whole words only
    assert _found("nvoice") == set()  # not a substring search


def test_endpoint_words_and_model_names_still_match():
    emb = exchange_make(endpoint="/v1/embeddings", model="text-embedding-3-small", body={"input": "x"})
    answered = exchange_make(model="gpt-4o")
    Response.objects.filter(request=answered).update(model="gpt-4o-2024-08-06")
    assert _found("embeddings") == {emb.pk}
    assert _found("embedding-3") == {emb.pk}  # model names: any part of the name
    assert _found("2024-08") == {answered.pk}  # the answering model's name


def test_deleted_exchanges_leave_the_index():
    gone = exchange_make(body={"input": "ephemeral marmot"}, resp_body={"output": "marmot again"})
    Request.objects.filter(pk=gone.pk).delete()
    assert _found("marmot") == set()
    kept = exchange_make(body={"input": "a marmot returns"})
    assert _found("marmot") == {kept.pk}


def test_the_search_reads_the_text_index():
    exchange_make(body={"input": "indexed"})
    sql, params = Request.objects.filter(search_q("indexed")).values("pk").query.sql_with_params()
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
            plan = " ".join(str(row[-1]) for row in cursor.fetchall())
            assert "VIRTUAL TABLE INDEX" in plan and "requests_text_fts" in plan and "responses_text_fts" in plan
        else:
            cursor.execute("SET enable_seqscan = off")  # a tiny table is cheaper to scan; ask if the index can serve
            cursor.execute(f"EXPLAIN {sql}", params)
            plan = " ".join(row[0] for row in cursor.fetchall())
            assert "requests_text_idx" in plan and "responses_text_idx" in plan


@pytest.mark.django_db(transaction=True)
def test_the_migration_reverses_and_reapplies_and_indexes_existing_rows():
    before = exchange_make(body={"input": "a pangolin before the index"})
    call_command("migrate", "logs", "0007", verbosity=0)
    try:
        during = exchange_make(body={"input": "a pangolin without the index"})
    finally:
        call_command("migrate", "logs", verbosity=0)
    assert _found("pangolin") == {before.pk, during.pk}  # rows written before the index are indexed


@pytest.mark.parametrize("rare_below", [1000, 1])  # few matching answers: IN (their requests); many: EXISTS
@pytest.mark.parametrize("value", ["answered_by=gpt-4o-2024-08-06", "status=interrupted", "status=5xx"])
def test_response_filters_find_the_same_rows_for_a_rare_or_a_common_value(admin_client, monkeypatch,
                                                                          rare_below, value):
    import logs.selectors

    monkeypatch.setattr(logs.selectors, "RARE_ANSWERS", rare_below)
    dated = exchange_make(model="gpt-4o")
    Response.objects.filter(request=dated).update(model="gpt-4o-2024-08-06")
    cut = exchange_make(status=None, outcome="interrupted")
    failed = exchange_make(status=503)
    exchange_make()
    expected = {"answered_by=gpt-4o-2024-08-06": dated, "status=interrupted": cut, "status=5xx": failed}[value]
    assert _ids(admin_client.get(f"{LIST}?{value}")) == [expected.pk.hex]


def test_a_json_bodys_escaped_words_are_found_decoded():
    """Stored as JSON text, "\\nQuarterly" was the word "nquarterly" and "K\\u00fcndigung" (Python's json.dumps,
    requests' json=) the word "u00fcndigung": neither was found."""
    asked = exchange_make(body='{"messages": [{"role": "user", "content": '
                               '"Line one\\nQuarterly report\\n\\tIndented item, K\\u00fcndigung f\\u00fcr Herrn"}]}')
    answered = exchange_make(resp_body='{"choices": [{"message": {"content": "Z\\u00fcrich \\u6771\\u4eac"}}]}')
    for word in ("quarterly", "indented", "kündigung", "Kündigung"):
        assert _found(word) == {asked.pk}, word
    assert _found("zürich") == {answered.pk} and _found("東京") == {answered.pk}
    assert _found("nquarterly") == set() and _found("u00fcndigung") == set()


def test_a_word_cut_between_a_streams_chunks_is_found():
    """The words of a streamed answer are in its reassembled result, not whole in any one chunk."""
    pieces = ["The inv", "oice num", "ber is 47", "11 for Z\\u00fcrich"]
    raw = "".join(f'data: {{"choices": [{{"index": 0, "delta": {{"content": "{p}"}}}}]}}\n\n' for p in pieces)
    result = {"choices": [{"index": 0, "message": {"role": "assistant",
                                                   "content": "The invoice number is 4711 for Zürich"}}]}
    streamed = exchange_make(stream=True, resp_body=raw, stream_result={"events": 4, "result": result})
    assert _found("invoice 4711") == {streamed.pk} and _found("zürich") == {streamed.pk}
