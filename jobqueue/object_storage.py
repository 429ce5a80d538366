"""Where processes that share no disk share files: a local folder, or ``s3://bucket/prefix`` on any S3 API.

The model store (:mod:`backend.model_store`) and augmentation runs (:mod:`augmentation.jobs`) name
their folders by URL; :func:`location` turns one into a :class:`Location` with the few operations
they need (read, write atomically, list, copy to and from a local file, remove). A local path
behaves as before; an ``s3://`` URL lets workers on several machines (MinIO, AWS S3) share models
and augmentation data with nothing mounted.

Why boto3 and not fsspec/s3fs: Label Studio 1.23, installed in the same environment, depends on
boto3/botocore, and s3fs needs aiobotocore, which pins botocore to a narrow older range (installing
it would downgrade the botocore Label Studio runs with). boto3 is already there; the dozen lines of
S3 calls below are all this project needs.

S3 settings are boto3's own standard variables: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_DEFAULT_REGION``, and ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` for MinIO or another
S3-compatible server (path-style addressing then, as MinIO expects).

Atomicity: a local write goes to a temporary file and is renamed; an S3 PUT is all-or-nothing by
itself. A *folder* that must appear complete (a model version) is written with
:meth:`Location.write_folder`, which lists its files last-is-the-marker: readers treat the folder as
present only once its last file exists.
"""

from __future__ import annotations

import os
import shutil
import threading
from abc import ABC, abstractmethod
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

from combined_coco.dataset import write_atomic

S3_SCHEME = "s3://"


class Location(ABC):
    """A file or folder, local or in object storage, named by :attr:`url`."""

    url: str

    @abstractmethod
    def __truediv__(self, name: str) -> Location: ...

    @abstractmethod
    def read_bytes(self) -> bytes:
        """The file's bytes; FileNotFoundError when it does not exist."""

    @abstractmethod
    def write_bytes(self, data: bytes) -> None:
        """Replace the file atomically: a reader sees the old bytes or the new ones, never a part."""

    @abstractmethod
    def exists(self) -> bool: ...

    @abstractmethod
    def stamp(self) -> Hashable | None:
        """Something that changes whenever the file is replaced (None: no such file); one stat or HEAD."""

    @abstractmethod
    def files(self) -> list[str]:
        """Every file below this folder, as ``/``-separated paths relative to it (empty when none)."""

    @abstractmethod
    def download(self, dest: Path) -> None:
        """Copy the file to the local ``dest`` atomically; FileNotFoundError when it does not exist."""

    @abstractmethod
    def upload(self, source: Path) -> None:
        """Replace the file with the local file ``source`` (atomically, as :meth:`write_bytes`)."""

    @abstractmethod
    def remove_tree(self) -> None:
        """Delete this folder and everything below it (nothing when it does not exist)."""

    @abstractmethod
    def write_folder(self, files: Mapping[str, Path | bytes]) -> None:
        """Create this folder with ``files`` (name -> local file or bytes), visible only when complete:
        locally a staging folder renamed into place; on S3 the objects in the given order, so the last
        one marks a complete folder for readers that check it."""

    def local_path(self) -> Path | None:
        """The local path, when this is one (cleanups that only a file system needs)."""
        return None

    def __str__(self) -> str:
        return self.url


def location(url: str | os.PathLike[str] | Location) -> Location:
    """``s3://bucket/prefix`` or a local path (made absolute: it is stored in jobs other processes run)."""
    if isinstance(url, Location):
        return url
    text = os.fspath(url)
    if text.startswith(S3_SCHEME):
        bucket, _, key = text[len(S3_SCHEME) :].partition("/")
        if not bucket:
            raise ValueError(f"{text!r} names no bucket; write s3://<bucket>/<prefix>")
        return S3Location(bucket, key.strip("/"))
    if "://" in text:
        raise ValueError(f"{text!r}: only local paths and s3:// URLs are supported")
    return LocalLocation(Path(text).resolve())


def is_remote(url: str | os.PathLike[str]) -> bool:
    return os.fspath(url).startswith(S3_SCHEME)


class LocalLocation(Location):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = str(path)

    def __truediv__(self, name: str) -> LocalLocation:
        return LocalLocation(self.path / name)

    def read_bytes(self) -> bytes:
        return self.path.read_bytes()

    def write_bytes(self, data: bytes) -> None:
        write_atomic(self.path, data)

    def exists(self) -> bool:
        return self.path.exists()

    def stamp(self) -> Hashable | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def files(self) -> list[str]:
        if not self.path.is_dir():
            return []
        return sorted(p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file())

    def download(self, dest: Path) -> None:
        if self.path.resolve() != dest.resolve():
            with self.path.open("rb") as source:
                write_atomic(dest, lambda out: shutil.copyfileobj(source, out))

    def upload(self, source: Path) -> None:
        with source.open("rb") as f:
            write_atomic(self.path, lambda out: shutil.copyfileobj(f, out))

    def remove_tree(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def write_folder(self, files: Mapping[str, Path | bytes]) -> None:
        staging = self.path.with_name(f".{self.path.name}.partial")
        staging.mkdir(parents=True)
        for name, content in files.items():
            target = staging / name
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                shutil.copyfile(content, target)
            with target.open("rb") as f:
                os.fsync(f.fileno())
        staging.rename(self.path)

    def local_path(self) -> Path:
        return self.path


class S3Location(Location):
    def __init__(self, bucket: str, key: str) -> None:
        self.bucket, self.key = bucket, key
        self.url = f"{S3_SCHEME}{bucket}/{key}" if key else f"{S3_SCHEME}{bucket}"

    def __truediv__(self, name: str) -> S3Location:
        return S3Location(self.bucket, f"{self.key}/{name}".strip("/"))

    def read_bytes(self) -> bytes:
        try:
            return bytes(_client().get_object(Bucket=self.bucket, Key=self.key)["Body"].read())
        except _client().exceptions.NoSuchKey:
            raise FileNotFoundError(f"{self.url} does not exist") from None

    def write_bytes(self, data: bytes) -> None:
        _client().put_object(Bucket=self.bucket, Key=self.key, Body=data)

    def exists(self) -> bool:
        return self.stamp() is not None

    def stamp(self) -> Hashable | None:
        client = _client()
        try:
            head = client.head_object(Bucket=self.bucket, Key=self.key)
        except client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return (head.get("ETag"), str(head.get("LastModified")), head.get("ContentLength"))

    def files(self) -> list[str]:
        prefix = f"{self.key}/" if self.key else ""
        names = []
        for page in _client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            names += [item["Key"][len(prefix) :] for item in page.get("Contents", [])]
        return sorted(names)

    def download(self, dest: Path) -> None:
        try:
            body = _client().get_object(Bucket=self.bucket, Key=self.key)["Body"]
        except _client().exceptions.NoSuchKey:
            raise FileNotFoundError(f"{self.url} does not exist") from None
        write_atomic(dest, lambda out: shutil.copyfileobj(body, out))

    def upload(self, source: Path) -> None:
        with source.open("rb") as f:
            _client().put_object(Bucket=self.bucket, Key=self.key, Body=f)

    def remove_tree(self) -> None:
        names = self.files()
        for start in range(0, len(names), 1000):  # the S3 limit per DeleteObjects request
            batch = [{"Key": (self / name).key} for name in names[start : start + 1000]]
            _client().delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    def write_folder(self, files: Mapping[str, Path | bytes]) -> None:
        for name, content in files.items():
            target = self / name
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.upload(content)


_clients: dict[tuple[int, str | None, str | None], Any] = {}
_clients_lock = threading.Lock()


def _client() -> Any:
    """One boto3 S3 client per process and endpoint/key (an RQ work horse is a fork: it must not reuse
    its parent's connections); boto3 clients are thread-safe once made."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    key = (os.getpid(), endpoint, os.environ.get("AWS_ACCESS_KEY_ID"))
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            import boto3
            from boto3.session import Config  # botocore's, as boto3 re-exports it

            config = Config(s3={"addressing_style": "path"} if endpoint else {}, retries={"mode": "standard"})
            client = boto3.client("s3", endpoint_url=endpoint, config=config)
            _clients.clear()
            _clients[key] = client
        return client
