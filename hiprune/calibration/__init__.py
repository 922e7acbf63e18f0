"""Calibration: quantization (INT8/FP8) and per-encoder object-layer choice. Nothing here yet.

The object layer's default lives with each encoder adapter (``EncoderSpec.default_object_layer``) until
calibration can choose it from data.
"""
