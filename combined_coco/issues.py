"""What the converter tells the user about their data: per-region issues and the one fatal error.

Issues carry the Label Studio task id and region id because those are what a user can find again in
the Label Studio UI (the region list shows region ids); a message without them cannot be acted on.
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass
from typing import Any, Literal

Severity = Literal["error", "warning"]


@dataclass
class Issue:
    """One problem found in the input.

    ``error``: something the user labeled is missing from the output (task, region or keypoint skipped).
    ``warning``: it is in the output but changed (clipped, repaired) or the input format loses information.
    """

    task_id: int | str | None
    region_id: str | None
    message: str
    severity: Severity = "warning"
    # Set when the task has several exported annotations: region ids alone may then be ambiguous
    # (Label Studio copies them when an annotation starts from another one or from a prediction).
    annotation_id: int | str | None = None

    def __str__(self) -> str:
        where = []
        if self.task_id is not None:
            where.append(f"task {self.task_id}")
        if self.annotation_id is not None:
            where.append(f"annotation {self.annotation_id}")
        if self.region_id is not None:
            where.append(f"region {self.region_id}")
        return f"{', '.join(where)}: {self.message}" if where else self.message


_SHORT = reprlib.Repr()  # Python 3.11 takes no keyword arguments
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict = 2, 4, 4
_SHORT.maxstring = _SHORT.maxother = _SHORT.maxlong = 40


def shown(value: Any) -> str:
    """A value from the user's file, quoted in a message: short however large or deep the value is."""
    return _SHORT.repr(value)


class ConversionError(ValueError):
    """The input cannot be converted at all (not JSON, not a Label Studio export, ...).

    The message is meant for the user as is: it names the file position, task or region at fault.
    """
