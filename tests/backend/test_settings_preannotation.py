"""The pre-annotation settings read from the environment, with errors that name the variable."""

from __future__ import annotations

import pytest

from backend.settings import Settings, SettingsError


def test_defaults_preannotate_and_simplify() -> None:
    settings = Settings.from_env({})
    assert settings.preannotate_after_training is True and settings.polygon_tolerance_px == 1.5


def test_values_and_a_typo() -> None:
    settings = Settings.from_env({"PREANNOTATE_AFTER_TRAINING": "false", "POLYGON_TOLERANCE_PX": "0"})
    assert settings.preannotate_after_training is False and settings.polygon_tolerance_px == 0.0
    with pytest.raises(SettingsError, match="PREANNOTATE_AFTER_TRAINING='nope' is not true/false"):
        Settings.from_env({"PREANNOTATE_AFTER_TRAINING": "nope"})
