"""Exporters: checkpoint -> ONNX, TFLite (fp32, fp16, int8), Core ML, each file judged (judging/) before
it is published. formats.py is the format table every room reads; converters/ turns a model into
files, pipeline/ runs an export, app_files/ writes what app developers get beside the files."""
