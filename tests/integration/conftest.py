"""Session fixture ``label_studio``: one real Label Studio process with the export plugin.

Started like the local stack (``stack.services``) in a temporary data dir: SQLite, an admin with a
generated password and legacy API token, ML_BLOCK_LOCAL_IP/SSRF protection off so an ML backend on
localhost can be connected. The first start runs Label Studio's migrations (~90 s on 2 cores); the
process is shared with ``tests/browser`` (see ``stack.testing``) and stopped when pytest exits.

    @pytest.mark.labelstudio
    def test_something(label_studio):
        project = label_studio.client.projects.create(title="demo", label_config=xml)
        httpx.get(f"{label_studio.url}/api/projects/{project.id}", headers=label_studio.headers)
"""

from __future__ import annotations

from typing import Iterator

import pytest

from stack.testing import LabelStudioServer, session_label_studio


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> LabelStudioServer:
    return session_label_studio(tmp_path_factory)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """On a failing Label Studio test, attach the server log tail: the cause is often only there."""
    outcome = yield
    report = outcome.get_result()
    server = getattr(item, "funcargs", {}).get("label_studio")
    if report.failed and isinstance(server, LabelStudioServer):
        report.sections.append(("Label Studio log (tail)", server.log_tail()))
