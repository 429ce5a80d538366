"""Every third-party module a shipped package imports is declared in pyproject.toml.

``pip install -e '.[extras]'`` installs only what pyproject declares; a module that merely happens to be
installed (as a dependency of a dependency) breaks the day that dependency drops it. Each package
below gets the base dependencies plus the extras its documentation says it needs (README, Dockerfile,
scripts/install.sh); every ``import`` in it, lazy ones included, must resolve to one of those
distributions.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# package -> the extras it needs besides the base dependencies
PACKAGE_EXTRAS: dict[str, tuple[str, ...]] = {
    "combined_coco": ("brush", "masks"),  # runs inside Label Studio with the base deps; brush masks need the SDK
    "export_plugin": ("labelstudio",),  # loaded by the Label Studio process
    "jobqueue": ("augment",),
    "augmentation": ("augment",),
    "multitask": ("model", "detectron2"),  # Detectron2: an optional engine, imported only when used
    "backend": ("backend", "model", "augment"),  # training jobs train (model) and may augment
    "stack": ("labelstudio", "augment", "backend"),  # runs every service
}
# Modules an extra provides without declaring their distribution: Label Studio's own apps and the
# libraries the plugin finds in the Label Studio process; Detectron2, built from source by
# scripts/install.sh --with-detectron2 (it has no wheel).
PROVIDED_BY_EXTRA: dict[str, set[str]] = {
    "labelstudio": {"core", "data_export", "django", "rest_framework", "label_studio_sdk"},
    "detectron2": {"detectron2"},
}
# import name -> distribution name, where they differ
DISTRIBUTION = {
    "PIL": "pillow",
    "cv2": "opencv-python-headless",
    "yaml": "pyyaml",
    "label_studio_sdk": "label-studio-sdk",
    "pydantic_settings": "pydantic-settings",
}


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _names(requirements: list[str]) -> set[str]:
    return {_normalized(re.match(r"[A-Za-z0-9._-]+", r).group(0)) for r in requirements}  # type: ignore[union-attr]


def _third_party_imports(path: Path, local: set[str]) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    return {m for m in modules if m not in sys.stdlib_module_names and m not in local and m != "__future__"}


def test_every_import_is_declared() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base, extras = _names(project["dependencies"]), project["optional-dependencies"]
    shipped = set(PACKAGE_EXTRAS)
    assert {
        p.rstrip("*")
        for p in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"][
            "include"
        ]
    } == shipped, "PACKAGE_EXTRAS must list every shipped package"
    undeclared = []
    for package, needs in PACKAGE_EXTRAS.items():
        for path in sorted((REPO / package).rglob("*.py")):
            relative = path.relative_to(REPO).as_posix()
            declared = base.union(*(_names(extras[e]) for e in needs))
            provided = set().union(*(PROVIDED_BY_EXTRA.get(e, set()) for e in needs))
            for module in sorted(_third_party_imports(path, shipped)):
                if module not in provided and _normalized(DISTRIBUTION.get(module, module)) not in declared:
                    undeclared.append(f"{relative} imports {module}: not in the base deps or extras {list(needs)}")
    assert not undeclared, "\n".join(undeclared)
