"""seed_logs: fake exchanges as the log browser's benchmarks and demos use them."""

import hashlib

import pytest
from django.core.files.storage import storages

from logs.models import BinaryFile, Request
from logs.seed import exchanges_seed

pytestmark = pytest.mark.django_db


def test_seeded_files_carry_their_sha256_as_real_ones_do(settings, tmp_path):
    # The file view answers with the sha256 as ETag (If-Range needs it): seeded files must have one too.
    settings.DATA_DIR = tmp_path
    assert exchanges_seed(300, seed=7) == 300 and Request.objects.count() == 300
    files = list(BinaryFile.objects.all())
    assert files, "300 seeded exchanges include some with files"
    store = storages["payloads"]
    for f in files:
        with store.open(f.file.name, "rb") as fh:
            assert f.sha256 == hashlib.sha256(fh.read()).hexdigest()


def test_seeded_answers_are_timed_as_the_gateways_are(settings, tmp_path):
    """The gateway dates an answer at its exchange's start (docs/log.md): seeded ones too, or the dashboard and
    spend (by answer time) disagreed with the list (by request time) at hour and day edges."""
    from logs.models import Response

    settings.DATA_DIR = tmp_path
    exchanges_seed(50, seed=3)
    answers = list(Response.objects.select_related("request"))
    assert answers and all(r.created_at == r.request.created_at for r in answers)


def test_seed_logs_refuses_a_log_that_holds_exchanges_unless_told_to_add(settings, tmp_path):
    """Run in the gateway's own folder, seed_logs mixed fake exchanges into the audit log, with nothing to tell
    them apart after."""
    from io import StringIO

    from django.core.management import CommandError, call_command

    from tests.logs.factory import exchange_make

    settings.DATA_DIR = tmp_path
    real = exchange_make()
    with pytest.raises(CommandError, match="the log already holds exchanges"):
        call_command("seed_logs", "20", "--no-files", stdout=StringIO())
    assert list(Request.objects.all()) == [real]
    call_command("seed_logs", "20", "--no-files", "--add", stdout=StringIO())  # a scratch log seeded before
    assert Request.objects.count() == 21


@pytest.mark.parametrize("args, message", [
    (["0"], "count, --batch and --days must be positive"),
    (["-5"], "count, --batch and --days must be positive"),
    # Each below was a traceback (ValueError, OverflowError, a UUID out of range) or, for the count, ran until the
    # disk was full.
    (["5", "--days", "nan"], "count, --batch and --days must be positive"),
    (["5", "--days", "inf"], "--days inf is too long: the exchanges would start before 1970"),
    (["5", "--days", "1e300"], "--days 1e+300 is too long: the exchanges would start before 1970"),
    (["5", "--days", "700000"], "--days 700000 is too long: the exchanges would start before 1970"),
    (["99999999999999999999999"], "count must be at most 100,000,000, not 99,999,999,999,999,999,999,999"),
    # A batch's rows are held in memory until its transaction: one of the whole count grew until killed.
    (["5", "--batch", "100000000"], "--batch must be at most 50,000 rows, not 100,000,000"),
])
def test_seed_logs_refuses_bad_arguments_in_one_line(settings, tmp_path, args, message):
    from io import StringIO

    from django.core.management import call_command

    settings.DATA_DIR = tmp_path
    err = StringIO()
    with pytest.raises(SystemExit) as stopped:
        call_command("seed_logs", *args, "--no-files", stdout=StringIO(), stderr=err)
    assert stopped.value.code == 2 and err.getvalue() == message + "\n"
    assert not Request.objects.exists()

