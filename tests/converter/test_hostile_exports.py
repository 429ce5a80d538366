"""Hostile exports: mutated valid exports give valid COCO or a clear error, in bounded time and memory.

The converter runs inside Label Studio's Export request, so a crash, a hang or a memory blow-up there
takes the server with it. Each example is converted in a forked child under an address-space limit
and a timeout; its output must pass ``validate_coco`` and pycocotools' ``annToMask`` for every
annotation, in a second child, so a segfault in pycocotools' C code is a failure here, not a crash.
"""

from __future__ import annotations

import copy
import faulthandler
import json
import os
import pickle
import random
import resource
import select
import signal
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from label_studio_sdk.converter.brush import mask2rle

from combined_coco.converter import ConversionError, convert_export_file
from combined_coco.labelstudio import brush_result, occluded_result, task
from tests.converter.test_properties import H, W, disjoint_objects, messy_results

CONFIG = (Path(__file__).resolve().parents[2] / "labeling_configs" / "generic.xml").read_text()
MEMORY_BUDGET = 2 << 30  # bytes of address space a child may add to what it inherits
CONVERT_TIMEOUT_S = 20.0  # one small export; the shared CI machine is slow, a hang is minutes

_DEEP = "[" * 100_000 + "]" * 100_000
_RAW = {"@@deep@@": _DEEP, "@@digits@@": "9" * 5000}
_nested: list[Any] = []
for _ in range(500):
    _nested = [_nested]
HOSTILE: list[Any] = [
    [["a"]],
    {"a": [1]},
    [],
    {},
    None,
    True,
    "x",
    -1,
    0,
    1e9,
    1e308,
    10**400,
    -(10**400),
    float("inf"),
    float("-inf"),
    float("nan"),
    40_000,
    40_001,
    _nested,
    "@@deep@@",
    "@@digits@@",
    [[1, 2]] * 3,
    [1, 2, 3],
    "data:",
    "data:image/png;base64,iVBORw0KGgo=",
    "data:image/png;base64,@@",
    "../../etc/passwd",
]


# Half of the mutations land on a value the converter reads (others may be ignored by design).
_AIMED = {
    "annotations",
    "result",
    "value",
    "original_width",
    "original_height",
    "points",
    "x",
    "y",
    "width",
    "height",
    "rotation",
    "polygonlabels",
    "keypointlabels",
    "rectanglelabels",
    "brushlabels",
    "rle",
    "choices",
    "parentID",
    "id",
    "annotation_id",
    "from_id",
    "to_id",
    "data",
    "image",
    "polygon",
    "keypoint",
    0,
    1,
}


def _tangle(seed: int, n: int = 3000) -> list[list[float]]:
    """A scribble: n random vertices in percent, crossing itself tens of thousands of times."""
    rng = random.Random(seed)
    return [[rng.uniform(0, 100), rng.uniform(0, 100)] for _ in range(n)]


def _brush(seed: int) -> dict:
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[10 + seed % 50 : 80, 20:90] = 255
    return brush_result(f"b{seed}", "tool", mask2rle(mask), W, H)


@st.composite
def base_export(draw, schema) -> list[dict]:
    tasks = []
    for t in range(1, draw(st.integers(1, 3)) + 1):
        results = draw(disjoint_objects(schema))[0] if draw(st.booleans()) else draw(messy_results(schema))
        if draw(st.booleans()):
            results.append(_brush(t))
        kps = [r["id"] for r in results if r.get("type") == "keypointlabels"]
        if kps:
            results.append(occluded_result(draw(st.sampled_from(kps))))
        tasks.append(task(t, f"/data/upload/1/1a2b3c4d-img{t}.jpg", results))
    return [_json_min_row(t) for t in tasks] if draw(st.booleans()) and draw(st.booleans()) else tasks


def _json_min_row(full: dict) -> dict:
    """The JSON_MIN form of a one-annotation task: {control name: [value with size, id, parentID]}."""
    annotation = full["annotations"][0]
    row = {"id": full["id"], "image": full["data"]["image"], "annotation_id": annotation["id"]}
    for r in annotation["result"]:
        if str(r.get("type", "")).endswith("labels"):
            row.setdefault(r["from_name"], []).append(
                dict(
                    r["value"],
                    id=r["id"],
                    parentID=r.get("parentID"),
                    original_width=r["original_width"],
                    original_height=r["original_height"],
                )
            )
    return row


def _containers(node: Any, path: tuple = ()) -> list[tuple]:
    """Paths of every list item and dict value in the tree."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        out.append(path + (key,))
        if len(out) < 5000:
            out += _containers(child, path + (key,))
    return out


@st.composite
def mutated_export(draw, schema) -> str:
    """A valid export with 1-3 values replaced by hostile ones (or removed), as JSON text with markers."""
    tasks = draw(base_export(schema))
    for _ in range(draw(st.integers(1, 3))):
        paths = _containers(tasks)
        aimed = [p for p in paths if p[-1] in _AIMED]
        path = draw(st.sampled_from(aimed if aimed and draw(st.booleans()) else paths))
        parent = tasks
        for key in path[:-1]:
            parent = parent[key]
        choice = draw(st.integers(0, len(HOSTILE) + 1))
        if choice == len(HOSTILE):
            if isinstance(parent, dict):
                parent.pop(path[-1], None)
            continue
        # A copy: a later mutation may land inside it, and HOSTILE must stay the same for every example.
        parent[path[-1]] = (
            _tangle(draw(st.integers(0, 99))) if choice == len(HOSTILE) + 1 else copy.deepcopy(HOSTILE[choice])
        )
    return json.dumps(tasks)  # allow_nan: Infinity and NaN, as some exporters write them


def with_raw_values(text: str) -> str:
    """Put the values JSON cannot hold as Python objects in place of their markers (only at write time,
    so a failing example prints short)."""
    for marker, raw in _RAW.items():
        text = text.replace(f'"{marker}"', raw)
    return text


def run_isolated(fn: Callable[[], Any], timeout: float) -> tuple[str, Any]:
    """Run ``fn`` in a forked child limited to MEMORY_BUDGET more address space and ``timeout`` seconds.

    Returns ("ok", value), ("raised", traceback text), ("timeout", seconds) or ("signal", name).
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        try:
            faulthandler.disable()  # a crash is reported by the parent; no stack dump of pytest
            os.close(read_end)
            inherited = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
            resource.setrlimit(resource.RLIMIT_AS, (inherited + MEMORY_BUDGET, inherited + MEMORY_BUDGET))
            try:
                outcome = ("ok", fn())
            except BaseException:
                outcome = ("raised", traceback.format_exc())
            with os.fdopen(write_end, "wb") as f:
                f.write(pickle.dumps(outcome))
        finally:
            os._exit(0)
    os.close(write_end)
    data, deadline = b"", time.monotonic() + timeout
    with os.fdopen(read_end, "rb") as f:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([f], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return "timeout", timeout
            chunk = os.read(f.fileno(), 1 << 20)
            if not chunk:
                break
            data += chunk
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return "signal", signal.Signals(os.WTERMSIG(status)).name
    return pickle.loads(data) if data else ("raised", f"child exited with status {status} and no result")


def _convert(src: Path, out: Path) -> Any:
    try:
        convert_export_file(src, out, CONFIG)
    except ConversionError as exc:
        return f"ConversionError: {exc}"
    return None


def _check_output(out: Path) -> list[str]:
    """validate_coco's problems, then every annotation through pycocotools' annToMask."""
    import contextlib
    import io

    from pycocotools.coco import COCO

    from combined_coco.validate import validate_coco

    coco = json.loads(out.read_text())
    problems = validate_coco(coco)
    if problems:
        return problems
    api = COCO()
    api.dataset = coco
    with contextlib.redirect_stdout(io.StringIO()):
        api.createIndex()
    for ann in coco["annotations"]:
        mask = api.annToMask(ann)
        image = api.imgs[ann["image_id"]]
        assert mask.shape == (image["height"], image["width"])
    return []


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_mutated_exports_convert_safely(generic, tmp_path_factory, data) -> None:
    tmp = tmp_path_factory.mktemp("hostile")
    src, out = tmp / "export.json", tmp / "coco.json"
    src.write_text(with_raw_values(data.draw(mutated_export(generic))))
    started = time.monotonic()
    kind, value = run_isolated(lambda: _convert(src, out), CONVERT_TIMEOUT_S)
    assert kind == "ok", f"conversion {kind} after {time.monotonic() - started:.1f} s: {value}"
    if value is not None:  # a clear error, and nothing written
        assert not out.exists(), value
        return
    kind, value = run_isolated(lambda: _check_output(out), CONVERT_TIMEOUT_S)
    assert kind == "ok", f"checking the output: {kind}: {value}"
    assert value == [], f"the converter wrote a file that validate refuses: {value}"


def test_run_isolated_reports_crashes_hangs_and_memory() -> None:
    """The harness itself: a segfault, a hang and an allocation beyond the budget are all caught."""
    import ctypes

    assert run_isolated(lambda: ctypes.string_at(0), 10) == ("signal", "SIGSEGV")
    assert run_isolated(lambda: time.sleep(60), 1) == ("timeout", 1)
    kind, value = run_isolated(lambda: bytearray(MEMORY_BUDGET + (1 << 30)), 10)
    assert kind == "raised" and "MemoryError" in value
