"""Cloud-storage images (``s3://``, ``gs://``, ``azure-blob://``): through Label Studio's storage link and its redirect.

A real HTTP server stands in for Label Studio (it checks the token and sets a session cookie on every
answer) and another for the storage host behind a pre-signed URL (it serves anyone). Both record
every request with all its headers: the storage host must never see the token or the cookie, and
every redirect that is not Label Studio's storage-link redirect to an http(s) URL must be refused.
"""

from __future__ import annotations

import base64
import logging
import string
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from backend.labelstudio import (
    MAX_STORAGE_REDIRECTS,
    STORAGE_LINK_PATHS,
    LabelStudioClient,
    MediaError,
    UnsafeMediaUrl,
    resolve_media_url,
)
from backend.settings import Settings
from combined_coco.schema import Schema
from tests.backend.backend_fakes import TOKEN, Backend, FakePredictor, animal, make_backend, png_bytes, predict_payload
from tests.support.backend import MediaServer
from tests.support.processes import free_port

SESSION_COOKIE = "sessionid=ls-session-secret"


@pytest.fixture
def label_studio() -> Iterator[MediaServer]:
    """Label Studio's stand-in: token checked, a session cookie set on every answer (as Django may)."""
    server = MediaServer(TOKEN, {}, response_headers={"Set-Cookie": f"{SESSION_COOKIE}; Path=/"})
    yield server
    server.stop()


@pytest.fixture
def storage() -> Iterator[MediaServer]:
    """The storage host behind a pre-signed URL (the canary of these tests): serves anyone, records everything."""
    server = MediaServer(None, {})
    yield server
    server.stop()


@pytest.fixture
def ls_settings(settings: Settings, label_studio: MediaServer) -> Settings:
    return Settings(**{**settings.__dict__, "label_studio_url": label_studio.url})


@pytest.fixture
def client(ls_settings: Settings) -> LabelStudioClient:
    return LabelStudioClient(ls_settings)


@pytest.fixture
def backend(ls_settings: Settings, schema: Schema, backend_redis_url: str) -> Backend:
    """The real app on Label Studio's stand-in, with a published (stand-in) model for project 1."""
    backend = make_backend(ls_settings, FakePredictor(schema, [animal(schema)]), backend_redis_url)
    backend.publish(1)
    return backend


def link(task_id: int, uri: str) -> str:
    """Label Studio's storage link for ``uri`` in task ``task_id``, as the SDK's get_local_path builds it."""
    return f"/tasks/{task_id}/presign/?fileuri={base64.urlsafe_b64encode(uri.encode()).decode()}"


def assert_nothing_of_label_studio_reached(storage: MediaServer) -> None:
    for headers in storage.request_headers:
        names = {name.lower() for name in headers}
        assert not names & {"authorization", "cookie", "proxy-authorization"}, headers
        assert not any(TOKEN in value or "ls-session-secret" in value for value in headers.values()), headers
    assert not any(TOKEN in path for path in storage.requests)


def test_cloud_uris_are_fetched_through_label_studios_storage_link(backend: Backend, label_studio: MediaServer) -> None:
    """Storage with pre-signed URLs off: Label Studio answers the link itself with the bytes."""
    uris = ["s3://bucket/dir/cat.png", "gs://bucket/cat.png", "azure-blob://container/a cat.png"]
    for task_id, uri in enumerate(uris, start=20):
        label_studio.files[link(task_id, uri)] = png_bytes()
    payload = predict_payload()
    payload["tasks"] = [{"id": i, "data": {"image": uri}} for i, uri in enumerate(uris, start=20)]
    results = backend.client.post("/predict", json=payload).json()["results"]
    assert [bool(r["result"]) for r in results] == [True] * len(uris), results
    assert label_studio.requests == [link(i, uri) for i, uri in enumerate(uris, start=20)]
    assert label_studio.authorizations == [f"Token {TOKEN}"] * len(uris)


def test_the_presigned_redirect_is_followed_without_the_token_or_label_studios_cookie(
    backend: Backend, label_studio: MediaServer, storage: MediaServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="httpx")
    presigned = "/bucket/cat.png?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=abc123"
    label_studio.redirects[link(11, "s3://bucket/cat.png")] = f"{storage.url}{presigned}"
    label_studio.files["/data/upload/1/cat.png"] = png_bytes()
    storage.files[presigned] = png_bytes()
    payload = predict_payload()  # an upload first: Label Studio's cookie lands in the client's jar
    payload["tasks"] = [
        {"id": 1, "data": {"image": "/data/upload/1/cat.png"}},
        predict_payload("s3://bucket/cat.png")["tasks"][0],
    ]
    results = backend.client.post("/predict", json=payload).json()["results"]
    assert [bool(r["result"]) for r in results] == [True, True], results
    assert storage.requests == [presigned]
    assert_nothing_of_label_studio_reached(storage)
    # httpx logs each request's URL; the signature, a credential until it expires, is left out
    assert f"{storage.url}/bucket/cat.png?<pre-signed query hidden>" in caplog.text
    assert "abc123" not in caplog.text


HOSTILE_TARGETS = [
    "file:///etc/passwd",
    "ftp://{storage}/bucket/cat.png",
    "javascript:alert(1)",
    "http://user:secret@{storage}/bucket/cat.png",
    "http://{storage}@127.0.0.1:1/bucket/cat.png",
    "http://{storage}/bucket/cat.png\\..\\x",
    "http://[::1/bucket/cat.png",
    "http://{storage}/bucket/a cat.png",  # whitespace: pre-signed URLs are percent-encoded
    "http://127.0.0.1:99999/bucket/cat.png",
]


@pytest.mark.parametrize("target", HOSTILE_TARGETS)
def test_a_storage_link_redirect_to_anything_but_http_is_refused(
    client: LabelStudioClient, label_studio: MediaServer, storage: MediaServer, target: str
) -> None:
    label_studio.redirects[link(11, "s3://bucket/cat.png")] = target.format(storage=urlsplit(storage.url).netloc)
    with pytest.raises(MediaError, match="task 11: the redirect from .* is refused"):
        client.fetch_bytes("s3://bucket/cat.png", 11)
    assert storage.requests == []


def test_a_storage_link_redirect_without_a_location_value_is_refused(
    client: LabelStudioClient, label_studio: MediaServer
) -> None:
    label_studio.redirects[link(11, "s3://bucket/cat.png")] = ""
    with pytest.raises(MediaError, match="task 11: .*no target"):
        client.fetch_bytes("s3://bucket/cat.png", 11)


@pytest.mark.parametrize("back", ["{ls}/api/current-user/token", "/api/current-user/token", "/data/upload/1/cat.png"])
def test_a_redirect_back_to_label_studio_reaches_it_without_the_token(
    client: LabelStudioClient, label_studio: MediaServer, back: str
) -> None:
    """A storage link whose redirect points at Label Studio's API: followed as any storage hop, so bare."""
    label_studio.files["/data/upload/1/cat.png"] = png_bytes()
    label_studio.redirects[link(11, "s3://bucket/cat.png")] = back.format(ls=label_studio.url)
    with pytest.raises(MediaError, match="task 11: the storage at .* answered HTTP 401"):
        client.fetch_bytes("s3://bucket/cat.png", 11)
    assert label_studio.authorizations[0] == f"Token {TOKEN}"  # the link itself
    assert len(label_studio.requests) == 2
    assert label_studio.authorizations[1] is None
    assert "Cookie" not in label_studio.request_headers[1], label_studio.request_headers[1]


def test_at_most_a_few_hops_are_followed(
    client: LabelStudioClient, label_studio: MediaServer, storage: MediaServer
) -> None:
    hops = [f"/hop{i}" for i in range(1, MAX_STORAGE_REDIRECTS + 2)]
    label_studio.redirects[link(11, "s3://bucket/far.png")] = f"{storage.url}{hops[0]}"
    storage.redirects.update({hop: f"{storage.url}{after}" for hop, after in zip(hops, hops[1:])})
    storage.files[hops[-1]] = png_bytes()
    with pytest.raises(MediaError, match=f"task 11: more than {MAX_STORAGE_REDIRECTS} redirects"):
        client.fetch_bytes("s3://bucket/far.png", 11)
    assert storage.requests == hops[:MAX_STORAGE_REDIRECTS]
    # one hop fewer reaches the file
    label_studio.redirects[link(12, "s3://bucket/near.png")] = f"{storage.url}{hops[1]}"
    assert client.fetch_bytes("s3://bucket/near.png", 12) == png_bytes()
    assert_nothing_of_label_studio_reached(storage)


@pytest.mark.parametrize(
    "path", ["/data/upload/1/cat.png", "/data/local-files/?d=pets/cat.png", "/storage-data/uploaded/?filepath=cat.png"]
)
def test_redirects_from_other_label_studio_paths_stay_refused(
    client: LabelStudioClient, label_studio: MediaServer, storage: MediaServer, path: str
) -> None:
    storage.files["/bucket/cat.png"] = png_bytes()
    label_studio.redirects[path] = f"{storage.url}/bucket/cat.png"
    with pytest.raises(MediaError, match="task 11: Label Studio redirected .* elsewhere"):
        client.fetch_bytes(path, 11)
    assert storage.requests == []


def test_storage_failures_are_that_tasks_error_and_keep_the_signature_secret(
    backend: Backend, label_studio: MediaServer, storage: MediaServer
) -> None:
    expired = "/bucket/old.png?X-Amz-Signature=very-secret-signature"
    closed = f"http://127.0.0.1:{free_port()}/bucket/gone.png?X-Amz-Signature=very-secret-signature"
    label_studio.redirects[link(30, "s3://bucket/old.png")] = f"{storage.url}{expired}"  # no file: 404
    label_studio.redirects[link(31, "s3://bucket/gone.png")] = closed
    label_studio.files["/data/upload/1/cat.png"] = png_bytes()
    payload = predict_payload()
    payload["tasks"] = [
        {"id": 30, "data": {"image": "s3://bucket/old.png"}},
        {"id": 31, "data": {"image": "s3://bucket/gone.png"}},
        {"id": 32, "data": {"image": "/data/upload/1/cat.png"}},
    ]
    response = backend.client.post("/predict", json=payload)
    assert response.status_code == 200, response.text
    old, gone, fine = response.json()["results"]
    assert old["result"] == [] and "task 30: the storage at http://127.0.0.1:" in old["error"]
    assert "answered HTTP 404" in old["error"]
    assert gone["result"] == [] and "task 31: the storage behind Label Studio's link cannot be read" in gone["error"]
    assert fine["result"]
    assert "very-secret-signature" not in response.text


def test_the_size_limit_holds_behind_the_redirect(
    settings: Settings, label_studio: MediaServer, storage: MediaServer
) -> None:
    client = LabelStudioClient(
        Settings(**{**settings.__dict__, "label_studio_url": label_studio.url, "max_image_bytes": 100})
    )
    label_studio.redirects[link(11, "s3://bucket/big.png")] = f"{storage.url}/bucket/big.png"
    storage.files["/bucket/big.png"] = png_bytes()  # a few hundred bytes
    with pytest.raises(MediaError, match="task 11: image is .*over MAX_IMAGE_BYTES=100"):
        client.fetch_bytes("s3://bucket/big.png", 11)


@pytest.mark.parametrize(
    ("uri", "task_id", "reason"),
    [
        ("s3://bucket/cat.png", None, "needs the task's id"),
        ("s3://bucket/cat.png", "1/../../api", "numeric task id"),
        ("s3://bucket/cat.png", True, "needs the task's id"),
        ("s3://bucket/cat.png", "١٢", "needs the task's id"),  # Arabic-Indic digits: isdigit(), not a path id
        ("s3://bucket/cat\x00.png", 11, "control character"),
        ("s3://bucket/", 11, "not served by Label Studio"),  # no key: not a storage URI
        ("S3://bucket/cat.png", 11, "not served by Label Studio"),  # Label Studio's schemes are lower case
    ],
)
def test_cloud_uris_label_studio_cannot_resolve_are_refused(uri: str, task_id: object, reason: str) -> None:
    with pytest.raises(UnsafeMediaUrl, match=reason):
        resolve_media_url("http://127.0.0.1:8080", uri, task_id)


URI_ALPHABET = string.printable + "\x00\x7f\u200bé/"


@hypothesis_settings(max_examples=1000, deadline=None)
@given(
    base=st.sampled_from(["http://127.0.0.1:8080", "https://ls.example.org", "http://ls.internal:8080/ls"]),
    scheme=st.sampled_from(["s3", "gs", "azure-blob"]),
    rest=st.text(URI_ALPHABET, min_size=1, max_size=40),
    task_id=st.one_of(st.integers(0, 10**9), st.text(string.printable, max_size=6), st.none()),
)
def test_cloud_uris_become_a_storage_link_on_label_studios_origin(
    base: str, scheme: str, rest: str, task_id: int | str | None
) -> None:
    uri = f"{scheme}://{rest}"
    try:
        resolved = resolve_media_url(base, uri, task_id)
    except UnsafeMediaUrl:
        return
    expected, got = httpx.URL(base), httpx.URL(resolved)
    assert (got.scheme, got.host, got.port) == (expected.scheme, expected.host, expected.port)
    prefix = expected.path.rstrip("/")
    assert got.path.startswith(prefix + "/") and STORAGE_LINK_PATHS.fullmatch(got.path[len(prefix) :]), resolved
    (fileuri,) = parse_qs(got.query.decode())["fileuri"]
    assert base64.urlsafe_b64decode(fileuri).decode() == uri
    assert got.path == f"{prefix}/tasks/{int(str(task_id))}/presign/"
