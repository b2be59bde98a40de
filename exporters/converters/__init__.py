"""The converters: one module per toolchain, model or file in, file out, nothing judged or published
here (to_onnx, simplify, mobile_graph + to_tflite, to_tflite_int8 + int8_adaptive, to_onnx_int8,
to_coreml; calibration: the representative dataset the integer converters share)."""
