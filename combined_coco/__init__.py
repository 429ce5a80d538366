"""Combined COCO: one annotation per object with its polygon(s), box, area and its own keypoints.

Torch-free on purpose: this package runs inside the Label Studio process (export plugin).
"""

from combined_coco.schema import Category, Controls, Schema, SchemaError

__all__ = ["Category", "Controls", "Schema", "SchemaError"]
