"""pulse-trt: PULSE face super-resolution as an inference engine."""
__version__ = "0.1.0"
