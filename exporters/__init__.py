"""Exporters: ONNX -> simplified ONNX -> TFLite, CoreML; each artifact verified against PyTorch."""
