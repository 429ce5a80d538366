"""A real S3 API for tests: moto's server mode on 127.0.0.1, recording every HTTP request it receives.

Label Studio's S3 storage (boto3, a custom endpoint as MinIO users set it) and the backend (pre-signed
URLs) talk to it over HTTP like to any S3-compatible server. The request log (method, raw target,
all headers) is the oracle of the cloud-storage tests: which object was read, by whom (a pre-signed
query or boto3's signed header), and that Label Studio's token never arrived. moto keeps its buckets in
this process (``moto[server]`` in the ``test`` extra).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx

REGION = "us-east-1"
# moto accepts any credentials; these only make boto3 sign its requests as it would for a real server
ACCESS_KEY_ID = "lsmt-test-key-id"
SECRET_ACCESS_KEY = "lsmt-test-secret"


@dataclass(frozen=True)
class S3Request:
    """One HTTP request as the S3 server received it."""

    method: str
    target: str  # the raw request target: path and query, percent-encoded as sent
    headers: dict[str, str]

    @property
    def path(self) -> str:
        return unquote(urlsplit(self.target).path)

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query)

    @property
    def presigned(self) -> bool:
        """Authorised by a pre-signed URL's query (what the backend follows), not by a signed header (boto3)."""
        return "X-Amz-Signature" in self.query

    def carries(self, secret: str) -> bool:
        """Whether ``secret`` appears anywhere in the request line or a header."""
        return secret in unquote(self.target) or any(secret in f"{k}: {v}" for k, v in self.headers.items())


class S3Server:
    """moto's S3 on ``127.0.0.1:<free port>``; ``url`` is the endpoint to give Label Studio (``s3_endpoint``)."""

    def __init__(self) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        app = DomainDispatcherApplication(create_backend_app)  # S3 is its default service
        self.requests: list[S3Request] = []
        self._lock = threading.Lock()

        def recording(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            headers = {key[5:].replace("_", "-").title(): str(value) for key, value in environ.items()
                       if key.startswith("HTTP_")}  # fmt: skip
            target = environ.get("RAW_URI") or environ.get("REQUEST_URI") or environ.get("PATH_INFO", "")
            with self._lock:
                self.requests.append(S3Request(environ["REQUEST_METHOD"], target, headers))
            return app(environ, start_response)

        self._server = make_server("127.0.0.1", 0, recording, threaded=True, request_handler=MotoRequestHandler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def create_bucket(self, bucket: str) -> None:
        httpx.put(f"{self.url}/{bucket}", timeout=30).raise_for_status()

    def put_object(self, bucket: str, key: str, data: bytes, content_type: str = "image/png") -> None:
        response = httpx.put(f"{self.url}/{bucket}/{key}", content=data, headers={"Content-Type": content_type})
        response.raise_for_status()

    def aws_env(self) -> dict[str, str]:
        """boto3's standard variables pointing at this server, as a worker or backend would have them."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "AWS_DEFAULT_REGION": REGION,
        }

    def client(self) -> Any:
        """A boto3 client of its own, to check what the code under test stored without going through it."""
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.url, region_name=REGION,
            aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=SECRET_ACCESS_KEY,
        )  # fmt: skip

    def get_object(self, bucket: str, key: str) -> bytes:
        return bytes(self.client().get_object(Bucket=bucket, Key=key)["Body"].read())

    def keys(self, bucket: str, prefix: str) -> list[str]:
        listing = self.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
        return [o["Key"] for o in listing.get("Contents", [])]

    def reads(self, bucket: str) -> list[S3Request]:
        """The GETs of objects in ``bucket`` (not listings), in arrival order."""
        with self._lock:
            requests = list(self.requests)
        return [
            r for r in requests if r.method == "GET" and r.path.startswith(f"/{bucket}/") and r.path != f"/{bucket}/"
        ]

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=10)


@contextmanager
def running_s3(*buckets: str) -> Iterator[S3Server]:
    """An S3 server with ``buckets`` created, stopped afterwards (the tests' fixtures)."""
    server = S3Server()
    try:
        for bucket in buckets:
            server.create_bucket(bucket)
        yield server
    finally:
        server.stop()
