"""Memory of a gateway worker (with its ingest process) relaying large bodies, local folder vs S3.

`python -m bench.s3_memory [--rounds 3]` starts the mock upstream, moto's S3 server and, in turn,
a one-worker gateway storing payload files in a local folder and one storing them in a bucket
(FILE_STORAGE_URL). After one small file has been stored (the ingest process is running and
the store's client is made), it relays a 200 MB answer down and a 100 MB upload up, and samples
the resident memory of the worker and its ingest process from before the request until the log
has written the exchange (its file is then in the store): the growth is what one large body
costs. The ingest process's own growth is printed apart: it is the process that talks to the
store, where the worker's share is its relay buffers, the same for both stores. It then reads
the 200 MB file back through the admin's file view, whole and as a 1 MB byte range near its end
(as a browser scrubbing audio asks), sampling the same processes: what serving a large file from
the store costs. Prints one JSON line per gateway and round.
"""

import argparse
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from bench.probes import MIB, RssSampler, _download, _upload
from bench.servers import (PYTHON, ROOT, gateway_cleanup, gateway_prepare, gateway_start, mock_start, port_free,
                           port_wait)

BUCKET = "bench-payloads"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_DEFAULT_REGION": "us-east-1"}
ADMIN = {"DJANGO_SUPERUSER_USERNAME": "bench", "DJANGO_SUPERUSER_PASSWORD": "bench-only-pw-7x",
         "DJANGO_SUPERUSER_EMAIL": "bench@example.invalid"}


def _moto_start() -> tuple[subprocess.Popen, str]:
    port = port_free()
    proc = subprocess.Popen([os.path.join(os.path.dirname(PYTHON), "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port_wait(port)
    url = f"http://127.0.0.1:{port}"
    import boto3

    boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"]).create_bucket(Bucket=BUCKET)
    return proc, url


def _logged(url: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(f"{url}/health", timeout=10).json()["pending_log_records"] == 0:
            return
        time.sleep(0.1)
    raise RuntimeError("the log did not catch up")


def _stored(env: dict[str, str]) -> int:
    """How many files the gateway's payload store holds."""
    if not env.get("FILE_STORAGE_URL"):
        return sum(1 for p in (Path(env["DATA_DIR"]) / "files").rglob("*") if p.is_file())
    import boto3

    prefix = env["FILE_STORAGE_URL"].split("/", 3)[3]
    s3 = boto3.client("s3", endpoint_url=env["AWS_S3_ENDPOINT_URL"], region_name="us-east-1",
                      aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
    return s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix + "/").get("KeyCount", 0)


def _measure(url: str, pid: int, env: dict[str, str], work) -> tuple[float, float]:
    """Peak growth (MiB) of the worker and its children, and of its children (the ingest process)
    alone, from before `work` until its file is stored and the log caught up (the response record
    can come just after the client got the last byte)."""
    sampler = RssSampler(pid)
    before, before_children, files = sampler.rss(), sampler.rss_children(), _stored(env)
    with RssSampler(pid) as s:
        work()
        deadline = time.monotonic() + 300
        while _stored(env) == files and time.monotonic() < deadline:
            time.sleep(0.1)
        _logged(url)
    return (s.peak - before) / MIB, (s.peak_children - before_children) / MIB


def _largest_file(env: dict[str, str]) -> str:
    """The id of the largest stored file in a gateway's log."""
    code = ("import django; django.setup(); from logs.models import BinaryFile; "
            "print(BinaryFile.objects.order_by('-size').values_list('id', flat=True)[0].hex)")
    return subprocess.run([PYTHON, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def _admin_read(url: str, file_id: str, byte_range: str = "") -> None:
    """Log in to the admin and read a stored file through its file view, discarding the bytes."""
    with httpx.Client(base_url=url, timeout=300) as admin:
        admin.get("/admin/login/")
        admin.post("/admin/login/", data={"username": ADMIN["DJANGO_SUPERUSER_USERNAME"],
                                          "password": ADMIN["DJANGO_SUPERUSER_PASSWORD"],
                                          "csrfmiddlewaretoken": admin.cookies["csrftoken"], "next": "/admin/"})
        headers = {"Range": byte_range} if byte_range else {}
        with admin.stream("GET", f"/admin/logs/request/file/{file_id}/", headers=headers) as r:
            if r.status_code != (206 if byte_range else 200):
                raise RuntimeError(f"the file view answered {r.status_code}")
            for _ in r.iter_raw(1 << 20):
                pass


def _read_growth(pid: int, work) -> float:
    """Peak growth (MiB) of the worker and its children while `work` runs."""
    before = RssSampler(pid).rss()
    with RssSampler(pid) as s:
        work()
    return (s.peak - before) / MIB


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    mock = mock_start()
    moto, moto_url = _moto_start()
    try:
        for rnd in range(args.rounds):
            for store in ("folder", "s3"):
                data_dir, env = gateway_prepare(mock.url)
                if store == "s3":
                    env = {**env, "FILE_STORAGE_URL": f"s3://{BUCKET}/r{rnd}", "AWS_S3_ENDPOINT_URL": moto_url,
                           **CREDENTIALS}
                subprocess.run([PYTHON, "manage.py", "createsuperuser", "--noinput"], cwd=ROOT, env={**env, **ADMIN},
                               check=True, capture_output=True)
                gw = gateway_start(env)
                try:
                    # Warm: the ingest process started and the store's client made (a small file stored).
                    _download(gw.url, 100_000)
                    _logged(gw.url)
                    down = _measure(gw.url, gw.pid, env, lambda: _download(gw.url, 200 * 1000 * 1000))
                    up = _measure(gw.url, gw.pid, env, lambda: _upload(gw.url, 100 * 1000 * 1000))
                    big = _largest_file(env)
                    _admin_read(gw.url, big, "bytes=0-999")  # warm: the view's modules and the store's client
                    read = _read_growth(gw.pid, lambda: _admin_read(gw.url, big))
                    ranged = _read_growth(gw.pid, lambda: _admin_read(gw.url, big, "bytes=198000000-198999999"))
                    print(json.dumps({"round": rnd, "store": store, "download_200mb_growth_mib": round(down[0], 1),
                                      "upload_100mb_growth_mib": round(up[0], 1),
                                      "download_200mb_ingest_growth_mib": round(down[1], 1),
                                      "upload_100mb_ingest_growth_mib": round(up[1], 1), "admin_read_200mb_growth_mib":
                                      round(read, 1), "admin_range_1mb_growth_mib": round(ranged, 1)}), flush=True)
                finally:
                    gw.stop()
                    gateway_cleanup(data_dir, env)
    finally:
        mock.stop()
        moto.send_signal(signal.SIGTERM)
        moto.wait(10)


if __name__ == "__main__":
    main()
