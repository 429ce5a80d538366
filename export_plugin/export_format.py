"""The "COCO combined" export format, added to Label Studio's converter at startup.

Label Studio 1.23 has no registry for export formats: every path (Export dialog, snapshot API,
``label-studio export``) asks ``label_studio_sdk.converter.Converter`` which formats exist
(``all_formats``), which fit the project (``supported_formats``) and converts with ``_convert``.
Wrapping those three methods adds the format everywhere at once.

The converter needs the labeling config as XML (keypoint ``category``/``flip``/``skeleton`` attributes
live there), but Label Studio builds ``Converter`` from ``project.get_parsed_config()``, a dict that
has lost those attributes. So the three Label Studio entry points that receive the project
(``DataExport.get_export_formats``, ``DataExport.generate_export_file``, ``Export.convert_file``)
are wrapped to publish ``project.label_config`` in a context variable for the duration of the call.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from contextvars import ContextVar
from enum import Enum
from pathlib import Path
from typing import Any

from label_studio_sdk.converter import Converter
from rest_framework.exceptions import ValidationError

from combined_coco.converter import ConversionError, convert_export_file
from combined_coco.schema import Schema, SchemaError

logger = logging.getLogger(__name__)

FORMAT_NAME = "COCO_COMBINED"
OUTPUT_FILE_NAME = "coco_combined.json"
FORMAT_INFO: dict[str, Any] = {  # Label Studio's format description: title, description, tags
    "title": "COCO combined (polygons + keypoints per object)",
    "description": "One COCO annotation per object: its polygon mask, box and its own keypoints (not merged per "
    "image), with the keypoint schema (names, skeleton, flip pairs) in the categories. For multi-task "
    "models (boxes, masks, keypoints).",
    "tags": ["image segmentation", "object detection", "keypoints"],
}


class PluginFormat(Enum):
    """Key for ``Converter.all_formats()``: Label Studio only reads ``.name`` of the keys."""

    COCO_COMBINED = FORMAT_NAME


_label_config: ContextVar[str | None] = ContextVar("export_plugin_label_config", default=None)


def config_problem(label_config: str | None) -> str | None:
    """Why the format does not fit this labeling config, in the user's terms; None when it fits.

    It fits when the config parses into a combined schema: an instance control (PolygonLabels,
    RectangleLabels or BrushLabels) and KeyPointLabels on one Image.
    """
    if not label_config:
        return "the project has no labeling config"
    try:
        schema = Schema.from_label_config(label_config)
    except SchemaError as exc:
        return str(exc)
    if schema.controls is None or schema.controls.keypoint is None:
        return "the labeling config has no <KeyPointLabels>; use the COCO format for polygons or boxes alone"
    return None


def _not_applicable(problem: str) -> ValidationError:
    return ValidationError(f"{FORMAT_INFO['title']} ({FORMAT_NAME}) does not fit this project: {problem}")


def _config_of(converter: Converter) -> str | None:
    """The XML the converter was built from, or the one of the project whose export is running."""
    return converter._config_string or _label_config.get()


def _with_project_config(get_project: Callable[..., Any]) -> Callable[[Callable], Callable]:
    """Decorator factory: run the wrapped Label Studio function with its project's XML config published."""

    def decorate(func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = _label_config.set(get_project(*args, **kwargs).label_config)
            try:
                return func(*args, **kwargs)
            finally:
                _label_config.reset(token)

        return wrapper

    return decorate


def convert_to_coco_combined(input_path: str, output_dir: str, label_config: str) -> Path:
    """Write the combined COCO file for a Label Studio JSON export into ``output_dir``.

    Conversion issues (e.g. a keypoint that belongs to no polygon) are logged with task and region ids;
    unusable input raises DRF's ``ValidationError`` so the Export dialog shows the reason, not a 500.
    """
    output = Path(output_dir) / OUTPUT_FILE_NAME
    try:
        result = convert_export_file(input_path, output, label_config)
    except ConversionError as exc:
        raise ValidationError(f"COCO combined export failed: {exc}") from exc
    for issue in result.issues:
        logger.warning("COCO combined export: %s", issue)
    return output


def install() -> None:
    """Add the format to Label Studio; idempotent (Django may call ``ready()`` twice in tests)."""
    from data_export.models import DataExport, Export
    from data_export.serializers import ExportConvertSerializer

    if getattr(Converter._convert, "__wrapped_by_export_plugin__", False):
        return

    all_formats = Converter.all_formats
    # A property: mypy types the class attribute as its getter function.
    supported = Converter.supported_formats.fget  # type: ignore[attr-defined]
    convert = Converter._convert
    validate = ExportConvertSerializer.validate_export_type

    def all_formats_with_plugin(self: Converter) -> dict:
        # First, so the dialog shows it at the top of the enabled formats.
        return {PluginFormat.COCO_COMBINED: FORMAT_INFO, **all_formats(self)}

    def supported_with_plugin(self: Converter) -> list[str]:
        formats = list(supported(self))
        if config_problem(_config_of(self)) is None:
            formats.append(FORMAT_NAME)
        return formats

    def convert_with_plugin(self: Converter, input_data: Any, output_data: Any, format: Any, **kwargs: Any) -> Any:
        if str(format) != FORMAT_NAME:
            return convert(self, input_data, output_data, format, **kwargs)
        config = _config_of(self)
        problem = config_problem(config)
        if problem:
            raise _not_applicable(problem)
        assert config is not None, "config_problem() reports a missing labeling config"
        return convert_to_coco_combined(input_data, output_data, config)

    def validate_export_type(self: ExportConvertSerializer, value: str) -> str:
        # Label Studio accepts any listed format here, disabled or not; refuse ours early with the reason
        # (a failing conversion on this route ends in a 500 in Label Studio 1.23).
        value = validate(self, value)
        problem = config_problem(self.context["project"].label_config) if value == FORMAT_NAME else None
        if problem:
            raise _not_applicable(problem)
        return value

    # Monkeypatching Label Studio's classes is the point of this function (it has no format registry); mypy
    # rejects assigning to methods and attributes on functions.
    convert_with_plugin.__wrapped_by_export_plugin__ = True  # type: ignore[attr-defined]
    Converter.all_formats = all_formats_with_plugin  # type: ignore[method-assign]
    Converter.supported_formats = property(supported_with_plugin)  # type: ignore[method-assign,assignment]
    Converter._convert = convert_with_plugin  # type: ignore[method-assign,assignment]
    ExportConvertSerializer.validate_export_type = validate_export_type

    by_argument = _with_project_config(lambda project, *a, **k: project)
    DataExport.get_export_formats = staticmethod(by_argument(DataExport.get_export_formats))
    DataExport.generate_export_file = staticmethod(by_argument(DataExport.generate_export_file))
    Export.convert_file = _with_project_config(lambda export, *a, **k: export.project)(Export.convert_file)
