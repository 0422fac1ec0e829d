"""The S3 payload store: django-storages' S3 backend, uploading local files from their path.

Given an open file, s3transfer copies each multipart part into memory before sending it (the
parts in flight and those read ahead), because threads cannot share one file position. Given a
file name, each part opens the file itself and reads it from disk as the request is sent. Every
body the ingest stores is a finished local file (a spool file, or a multipart part cut out into
one: logs/pipeline/spool.py) that says where it is through temporary_file_path(), like Django's
own uploaded files, so it goes up by name. Only bytes already held in memory (images cut out of a
JSON answer) take django-storages' own path.

Settings load this module only when FILE_STORAGE_URL names a bucket, so a gateway on a local
folder never imports boto3.
"""

from django.core.files import File
from storages.backends.s3 import S3Storage
from storages.utils import clean_name


class PayloadS3Storage(S3Storage):
    """S3Storage whose uploads of local files stream from disk."""

    def _save(self, name: str, content: File) -> str:
        path = getattr(content, "temporary_file_path", None)
        if path is None:
            return super()._save(name, content)
        cleaned = clean_name(name)
        key = self._normalize_name(cleaned)
        self.bucket.Object(key).upload_file(path(), ExtraArgs=self._get_write_parameters(key, content),
                                            Config=self.transfer_config)
        return cleaned
