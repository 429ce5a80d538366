"""Label Studio's own settings plus this plugin: ``DJANGO_SETTINGS_MODULE=export_plugin.settings``.

``label-studio start`` only sets ``DJANGO_SETTINGS_MODULE`` when it is unset (``os.environ.setdefault``
in ``label_studio/server.py``), so exporting this variable is all it takes; every Label Studio setting
and environment variable keeps working.
"""

import os

# Label Studio's settings modules are imported by their short names (``core.settings``): server.py puts
# the label_studio package directory on sys.path. base first, as label_studio.py expects it loaded.
from core.settings.base import *  # noqa: F401,F403
from core.settings.label_studio import *  # noqa: F401,F403

# Both names come from the star imports above, which mypy cannot follow: Label Studio's ``core`` package is
# only importable inside the Label Studio process.
INSTALLED_APPS = [*INSTALLED_APPS, "export_plugin"]  # type: ignore[has-type]  # noqa: F405

# Label Studio gives the "django" logger its own console handler *and* lets it propagate to the root's,
# so every request line is printed twice; once is enough for the stack's prefixed logs.
LOGGING["loggers"]["django"]["propagate"] = False  # type: ignore[name-defined]  # noqa: F405

# Django chmods every uploaded file to FILE_UPLOAD_PERMISSIONS, 0o644 by default, whatever the umask: under the
# stack's umask 077 (its data readable by its user only) uploaded images were the one exception, world-readable
# inside 0700 folders. Uploads follow the process umask instead, like every other file Label Studio writes.
_UMASK = os.umask(0o077)  # reading the umask means setting it; put it back at once (settings load single-threaded)
os.umask(_UMASK)
FILE_UPLOAD_PERMISSIONS = 0o666 & ~_UMASK
FILE_UPLOAD_DIRECTORY_PERMISSIONS = 0o777 & ~_UMASK
