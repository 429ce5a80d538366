"""Images embedded in a task as ``data:`` URLs (``data:image/png;base64,...``).

Label Studio accepts them in task data; the URL then *is* the image. It must not become a file name
(a chunk of base64) nor be copied into the COCO file (megabytes per image, once per annotation), so
such an image gets a stable name from its task id and a real extension from its MIME type, the COCO
file records only ``data:<mime>;base64,(N bytes)``, and the bytes are written where the caller keeps
images (:meth:`EmbeddedImage.write`).
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import re
from dataclasses import dataclass
from pathlib import Path

# Far above a photo; the URL itself is already in memory, but decoding and writing it is bounded.
MAX_EMBEDDED_BYTES = 50_000_000

_HEADER = re.compile(r"data:([\w.+-]+/[\w.+-]+)?((?:;[\w.+-]+=[^;,]*)*)(;base64)?,", re.ASCII | re.IGNORECASE)
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}", re.ASCII)
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}", re.ASCII)


class DataUrlError(ValueError):
    """The data: URL cannot be used as an image; the message says why, in the user's terms."""


@dataclass(frozen=True)
class EmbeddedImage:
    file_name: str
    mime: str
    payload: str  # the base64 text, checked to decode

    @property
    def size(self) -> int:
        """Decoded size in bytes, without decoding."""
        return len(self.payload) // 4 * 3 - len(self.payload) + len(self.payload.rstrip("="))

    @property
    def description(self) -> str:
        """What the COCO file records in place of the URL."""
        return f"data:{self.mime};base64,({self.size} bytes)"

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / self.file_name
        target.write_bytes(base64.b64decode(self.payload, validate=True))
        return target


def is_data_url(url: str) -> bool:
    return url[:5].lower() == "data:"


def embedded_image(url: str, task_id: object) -> EmbeddedImage:
    """The image a data: URL holds, named ``task_<id>.<ext>`` (or by a digest of its bytes when the
    task id cannot be part of a file name), or :class:`DataUrlError`."""
    header = _HEADER.match(url)
    if header is None or not header.group(3):
        raise DataUrlError("its data: URL is not base64-encoded (data:image/<type>;base64,...)")
    mime = (header.group(1) or "").lower()
    extension = mimetypes.guess_extension(mime) if mime.startswith("image/") else None
    if extension is None:
        raise DataUrlError(f"its data: URL holds {mime or 'no MIME type'!r}, not a known image type")
    image = EmbeddedImage("", mime, url[header.end() :])
    if image.size > MAX_EMBEDDED_BYTES:  # before reading the payload at all
        raise DataUrlError(
            f"its data: URL holds {image.size} bytes, more than the limit of {MAX_EMBEDDED_BYTES}; "
            "upload the image to the project instead"
        )
    payload = image.payload
    if len(payload) % 4 or _BASE64.fullmatch(payload) is None:
        raise DataUrlError("its data: URL is not valid base64")
    usable_id = isinstance(task_id, (int, str)) and not isinstance(task_id, bool) and _SAFE_ID.fullmatch(str(task_id))
    stem = f"task_{task_id}" if usable_id else f"embedded_{hashlib.sha256(payload.encode('ascii')).hexdigest()[:16]}"
    return EmbeddedImage(stem + extension, mime, payload)
