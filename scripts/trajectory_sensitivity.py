"""How sensitive is a PULSE trajectory to float32 rounding? Run the PyTorch reference twice on the
embedded dcgan, the second time with every start latent moved by one ulp, and report where the
per-step TOTAL losses first differ by more than 1e-4 relative.

Why: the ONNX Runtime engine matches the reference step for step (teacher-forced) within 1e-4,
but a free-running 100-step search drifts apart after a few dozen steps. This script shows the
reference drifts the same way from itself under a one-ulp change, so the drift is float32
rounding amplified by Adam (near-zero gradient components get full-size steps), not an error.

    python scripts/trajectory_sensitivity.py
"""
import numpy as np, torch
torch.set_num_threads(1)
from pulse_trt.export.generators import load_generator
from pulse_trt.export import reference
from pulse_trt.engine.options import PulseOptions
from pulse_trt.engine import state as st
from pulse_trt.engine.bicubic import downscale
g = load_generator("dcgan")
rng = np.random.default_rng(5)
with torch.no_grad():
    x = g.image01(torch.from_numpy(rng.standard_normal((2,1,100)).astype(np.float32)), []).clamp(0,1).numpy()
y = downscale(x, 8).clip(0,1).astype(np.float32)
opts = PulseOptions()
base = reference.pulse_search(g, y, opts)
orig = reference.start_state
def perturbed(spec, options, rows):
    s = orig(spec, options, rows)
    s.latent = np.nextafter(s.latent, np.float32(np.inf))  # one ulp
    return s
reference.start_state = perturbed
pert = reference.pulse_search(g, y, opts)
for i in range(2):
    a = np.array(base[i].history["TOTAL"]); b = np.array(pert[i].history["TOTAL"])
    rel = np.abs(a-b)/np.abs(a)
    first = int(np.argmax(rel > 1e-4)) if (rel > 1e-4).any() else None
    print(f"image {i}: max rel diff {rel.max():.3g}, first step over 1e-4: {first}, success {base[i].success} vs {pert[i].success}")
