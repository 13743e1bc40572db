"""pulse_trt.export: the PyTorch side. Generators, checkpoint loading, the PyTorch reference of
PULSE, and the export of one PULSE iteration to ONNX (and TensorRT engines from it)."""
