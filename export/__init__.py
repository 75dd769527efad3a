"""Export stage: ONNX graphs that carry their preprocessing and labels (``videocore.contract``)."""

from export.build import export_model

__all__ = ["export_model"]
