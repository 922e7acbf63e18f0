"""ONNX-only code: the ``hiprune::Select`` op definition and graph passes (knows ONNX, not torch)."""
