"""The S3 payload store: django-storages' S3 backend, uploading local files from their path.

Given an open file, s3transfer copies each multipart part into memory before sending it (the
parts in flight and those read ahead), because threads cannot share one file position. Given a
file name, each part opens the file itself and reads it from disk as the request is sent. Every
body the ingest stores is a finished local file (a spool file, or a multipart part cut out into
one: logs/pipeline/spool.py) that says where it is through temporary_file_path(), like Django's
own uploaded files, so it goes up by name. Only bytes already held in memory (images cut out of a
JSON answer) take django-storages' own path.

Uploads run one part at a time on the caller's own thread (the ingest's), with no transfer
threads: botocore reads each part 1 MiB at a time to sign and checksum it, and each transfer
thread's malloc arena kept those buffers once the upload was over, megabytes per thread
(docs/benchmark.md).

Settings load this module only when FILE_STORAGE_URL names a bucket, so a gateway on a local
folder never imports boto3.
"""

from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from django.core.files import File
from storages.backends.s3 import S3Storage
from storages.utils import clean_name


# botocore's own defaults (60 s connect and read timeouts, 5 attempts) held a prune batch for three minutes
# against a store that stopped answering; the ingest waited as long before retrying. A call that fails
# is tried again later anyway (the ingest's retry, prune_logs' orphan rows). OPTIONS' client_config wins.
CLIENT_TIMEOUTS = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"})


class PayloadS3Storage(S3Storage):
    """S3Storage whose uploads of local files stream from disk, one part at a time, on the caller's thread."""

    def __init__(self, **settings) -> None:
        super().__init__(**settings)
        self.client_config = CLIENT_TIMEOUTS.merge(self.client_config)

    def get_default_settings(self) -> dict:
        # Multipart above 8 MiB; OPTIONS may still override it, the settings do not.
        return {**super().get_default_settings(), "transfer_config": TransferConfig(
            multipart_threshold=8 << 20, multipart_chunksize=8 << 20, use_threads=False)}

    def _save(self, name: str, content: File) -> str:
        path = getattr(content, "temporary_file_path", None)
        if path is None:
            return super()._save(name, content)
        cleaned = clean_name(name)
        key = self._normalize_name(cleaned)
        self.bucket.Object(key).upload_file(path(), ExtraArgs=self._get_write_parameters(key, content),
                                            Config=self.transfer_config)
        return cleaned
