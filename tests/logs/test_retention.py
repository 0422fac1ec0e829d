"""prune_logs and the delete service: old exchanges and their files go, in batches, one run at a time."""

from datetime import datetime, timedelta, timezone

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from logs.models import BinaryFile, Request, Response
from logs.retention import PRUNE_ADVISORY_LOCK, PruneBusy, age_parse, prune, prune_lock
from tests.logs.factory import PNG, exchange_make, file_attach, stored

pytestmark = pytest.mark.django_db(transaction=True)  # deletes commit, so files are removed
NOW = datetime.now(timezone.utc)


@pytest.fixture
def aged():
    """Five exchanges 40 days old with a file each, two recent ones (one with a file): stored names."""
    old = [exchange_make(when=NOW - timedelta(days=40, minutes=i)) for i in range(5)]
    old_files = [file_attach(r, PNG, "image/png", ".png").file.name for r in old]
    new = [exchange_make(when=NOW - timedelta(days=1)), exchange_make(when=NOW)]
    new_file = file_attach(new[0], PNG, "image/png", ".png").file.name
    assert all(stored(name) == PNG for name in [*old_files, new_file])
    return {"old": old, "old_files": old_files, "new": new, "new_file": new_file}


def test_prune_deletes_old_exchanges_and_files(aged, capsys):
    call_command("prune_logs", "--older-than", "30d", "--batch", "2")
    assert "deleted 5 exchanges and 5 files" in capsys.readouterr().out
    assert set(Request.objects.values_list("pk", flat=True)) == {r.pk for r in aged["new"]}
    assert Response.objects.count() == 2 and BinaryFile.objects.count() == 1
    assert all(stored(name) is None for name in aged["old_files"]) and stored(aged["new_file"]) == PNG


def test_a_batch_chosen_as_a_deadlocks_victim_is_tried_again(aged, capsys, monkeypatch):
    """PostgreSQL cancels one transaction of a deadlock (the ingest's rollup triggers against a batch's):
    the prune tries the batch again instead of stopping with a traceback."""
    from django.db import OperationalError

    from logs import retention

    real, failed = retention.exchanges_delete, []

    def once_deadlocked(ids, **kwargs):
        if not failed:
            failed.append(ids)
            raise OperationalError("deadlock detected\nDETAIL: Process 1 waits for ShareLock on transaction 2")
        return real(ids, **kwargs)

    monkeypatch.setattr(retention, "exchanges_delete", once_deadlocked)
    monkeypatch.setattr(retention.time, "sleep", lambda s: None)
    call_command("prune_logs", "--older-than", "30d", "--batch", "2")
    assert failed and "deleted 5 exchanges and 5 files" in capsys.readouterr().out
    assert set(Request.objects.values_list("pk", flat=True)) == {r.pk for r in aged["new"]}


def test_once_the_store_deleted_none_of_a_batch_the_rest_are_left_without_asking_it(aged, capsys, monkeypatch):
    """A store that does not answer costs one batch its timeouts, not every batch of the run."""
    from logs import retention
    from logs.models import PayloadOrphan

    asked = []

    def refusing(names):
        asked.append(list(names))
        return list(names)

    monkeypatch.setattr(retention, "payloads_delete", refusing)
    call_command("prune_logs", "--older-than", "30d", "--batch", "2")
    assert len(asked) == 1 and len(asked[0]) == 2  # the first batch's two files; the store not asked again
    assert set(PayloadOrphan.objects.values_list("name", flat=True)) == set(aged["old_files"])  # for the next prune
    assert Request.objects.count() == 2  # the rows went all the same


def test_a_prune_stopped_between_a_batchs_commit_and_its_file_deletes_is_finished_by_the_next(
        aged, capsys, monkeypatch):
    """Ctrl-C (or a crash) after a batch's rows went but before its files did: the files are not left in
    the store for good with nothing naming them; the next prune deletes them."""
    from logs import retention
    from logs.models import PayloadOrphan

    def stopped(names, store_away=False):
        raise KeyboardInterrupt  # after the commit: files_delete runs in on_commit

    with monkeypatch.context() as m:
        m.setattr(retention, "files_delete", stopped)
        with pytest.raises(KeyboardInterrupt):
            call_command("prune_logs", "--older-than", "30d", "--batch", "2")
    assert Request.objects.count() == 5  # the first batch's rows went (committed)...
    assert all(stored(name) == PNG for name in aged["old_files"])  # ...but none of its files
    call_command("prune_logs", "--older-than", "30d", "--batch", "2")
    out = capsys.readouterr().out
    assert "deleted 2 files that earlier deletes had left in the store" in out
    assert all(stored(name) is None for name in aged["old_files"]) and stored(aged["new_file"]) == PNG
    assert not PayloadOrphan.objects.exists()  # a note goes with its file


def test_dry_run_deletes_nothing(aged, capsys):
    call_command("prune_logs", "--older-than", "30d", "--dry-run")
    out = capsys.readouterr().out
    assert f"would delete 5 exchanges and 5 files ({5 * len(PNG)} bytes)" in out
    assert Request.objects.count() == 7 and all(stored(name) == PNG for name in aged["old_files"])


def test_a_second_run_waits_its_turn(aged):
    with prune_lock():
        with pytest.raises(PruneBusy):
            prune(timedelta(days=30))
        with pytest.raises(CommandError, match="another prune_logs is running"):
            call_command("prune_logs", "--older-than", "30d")
    assert Request.objects.count() == 7
    assert prune(timedelta(days=30)).exchanges == 5  # lock released: the next run proceeds


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the advisory lock is PostgreSQL's")
def test_a_run_on_another_host_sharing_postgresql_waits_its_turn(aged, tmp_path, settings):
    import psycopg

    db = settings.DATABASES["default"]
    other = psycopg.connect(dbname=db["NAME"], user=db["USER"], host=db["HOST"], port=db["PORT"] or None,
                            password=db["PASSWORD"] or None, autocommit=True)
    try:  # another host's prune: its own DATA_DIR (lock file), the same database
        other.execute("SELECT pg_advisory_lock(%s)", [PRUNE_ADVISORY_LOCK])
        settings.DATA_DIR = tmp_path
        with pytest.raises(CommandError, match="another prune_logs is running on a host sharing this database"):
            call_command("prune_logs", "--older-than", "30d")
        assert Request.objects.count() == 7
    finally:
        # Released before closing: close() does not wait for the server to end the session, so its lock
        # could outlive it for a moment and make the prune below fail (CI saw it once).
        other.execute("SELECT pg_advisory_unlock(%s)", [PRUNE_ADVISORY_LOCK])
        other.close()
    assert prune(timedelta(days=30)).exchanges == 5


def test_age_parse_and_bad_age():
    assert age_parse("30d") == timedelta(days=30) and age_parse("12h") == timedelta(hours=12)
    assert age_parse("2w") == timedelta(weeks=2) and age_parse("90m") == timedelta(minutes=90)
    for bad in ("thirty days", "999999999w", "3000000d"):  # the last two: before year 1 (a traceback before)
        with pytest.raises(CommandError, match="not an age"):
            call_command("prune_logs", "--older-than", bad)


def test_exchanges_without_response_are_pruned():
    exchange_make(when=NOW - timedelta(days=50), response=False)
    assert prune(timedelta(days=30)).exchanges == 1 and not Request.objects.exists()


def test_an_exchange_still_in_flight_is_kept(capsys):
    """No answer yet and started within a day: its answer, logged when it ends, needs its request row."""
    flying = exchange_make(when=NOW - timedelta(seconds=30), response=False)
    done = exchange_make(when=NOW - timedelta(seconds=30))
    dead = exchange_make(when=NOW - timedelta(days=2), response=False)  # its answer was never logged
    call_command("prune_logs", "--older-than", "0s", "--dry-run")
    assert "2 exchanges" in capsys.readouterr().out
    assert prune(timedelta(seconds=0)).exchanges == 2
    assert list(Request.objects.values_list("pk", flat=True)) == [flying.pk]
    assert not Request.objects.filter(pk__in=[done.pk, dead.pk]).exists()


@pytest.mark.parametrize("batch", ["0", "10001", "99999999999999999999"])
def test_a_batch_it_cannot_use_is_one_line_and_deletes_nothing(aged, batch):
    # Past 2**63 the database refused the LIMIT half-way ("IntegrityError: datatype mismatch (is the database
    # up, and migrated?)" on SQLite, "DataError: bigint out of range" on PostgreSQL), after "deleting 5 exchanges".
    with pytest.raises(CommandError, match=r"^--batch must be from 1 to 10,000, not [\d,-]+$"):
        call_command("prune_logs", "--older-than", "30d", "--batch", batch)
    assert Request.objects.count() == 7
