"""An S3-compatible server on 127.0.0.1 for the tests: moto's server mode as a subprocess.

The gateway processes reach it through FILE_STORAGE_URL and the standard AWS_* variables, as they
would reach MinIO, R2 or AWS; the tests read the bucket with boto3. moto keeps everything in
memory: a stopped server comes back empty (`start` creates the bucket again).
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import httpx

from tests.procs import free_port

MOTO_SERVER = Path(sys.executable).with_name("moto_server")
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test-access-key", "AWS_SECRET_ACCESS_KEY": "test-secret-key",
               "AWS_DEFAULT_REGION": "us-east-1"}


class MotoServer:
    """`moto_server` on a free local port, holding one bucket."""

    def __init__(self, bucket: str = "gateway-payloads") -> None:
        self.bucket = bucket
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.recording = Path(tempfile.mkdtemp(prefix="moto-")) / "recording"  # see recorded()
        self.start()

    def start(self, timeout: float = 30.0) -> None:
        """Start the server (again, on the same port) and create the bucket."""
        self.proc = subprocess.Popen([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(self.port)],
                                     env={**os.environ, "MOTO_RECORDER_FILEPATH": str(self.recording)},
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{self.url}/moto-api/", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            self.stop()
            raise RuntimeError("moto_server did not start")
        self.client().create_bucket(Bucket=self.bucket)

    def stop(self) -> None:
        """Stop the server (its objects are gone with it)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    @contextmanager
    def recorded(self) -> Iterator[list[tuple[str, str]]]:
        """The requests the server gets inside the block, as (method, URL), filled in when it ends
        (moto's recorder, on only for the block: it writes each request's body to its file)."""
        seen: list[tuple[str, str]] = []
        httpx.post(f"{self.url}/moto-api/recorder/reset-recording")
        httpx.post(f"{self.url}/moto-api/recorder/start-recording")
        try:
            yield seen
        finally:
            httpx.post(f"{self.url}/moto-api/recorder/stop-recording")
            lines = self.recording.read_text().splitlines() if self.recording.exists() else []
            seen.extend((entry["method"], entry["url"]) for entry in map(json.loads, lines))

    def client(self):
        """A boto3 S3 client for the test's own reads."""
        return boto3.client("s3", endpoint_url=self.url, aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")

    def env(self, prefix: str) -> dict[str, str]:
        """The environment a gateway process needs to store its payload files here under prefix."""
        return {"FILE_STORAGE_URL": f"s3://{self.bucket}/{prefix}", "AWS_S3_ENDPOINT_URL": self.url, **CREDENTIALS}

    def objects(self, prefix: str) -> dict[str, bytes]:
        """Every object under prefix/, by its name in the payload store (the prefix taken off)."""
        s3 = self.client()
        keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                                  Prefix=f"{prefix}/")
                for o in page.get("Contents", [])]
        return {k[len(prefix) + 1:]: s3.get_object(Bucket=self.bucket, Key=k)["Body"].read() for k in keys}
