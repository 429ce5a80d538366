"""The edge to Label Studio: the SDK client, project export, and task media, with errors in plain words.

Media is fetched from the one Label Studio configured in ``LABEL_STUDIO_URL`` and nowhere else:
task data is user input, and following an absolute URL to another host would let anyone who can
import a task make this backend fetch internal addresses (SSRF). Relative URLs such as
``/data/upload/3/abc.jpg`` and absolute URLs on the same origin are fetched with the API key;
everything else is refused with a message saying what to do.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import numpy as np

from backend.settings import Settings
from combined_coco.images import ImageReadError, ImageTooLarge, read_image

log = logging.getLogger(__name__)


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
        self._origin = _origin(self.base_url)
        self.sdk = LabelStudio(base_url=self.base_url, api_key=settings.label_studio_api_key)
        self._http = httpx.Client(timeout=settings.media_timeout, follow_redirects=False)

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
        request = self._http.build_request("GET", url, headers=self._auth_headers())
        try:
            response = self._http.send(request, stream=stream)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        if response.status_code in (401, 403):
            response.close()
            raise LabelStudioError(
                f"Label Studio at {self.base_url} rejected LABEL_STUDIO_API_KEY (HTTP {response.status_code});"
                " create a new Personal Access Token for a user who is a member of the project"
            )
        return response

    # ---- project data ------------------------------------------------------------------------
    def label_config(self, project_id: int) -> str:
        response = self._get(f"{self.base_url}/api/projects/{project_id}")
        if response.status_code != 200:
            raise LabelStudioError(f"Label Studio project {project_id}: HTTP {response.status_code} {response.text[:200]}")
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
    def media_url(self, url: str, task_id: Any = None) -> str:
        """The absolute URL to fetch, or :class:`MediaError` if it is not on the Label Studio origin."""
        if not isinstance(url, str) or not url:
            raise MediaError(f"task {task_id}: no image URL in the task data")
        if url.startswith("/") and not url.startswith("//"):
            return urljoin(self.base_url + "/", url.lstrip("/"))
        if _origin(url) == self._origin:
            return url
        raise MediaError(
            f"task {task_id}: image {url[:120]!r} is not served by Label Studio ({self.base_url}); "
            "the backend only fetches media from Label Studio. Upload the image to the project or "
            "connect the storage in Label Studio so that tasks reference it through Label Studio."
        )

    def fetch_bytes(self, url: str, task_id: Any = None) -> bytes:
        absolute = self.media_url(url, task_id)
        limit = self.settings.max_image_bytes
        response = self._get(absolute, stream=True)
        try:
            if response.status_code != 200:
                raise MediaError(f"task {task_id}: Label Studio answered HTTP {response.status_code} for {url}")
            declared = int(response.headers.get("content-length") or 0)
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

    def fetch_image(self, url: str, task_id: Any = None) -> np.ndarray:
        """HxWx3 uint8 RGB, after checking the pixel count before decoding."""
        return decode_image(self.fetch_bytes(url, task_id), self.settings.max_image_pixels, task_id)


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


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port
