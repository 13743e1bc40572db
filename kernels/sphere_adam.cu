// One optimiser step fused with PULSE's spherical projection, in place. kernels/sphere_adam.py
// holds the reference (sphere_adam_ref) with the same contract.
//
// The state is nvec vectors of len values each (a latent [B, L, D]: B*L rows of D; a noise map
// [B, C, H, W]: B maps of C*H*W). One block per vector:
//   1. per element: the optimiser update of torch.optim (single-tensor path, defaults):
//        adam:   m = m + (1-b1)(g-m); v = b2 v + (1-b2) g^2; p -= step_size * m / (sqrt(v)/bc2_sqrt + eps)
//        adamax: m = m + (1-b1)(g-m); u = max(b2 u, |g| + eps);  p -= step_size * m / u
//        sgdm:   m = momentum m + g;  p -= lr m
//        sgd:    p -= lr g
//      (step_size = lr / (1 - b1^t) and bc2_sqrt = sqrt(1 - b2^t) come from the host, in fp64).
//   2. block sum of p^2, then p *= radius / sqrt(sum p^2 + 1e-9).
// Napkin math: adam reads p, g, m, v and writes p, m, v (28 B per value) plus the re-read of p in
// step 2 (L1/L2 hit: vectors are <= a few hundred KB). A PULSE latent is 18 x 512 values per
// image, ~260 KB of traffic: launch-bound; the fusion's gain is 1 launch instead of ~12.

#include "common.cuh"

using namespace pulse;

enum Opt : int { kAdam = 0, kAdamax = 1, kSgd = 2, kSgdm = 3 };

extern "C" __global__ void sphere_update_f32(float* p, const float* __restrict__ g, float* m, float* v,
                                             const float* __restrict__ radius, int nvec, int len, int opt,
                                             float lr, float step_size, float bc2_sqrt, float b1, float b2,
                                             float eps, float momentum) {
    __shared__ float scratch[40];
    const int vec = blockIdx.x;
    if (vec >= nvec) return;
    const size_t base = (size_t)vec * len;
    float sq = 0.f;
    for (int i = threadIdx.x; i < len; i += blockDim.x) {
        const size_t k = base + i;
        const float gi = g[k];
        float pi = p[k];
        if (opt == kAdam) {
            const float mi = m[k] + (1.f - b1) * (gi - m[k]);
            const float vi = b2 * v[k] + (1.f - b2) * gi * gi;
            pi -= step_size * (mi / (sqrtf(vi) / bc2_sqrt + eps));
            m[k] = mi;
            v[k] = vi;
        } else if (opt == kAdamax) {
            const float mi = m[k] + (1.f - b1) * (gi - m[k]);
            const float ui = fmaxf(b2 * v[k], fabsf(gi) + eps);
            pi -= step_size * (mi / ui);
            m[k] = mi;
            v[k] = ui;
        } else if (opt == kSgdm) {
            const float mi = momentum * m[k] + gi;
            pi -= lr * mi;
            m[k] = mi;
        } else {
            pi -= lr * gi;
        }
        p[k] = pi;
        sq += pi * pi;
    }
    sq = block_sum(sq, scratch);   // its barriers also order this thread's p[] writes before the re-read
    const float scale = radius[vec] / sqrtf(sq + 1e-9f);
    for (int i = threadIdx.x; i < len; i += blockDim.x) p[base + i] *= scale;
}
