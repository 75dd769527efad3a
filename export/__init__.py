"""Export stage: ONNX graphs that carry their preprocessing and labels.

``export.metadata`` is torch-free (the service reads it); ``export_model`` needs torch and onnx and
is imported on first use.
"""

from typing import Any

__all__ = ["export_model"]


def __getattr__(name: str) -> Any:
    if name == "export_model":
        from export.build import export_model

        return export_model
    raise AttributeError(name)
