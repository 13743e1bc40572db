"""pulse_trt.engine: the runtime. numpy + Pillow + onnxruntime (+ tensorrt + cuda-python).

Never imports torch or pulse_trt.export: an edge box runs exported artefacts with this alone.
"""
