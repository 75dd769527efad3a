"""sda-serve service package: torch-free video I/O and the ONNX inference service."""
