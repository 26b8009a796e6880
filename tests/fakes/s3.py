"""A loopback S3 for tests: moto's own server on 127.0.0.1, with fake credentials.

`serve_s3(bucket)` starts ``moto.server.ThreadedMotoServer`` bound to 127.0.0.1 on a port the OS picks (port 0:
always free), creates `bucket` with boto3 through that loopback endpoint, and yields an `S3Double`: its
`endpoint` (what DVC's remote option ``endpointurl`` takes), `bucket`, the fake credentials as environment
variables (`credentials_env`, with empty AWS config files in place of ~/.aws: set them for the client under
test, so that credentials come from the environment, as the README asks of a real remote) and `object_keys()` to see what the client stored.

The server only listens on loopback, and every S3 client must be given `endpoint`; wrap the client side in
`tests.fakes.loopback.loopback_guard` so that a request that would go to a real AWS host fails the test instead.
moto keeps buckets in process memory, shared by every server of the process: give each test its own bucket name.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import boto3
from moto.server import ThreadedMotoServer

REGION = "us-east-1"


def fake_credentials_env(aws_dir: Path) -> dict[str, str]:
    """Environment variables that give botocore made-up credentials, and empty config and credentials files in
    `aws_dir` instead of the user's ~/.aws (clients read those files, and must not find real profiles there)."""
    (aws_dir / "config").write_text("", encoding="utf-8")
    (aws_dir / "credentials").write_text("", encoding="utf-8")
    return {
        "AWS_ACCESS_KEY_ID": "mptz-test-access-key",
        "AWS_SECRET_ACCESS_KEY": "mptz-test-secret-key",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(aws_dir / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(aws_dir / "credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@dataclass
class S3Double:
    endpoint: str
    bucket: str
    credentials_env: dict[str, str]

    def client(self):
        """A boto3 S3 client for this double, with the fake credentials passed explicitly."""
        env = self.credentials_env
        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])

    def object_keys(self, prefix: str = "") -> list[str]:
        """Every key stored in the bucket under `prefix`, sorted."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", ()))


@contextmanager
def serve_s3(bucket: str) -> Iterator[S3Double]:
    """A moto S3 server on 127.0.0.1 holding the empty bucket `bucket`; stopped when the block ends."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        with tempfile.TemporaryDirectory(prefix="mptz-aws-") as aws_dir:
            host, port = server.get_host_and_port()
            double = S3Double(endpoint=f"http://{host}:{port}", bucket=bucket,
                              credentials_env=fake_credentials_env(Path(aws_dir)))
            double.client().create_bucket(Bucket=bucket)
            yield double
    finally:
        server.stop()
