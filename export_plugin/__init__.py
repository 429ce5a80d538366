"""Django app that adds the "COCO combined" format to Label Studio's Export dialog.

Label Studio lists and runs export formats through ``label_studio_sdk.converter.Converter``; this app
extends that class when Django starts (see :mod:`export_plugin.export_format`), so the format appears in
the Export dialog, the snapshot export API and ``label-studio export`` without forking Label Studio.
Enable it by running Label Studio with ``DJANGO_SETTINGS_MODULE=export_plugin.settings``.
"""
