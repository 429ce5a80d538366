"""The storage layer workers share (jobqueue.object_storage) and the model store on it, against a real S3 API
(moto's server on 127.0.0.1) and a local folder alike.

Oracles: the S3 server's own objects, read back with a boto3 client of the test's own (not through the
layer under test), and its request log (what a reader fetched, and how often).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.model_store import ModelCache, ModelStore
from jobqueue.object_storage import location
from tests.support.object_storage import S3Server, running_s3

BUCKET = "lsmt"


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with running_s3(BUCKET) as server:
        yield server


@pytest.fixture
def s3_env(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """boto3's standard variables, as a worker would have them."""
    for name, value in s3.aws_env().items():
        monkeypatch.setenv(name, value)
    return s3


@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "shared")
    request.getfixturevalue("s3_env")
    return f"s3://{BUCKET}/{request.node.name}"


def test_a_location_reads_writes_lists_and_removes_the_same_way_locally_and_on_s3(root: str, tmp_path: Path) -> None:
    folder = location(root)
    assert folder.files() == [] and not (folder / "a.txt").exists() and (folder / "a.txt").stamp() is None
    with pytest.raises(FileNotFoundError):
        (folder / "missing").read_bytes()
    with pytest.raises(FileNotFoundError):
        (folder / "missing").download(tmp_path / "never")
    assert not (tmp_path / "never").exists()
    (folder / "a.txt").write_bytes(b"one")
    stamp = (folder / "a.txt").stamp()
    (folder / "sub" / "b.bin").write_bytes(b"two")
    source = tmp_path / "c.bin"
    source.write_bytes(b"three" * 1000)
    (folder / "sub" / "c.bin").upload(source)
    assert folder.files() == ["a.txt", "sub/b.bin", "sub/c.bin"]
    (folder / "sub" / "c.bin").download(tmp_path / "back" / "c.bin")
    assert (tmp_path / "back" / "c.bin").read_bytes() == b"three" * 1000
    (folder / "a.txt").write_bytes(b"changed")
    assert (folder / "a.txt").read_bytes() == b"changed" and (folder / "a.txt").stamp() != stamp
    (folder / "sub").remove_tree()
    assert folder.files() == ["a.txt"]


def test_an_s3_url_names_a_bucket_and_nothing_else_is_a_url() -> None:
    with pytest.raises(ValueError, match="names no bucket"):
        location("s3:///models")
    with pytest.raises(ValueError, match="only local paths and s3://"):
        location("gs://bucket/models")
    assert location("s3://bucket/a/b/").url == "s3://bucket/a/b"


def test_model_versions_on_s3_are_visible_only_when_complete_and_current_comes_last(
    s3_env: S3Server, tmp_path: Path
) -> None:
    root = f"s3://{BUCKET}/models"
    store = ModelStore(root, cache_dir=tmp_path / "cache")
    assert store.current_version(7) == "untrained" and store.versions(7) == []
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"weights of version one")
    first = store.publish(7, weights, {"steps": 3})
    # read back by another client, not through the layer: the objects a reader on another machine sees
    assert s3_env.get_object(BUCKET, "models/7/current").decode().strip() == first
    assert s3_env.get_object(BUCKET, f"models/7/{first}/model.pt") == b"weights of version one"
    assert store.version_summaries(7)[0]["steps"] == 3

    # a publisher that died after the weights and before meta.json and current: nobody sees that version
    s3_env.put_object(BUCKET, "models/7/v0002-20990101T000000/model.pt", b"half", "application/octet-stream")
    assert store.versions(7) == [first] and store.current_version(7) == first
    assert [s["version"] for s in store.version_summaries(7)] == [first]

    # the order the publisher wrote in: the version's objects, then current
    s3_env.requests.clear()
    weights.write_bytes(b"weights of version two")
    second = store.publish(7, weights, {})
    puts = [r.path for r in s3_env.requests if r.method == "PUT"]
    assert puts == [f"/{BUCKET}/models/7/{second}/model.pt", f"/{BUCKET}/models/7/{second}/meta.json",
                    f"/{BUCKET}/models/7/current"]  # fmt: skip
    assert store.versions(7) == [first, second] and store.current_version(7) == second


def test_the_served_model_is_fetched_once_per_version_into_the_private_cache(s3_env: S3Server, tmp_path: Path) -> None:
    store = ModelStore(f"s3://{BUCKET}/served", cache_dir=tmp_path / "private")
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"v1")
    first = store.publish(3, weights, {})
    loads: list[bytes] = []

    def loader(path: Path) -> object:
        loads.append(path.read_bytes())
        assert path.is_relative_to(tmp_path / "private")
        return object()

    cache = ModelCache(store, loader)  # type: ignore[arg-type]
    s3_env.requests.clear()
    for _ in range(3):
        assert cache.get(3)[0] == first
    gets = [r.path for r in s3_env.requests if r.method == "GET" and r.path.endswith("model.pt")]
    assert gets == [f"/{BUCKET}/served/3/{first}/model.pt"] and loads == [b"v1"]

    weights.write_bytes(b"v2")
    second = store.publish(3, weights, {})
    assert cache.get(3)[0] == second and loads == [b"v1", b"v2"]
    # another process with the same private folder (a restarted backend) loads v2 without fetching it again
    s3_env.requests.clear()
    assert ModelCache(ModelStore(f"s3://{BUCKET}/served", cache_dir=tmp_path / "private"), loader).get(3)[0] == second  # type: ignore[arg-type]
    assert not [r for r in s3_env.requests if r.path.endswith("model.pt")]


def test_a_version_whose_weights_are_gone_leaves_nothing_in_the_cache(s3_env: S3Server, tmp_path: Path) -> None:
    """A version whose weights are gone is reported missing, and nothing is left in the cache for it."""
    store = ModelStore(f"s3://{BUCKET}/gone", cache_dir=tmp_path / "private")
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"w")
    version = store.publish(5, weights, {})
    s3_env.client().delete_object(Bucket=BUCKET, Key=f"gone/5/{version}/model.pt")
    assert not store.checkpoint(5, version).exists()
    assert list((tmp_path / "private").rglob("*.pt")) == []
