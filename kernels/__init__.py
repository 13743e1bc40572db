"""pulse_trt.kernels: fused CUDA kernels, each beside a reference with the same signature."""
