"""LiteRT's GPU accelerator (ML Drift over WebGPU/Dawn -> Vulkan) on a software Vulkan device.

``target`` says where the device's set-up lives and what it is; ``setup`` builds it (`make gpu`);
``runner`` runs a .tflite on the accelerator, one process per file, behind the common session
interface; ``worker`` is the script that process runs; ``probes`` writes the tiny .tflite files the
self-check and the tests feed it.
"""
