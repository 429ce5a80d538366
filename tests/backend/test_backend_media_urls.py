"""Task image URLs: only Label Studio's own media paths on LABEL_STUDIO_URL's origin are fetched with the key.

Every hostile variant goes through the real ``/predict`` endpoint against a real media server, and a
second real HTTP server on another port (the canary) records every request: it must see none, and
the Label Studio token must never reach it.
"""

from __future__ import annotations

import string
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from backend.labelstudio import MEDIA_PATHS, LabelStudioClient, MediaError, UnsafeMediaUrl, resolve_media_url
from backend.settings import Settings
from combined_coco.schema import Schema
from tests.backend.backend_fakes import FakePredictor, animal, make_backend, png_bytes, predict_payload
from tests.support.backend import MediaServer


@pytest.fixture
def canary() -> Iterator[MediaServer]:
    server = MediaServer("never-the-real-token", {})
    yield server
    server.stop()


def hostile_urls(canary: str, media: str) -> list[str]:
    """``canary`` and ``media`` are ``host:port``; each URL once reached another host or a non-media path."""
    canary_port = canary.rsplit(":", 1)[1]
    return [
        # leading control characters / spaces that urljoin used to strip after the "/"
        *(f"/{c}//{canary}/x" for c in ("\t", " ", "\r", "\n", "\x00", "\x0b", "\x0c", "\x1f", "\x7f")),
        f"/\u200b//{canary}/x",  # a zero-width space (format character)
        f"\t//{canary}/x",
        f"//{canary}/data/upload/1/cat.png",
        f"http://{canary}/data/upload/1/cat.png",
        f"HTTP://{canary}/data/upload/1/cat.png",
        f"http:{canary}/data/upload/1/cat.png",
        f"http://{media}@{canary}/data/upload/1/cat.png",  # userinfo
        f"http://user:pass@{media}/data/upload/1/cat.png",
        f"http://2130706433:{canary_port}/data/upload/1/cat.png",  # decimal 127.0.0.1
        f"http://0x7f000001:{canary_port}/data/upload/1/cat.png",
        f"http://0177.0.0.1:{canary_port}/data/upload/1/cat.png",
        f"http://[::1]:{canary_port}/data/upload/1/cat.png",
        f"http://[::ffff:127.0.0.1]:{canary_port}/data/upload/1/cat.png",
        "http://169.254.169.254/latest/meta-data/",
        "file:///etc/passwd",
        f"ftp://{canary}/x",
        # backslashes, which WHATWG parsers read as "/"
        f"/\\{canary}/x",
        f"\\\\{canary}/x",
        f"http:\\\\{canary}\\data\\upload\\1\\cat.png",
        "/data/upload/1/..\\..\\api/current-user/token",
        # percent-encoded separators and dots
        f"/%2f%2f{canary}/x",
        f"/%2F/{canary}/x",
        "/data/upload/1/..%2f..%2fapi/current-user/token",
        "/data/upload/%2e%2e/%2e%2e/api/current-user/token",
        "/data/upload/1/%2E%2E/%2E%2E/%2E%2E/api/current-user/token",
        "/data/upload/1/%5c..%5capi",
        "/data/upload/1/%00.png",
        # dot segments onto other Label Studio paths (authenticated GETs to the API)
        "/data/upload/1/../../../api/current-user/token",
        "/data/upload/../api/projects",
        "/../../api/current-user/token",
        f"http://{media}/data/upload/1/../../../api/current-user/token",
        f"http://{media}/api/current-user/token",
        "/api/current-user/token",
        "/data/upload/",
        "/data/uploadx/1/cat.png",
        "/tasks/1/resolve/../../../api/current-user/token",
        "/tasks/x/resolve/?fileuri=abc",
        # unparsable: bad ports and brackets are this task's error, not the batch's 500
        f"http://{media.rsplit(':', 1)[0]}:99999/data/upload/1/cat.png",
        f"http://{media.rsplit(':', 1)[0]}:port/data/upload/1/cat.png",
        "http://[::1/data/upload/1/cat.png",
        "data/upload/1/cat.png",  # not rooted
        "javascript:alert(1)",
        "",
    ]


def test_hostile_task_urls_never_reach_another_host_or_a_non_media_path(
    settings: Settings, schema: Schema, media_server: MediaServer, canary: MediaServer, backend_redis_url: str
) -> None:
    media_server.redirects["/data/upload/1/redirect.png"] = f"{canary.url}/stolen"
    backend = make_backend(settings, FakePredictor(schema, [animal(schema)]), backend_redis_url)
    backend.publish(1)
    media, canary_host = urlsplit(media_server.url).netloc, urlsplit(canary.url).netloc
    urls = [*hostile_urls(canary_host, media), "/data/upload/1/redirect.png"]
    seen_before = len(media_server.requests)
    payload = predict_payload()
    payload["tasks"] = [{"id": i, "data": {"image": url}} for i, url in enumerate(urls)]
    response = backend.client.post("/predict", json=payload)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == len(urls)
    for url, result in zip(urls, results):
        assert result["result"] == [] and result["error"], url
    assert canary.requests == [] and canary.authorizations == []
    reached = media_server.requests[seen_before:]
    assert reached == ["/data/upload/1/redirect.png"]  # the redirect is answered, never followed


def test_media_urls_label_studio_serves_are_fetched(
    settings: Settings, schema: Schema, media_server: MediaServer, backend_redis_url: str
) -> None:
    backend = make_backend(settings, FakePredictor(schema, [animal(schema)]), backend_redis_url)
    backend.publish(1)
    media_server.files["/data/upload/1/a%20cat.png"] = png_bytes()
    media_server.files["/data/local-files/?d=pets/cat.png"] = png_bytes()
    media_server.files["/tasks/11/resolve/?fileuri=czM6Ly9iL2NhdC5wbmc="] = png_bytes()
    urls = [
        "/data/upload/1/cat.png",
        f"{media_server.url}/data/upload/1/cat.png",
        f"//{urlsplit(media_server.url).netloc}/data/upload/1/cat.png",
        "/data/upload/2/../1/./cat.png",
        "/data/upload/1/a%20cat.png",
        "/data/local-files/?d=pets/cat.png",
        "/tasks/11/resolve/?fileuri=czM6Ly9iL2NhdC5wbmc=",
    ]
    payload = predict_payload()
    payload["tasks"] = [{"id": i, "data": {"image": url}} for i, url in enumerate(urls)]
    results = backend.client.post("/predict", json=payload).json()["results"]
    assert [bool(r["result"]) for r in results] == [True] * len(urls), results


def test_a_path_prefix_in_label_studio_url_is_kept_and_enforced(
    settings: Settings, media_server: MediaServer, canary: MediaServer
) -> None:
    media_server.files["/ls/data/upload/1/cat.png"] = png_bytes()
    earlier = len(media_server.requests)  # the server is shared: other tests' key checks ask /api/ legitimately
    prefixed = LabelStudioClient(Settings(**{**settings.__dict__, "label_studio_url": f"{media_server.url}/ls"}))
    for url in ("/data/upload/1/cat.png", "/ls/data/upload/1/cat.png", f"{media_server.url}/ls/data/upload/1/cat.png"):
        assert prefixed.fetch_bytes(url, 1) == png_bytes(), url
    canary_host = urlsplit(canary.url).netloc
    for url in [
        f"{media_server.url}/data/upload/1/cat.png",  # same origin, outside the prefix
        f"{media_server.url}/ls/../data/upload/1/cat.png",
        "/ls/../../api/current-user/token",
        *hostile_urls(canary_host, urlsplit(media_server.url).netloc),
    ]:
        with pytest.raises(MediaError):
            prefixed.fetch_bytes(url, 1)
    assert canary.requests == []
    assert not any("/api/" in path for path in media_server.requests[earlier:]), media_server.requests[earlier:]


def test_training_downloads_use_the_same_checks(settings: Settings, canary: MediaServer) -> None:
    client = LabelStudioClient(settings)  # backend/training.py downloads with fetch_bytes
    with pytest.raises(MediaError, match="task 7: .*control character"):
        client.fetch_bytes(f"/\t//{urlsplit(canary.url).netloc}/x", 7)
    assert canary.requests == []


BASES = ["http://127.0.0.1:8080", "https://ls.example.org", "http://ls.internal:8080/ls"]
URL_ALPHABET = string.printable + "\x00\x7f\u200b\u0085\u2028\uff0f\u00a0é"
URL_PIECES = ["/", "//", "\\", "..", ".", "%2e", "%2f", "%5c", "%00", "@", ":", "?", "#", "[", "]",
              "http:", "https://", "data/upload/", "/data/upload/1/", "data/local-files/", "tasks/1/resolve/",
              "127.0.0.1:9", "ls.example.org", "ls", "\t", " ", "\r\n"]  # fmt: skip


@hypothesis_settings(max_examples=3000, deadline=None)
@given(
    base=st.sampled_from(BASES),
    url=st.lists(st.one_of(st.sampled_from(URL_PIECES), st.text(URL_ALPHABET, max_size=6)), max_size=12).map("".join),
)
def test_resolved_urls_stay_on_the_label_studio_origin_and_its_media_paths(base: str, url: str) -> None:
    try:
        resolved = resolve_media_url(base, url)
    except UnsafeMediaUrl:
        return
    expected, got = httpx.URL(base), httpx.URL(resolved)  # what the fetch will actually connect to
    assert (got.scheme, got.host, got.port) == (expected.scheme, expected.host, expected.port)
    assert not got.userinfo
    prefix = expected.path.rstrip("/")
    assert got.path.startswith(prefix + "/")
    segments = got.path[len(prefix) :].split("/")
    assert ".." not in segments and "." not in segments
    assert MEDIA_PATHS.fullmatch(got.path[len(prefix) :]), resolved
    assert not any(ch.isspace() or ord(ch) < 0x20 or ch == "\\" for ch in resolved)
