"""The edge to Label Studio: the SDK client, project export, and task media, with errors in plain words.

Media is fetched from the one Label Studio configured in ``LABEL_STUDIO_URL`` and nowhere else:
task data is user input, and following it to another host would let anyone who can import a task
make this backend fetch internal addresses (SSRF) and hand them the API key. :func:`resolve_media_url`
builds every fetched URL from ``LABEL_STUDIO_URL``'s origin plus the task's path, and only Label
Studio's media paths (uploads, local files, storage proxies) are fetched with the key; everything
else is refused with a message saying what to do.
"""

from __future__ import annotations

import json
import logging
import re
import time
import unicodedata
from typing import Any
from urllib.parse import SplitResult, quote, unquote, urlsplit

import httpx
import numpy as np

from backend.settings import Settings
from combined_coco.images import ImageReadError, ImageTooLarge, read_image

log = logging.getLogger(__name__)


KEY_CHECK_INTERVAL_S = 60.0  # how long a confirmed key is trusted when media answers 401/403


class LabelStudioError(RuntimeError):
    """Label Studio cannot be used right now (not configured, unreachable, token rejected)."""


class MediaError(ValueError):
    """One task's image cannot be used; the message names the task and the reason."""


class LabelStudioClient:
    """SDK client (it refreshes Personal Access Tokens) plus a plain HTTP client for media bytes."""

    def __init__(self, settings: Settings) -> None:
        if not settings.label_studio_url or not settings.label_studio_api_key:
            raise LabelStudioError(
                "LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY must be set for the backend to read task images "
                "(API key: Label Studio > Account & Settings > Personal Access Token)"
            )
        from label_studio_sdk import LabelStudio

        self.settings = settings
        self.base_url = settings.label_studio_url
        self.sdk = LabelStudio(base_url=self.base_url, api_key=settings.label_studio_api_key)
        self._http = httpx.Client(timeout=settings.media_timeout, follow_redirects=False)
        self._key_checked_at: float | None = None

    def _auth_headers(self) -> dict[str, str]:
        # The SDK turns a Personal Access Token into a short-lived access token (and refreshes it);
        # reusing its headers keeps one token logic for API calls and media downloads.
        try:
            headers = self.sdk._client_wrapper.get_headers()
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        except Exception as exc:  # the SDK raises its ApiError for a rejected refresh token
            raise LabelStudioError(f"Label Studio at {self.base_url} rejected LABEL_STUDIO_API_KEY ({exc})") from None
        return {"Authorization": headers["Authorization"]}

    def _unreachable(self, exc: Exception) -> LabelStudioError:
        return LabelStudioError(f"Label Studio at {self.base_url} is not reachable ({exc}); is it running?")

    def _get(self, url: str, *, stream: bool = False) -> httpx.Response:
        """A GET that must be allowed: 401/403 means the key is bad (not so for media, see :meth:`fetch_bytes`)."""
        response = self._send(url, stream=stream)
        if response.status_code in (401, 403):
            response.close()
            raise LabelStudioError(
                f"Label Studio at {self.base_url} rejected LABEL_STUDIO_API_KEY (HTTP {response.status_code});"
                " create a new Personal Access Token for a user who is a member of the project"
            )
        return response

    def _send(self, url: str, *, stream: bool = False) -> httpx.Response:
        request = self._http.build_request("GET", url, headers=self._auth_headers())
        try:
            return self._http.send(request, stream=stream)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None

    def check_key(self) -> None:
        """:class:`LabelStudioError` unless Label Studio accepts the key for a request every user may make.

        A 403 on one task's media only says that this user may not read that file (local files serving
        disabled, another project's upload); whether the key itself is bad is asked here, at most once per
        :data:`KEY_CHECK_INTERVAL_S`, so a batch of such tasks costs one extra request.
        """
        now = time.monotonic()
        if self._key_checked_at is not None and now - self._key_checked_at < KEY_CHECK_INTERVAL_S:
            return
        self._get(f"{self.base_url}/api/current-user/whoami").close()
        self._key_checked_at = now

    # ---- project data ------------------------------------------------------------------------
    def label_config(self, project_id: int) -> str:
        response = self._get(f"{self.base_url}/api/projects/{project_id}")
        if response.status_code != 200:
            raise LabelStudioError(
                f"Label Studio project {project_id}: HTTP {response.status_code} {response.text[:200]}"
            )
        return response.json()["label_config"]

    def export_tasks(self, project_id: int) -> list[dict[str, Any]]:
        """All annotated tasks of the project as Label Studio full JSON (the ``JSON`` export)."""
        try:
            chunks = self.sdk.projects.exports.download_sync(project_id, export_type="JSON", download_all_tasks=False)
            return json.loads(b"".join(chunks))
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        except Exception as exc:  # ApiError carries the status code and body
            status = getattr(exc, "status_code", None)
            if status in (401, 403):
                raise LabelStudioError(f"Label Studio rejected LABEL_STUDIO_API_KEY while exporting ({exc})") from None
            raise LabelStudioError(f"exporting Label Studio project {project_id} failed: {exc}") from None

    # ---- media -------------------------------------------------------------------------------
    def media_url(self, url: object, task_id: Any = None) -> str:
        """The absolute URL to fetch with the API key, or :class:`MediaError` saying what to do."""
        try:
            return resolve_media_url(self.base_url, url)
        except UnsafeMediaUrl as exc:
            shown = url[:120] if isinstance(url, str) else url
            raise MediaError(
                f"task {task_id}: image {shown!r} is refused: {exc}. The backend only fetches media from Label"
                f" Studio ({self.base_url}): upload the image to the project or connect the storage in Label"
                " Studio so that tasks reference it through Label Studio."
            ) from None

    def fetch_bytes(self, url: object, task_id: Any = None) -> bytes:
        """The image at ``url`` (whatever the task's data holds: :meth:`media_url` refuses a non-URL)."""
        absolute = self.media_url(url, task_id)
        limit = self.settings.max_image_bytes
        try:
            response = self._send(absolute, stream=True)
        except httpx.InvalidURL as exc:  # e.g. a query httpx will not encode: this task's problem, not the batch's
            raise MediaError(f"task {task_id}: image URL {str(url)[:120]!r} cannot be requested ({exc})") from None
        try:
            if response.status_code in (401, 403):
                self.check_key()  # raises if the key itself is rejected: then every task fails, say so once
                raise MediaError(
                    f"task {task_id}: Label Studio refused the image {str(url)[:120]!r} (HTTP {response.status_code})"
                    " to the API key's user: check that the file is in this project's storage and that Label"
                    " Studio may serve it (local files need LOCAL_FILES_SERVING_ENABLED=true)"
                )
            if response.status_code != 200:
                raise MediaError(f"task {task_id}: Label Studio answered HTTP {response.status_code} for {url}")
            length = response.headers.get("content-length", "")
            declared = int(length) if length.isdigit() else 0
            if declared > limit:
                raise MediaError(f"task {task_id}: image is {declared} bytes, over MAX_IMAGE_BYTES={limit}")
            data = bytearray()
            for chunk in response.iter_bytes():
                data.extend(chunk)
                if len(data) > limit:
                    raise MediaError(f"task {task_id}: image is over MAX_IMAGE_BYTES={limit}")
            return bytes(data)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        finally:
            response.close()

    def fetch_image(self, url: object, task_id: Any = None) -> np.ndarray:
        """HxWx3 uint8 RGB, after checking the pixel count before decoding."""
        return decode_image(self.fetch_bytes(url, task_id), self.settings.max_image_pixels, task_id)


# ---- media URLs ----------------------------------------------------------------------------
# Label Studio 1.23's own media endpoints (label_studio/data_import/urls.py, io_storages/urls.py):
# uploads, local-files storage (``?d=``), the cloud-storage proxies (``?fileuri=``) and persistent
# storage downloads (``?filepath=``). Nothing else is fetched with the API key.
MEDIA_PATHS = re.compile(
    r"/data/upload/[^/].*"
    r"|/data/local-files/"
    r"|/(?:tasks|projects)/\d+/(?:resolve|presign)/"
    r"|/storage-data/uploaded/"
)
_MAX_URL_CHARS = 8192
_SEGMENT_SAFE = "!$&'()*+,;=:@-._~"  # RFC 3986 pchar minus '%', so every segment is re-encoded canonically


class UnsafeMediaUrl(ValueError):
    """A task URL that does not name a Label Studio media file; the message says why."""


def resolve_media_url(base_url: str, url: object) -> str:
    """The absolute URL on ``base_url``'s origin that ``url`` (task data) names, or :class:`UnsafeMediaUrl`.

    Built, not checked: scheme, host and port always come from ``base_url``; the task URL contributes
    only a path (percent-decoded once, ``.``/``..`` resolved, re-encoded) and a query. The task's own
    authority, if it has one, must equal ``base_url``'s, and the path must be one of :data:`MEDIA_PATHS`
    under ``base_url``'s path prefix. Control characters, whitespace and backslashes are refused
    outright: URL parsers strip or reinterpret them differently, which is how ``"/\\t//host/x"`` once
    became a request to another host.
    """
    if not isinstance(url, str) or not url:
        raise UnsafeMediaUrl("no image URL in the task data")
    if len(url) > _MAX_URL_CHARS:
        raise UnsafeMediaUrl(f"the image URL is {len(url)} characters long, over {_MAX_URL_CHARS}")
    if _has_unsafe_char(url):
        raise UnsafeMediaUrl("the image URL contains a control character, whitespace or a backslash")
    base = urlsplit(base_url)
    prefix = base.path.rstrip("/")
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        raise UnsafeMediaUrl("the image URL cannot be parsed") from None
    absolute = bool(parts.scheme or parts.netloc or url.startswith("//"))
    if absolute and _authority(parts, base.scheme) != _authority(base, base.scheme):
        raise UnsafeMediaUrl("it is not served by Label Studio")
    if not absolute and not parts.path.startswith("/"):
        raise UnsafeMediaUrl("it is neither an absolute URL nor a path starting with '/'")
    path = "/" + "/".join(_resolved_segments(parts.path))
    if prefix and (path + "/").startswith(prefix + "/"):
        path = path[len(prefix) :]  # already under LABEL_STUDIO_URL's path prefix
    elif absolute and prefix:
        raise UnsafeMediaUrl(f"it is not under Label Studio's path {prefix}/")
    if not MEDIA_PATHS.fullmatch(path):
        raise UnsafeMediaUrl("it is not a Label Studio media path (/data/upload/, /data/local-files/, storage proxy)")
    encoded = "/".join(quote(segment, safe=_SEGMENT_SAFE) for segment in path.split("/"))
    query = f"?{parts.query}" if parts.query else ""
    return f"{base.scheme}://{base.netloc}{prefix}{encoded}{query}"


def _has_unsafe_char(text: str) -> bool:
    """Whitespace, a backslash, or a control/format/unassigned code point anywhere in a raw task URL."""
    return any(ch.isspace() or _is_control(ch) for ch in text)


def _is_control(ch: str) -> bool:
    return ch == "\\" or unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")


def _authority(parts: SplitResult, default_scheme: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with default ports filled in; userinfo and unparsable ports are refused."""
    scheme = (parts.scheme or default_scheme).lower()
    if "@" in parts.netloc:
        raise UnsafeMediaUrl("the image URL carries a user name or password")
    try:
        port = parts.port
    except ValueError:
        raise UnsafeMediaUrl("the image URL has an invalid port") from None
    return scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme)


def _resolved_segments(raw_path: str) -> list[str]:
    """Path segments percent-decoded once, with ``.`` and ``..`` applied; encoded separators are refused."""
    resolved: list[str] = []
    for raw in raw_path.split("/")[1:]:
        try:
            segment = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            raise UnsafeMediaUrl("the image URL path has percent-escapes that are not UTF-8") from None
        if "/" in segment or any(_is_control(ch) for ch in segment):  # a decoded space is a file name's
            raise UnsafeMediaUrl("the image URL path has an encoded slash, backslash or control character")
        if segment == "..":
            if not resolved:
                raise UnsafeMediaUrl("the image URL path climbs above the server root")
            resolved.pop()
        elif segment != ".":
            resolved.append(segment)
    return resolved


def decode_image(data: bytes, max_pixels: int, task_id: Any = None) -> np.ndarray:
    """HxWx3 uint8 RGB through the project's one image reader (EXIF orientation applied, as Label
    Studio shows the image and training reads it; pixel count checked before decoding)."""
    try:
        return read_image(data, max_pixels, name=f"task {task_id}")
    except ImageTooLarge as exc:
        size = f"{exc.size[0]}x{exc.size[1]}, " if exc.size else ""
        raise MediaError(f"task {task_id}: image is {size}over MAX_IMAGE_PIXELS={max_pixels}") from None
    except ImageReadError as exc:
        raise MediaError(str(exc)) from None
