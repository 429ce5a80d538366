"""App config: installs the export format once Django's app registry (and Label Studio's models) are ready."""

from __future__ import annotations

from django.apps import AppConfig


class ExportPluginConfig(AppConfig):
    name = "export_plugin"
    verbose_name = "COCO combined export"

    def ready(self) -> None:
        # Imported here: the wrapped Label Studio modules import models, which needs the registry.
        from export_plugin.export_format import install

        install()
