// PULSE's bicubic downscale D, fused with the L2 / L1 loss and its gradient, and the transpose
// D^T that carries the gradient back to the HR image. kernels/downsample_loss.py holds the
// readable reference (downsample_loss_ref) with the same contract; engine/bicubic.py defines D.
//
// D along one axis, factor f, 4f Keys taps (a = -0.5), reflect padding 3f (floor half first):
//   y[o] = sum_{t < 4f} taps[t] * x[reflect(o*f + t - before)]          o < n/f
// Rows first, then columns; every HR element feeds at most 4 x 4 LR outputs (more at the
// reflected border).
//
// Kernels (extern "C"; one instantiation per storage dtype of the HR image: _f32, _f16, _bf16):
//   downsample_loss_fwd_*   scatter form of D (split-K over HR tiles, atomics into LR) + the
//                           per-image loss: the last block of each image (threadfence
//                           reduction) reduces (D(hr) - target) and writes L2, L1 and dL/dLR.
//                           Needs lr[] and counters[] zeroed (the loader memsets them).
//   downscale_transpose_*   dL/dHR = D^T(dL/dLR): a gather, every HR element written once.
//   downscale_gather_*      D alone as a gather (no zeroed memory, one launch): the TensorRT
//                           AOT plugin's kernel, and downscale(impl="cuda").
//
// Napkin math, 1024 px RGB fp32, lr 32 (f = 32), per image:
//   forward  reads HR once: 3 * 1024^2 * 4 B = 12.6 MB (+ the reflected 3f/2 border rows and
//            columns, which come back from L2), writes LR 12 KB and gradient 12 KB: ~12.6 MB.
//   backward reads 12 KB of dL/dLR (from L2), writes dL/dHR once: 12.6 MB.
//   Total ~25 MB per image and step: ~8 us at 3 TB/s. torch's conv version materialises the
//   padded images, the vertical intermediate and its gradient (about 3x the bytes, 6+ launches).
// FLOPs: 8 per HR element forward (4 taps per axis, amortised), ~16 backward: far under the
// bandwidth floor, so these kernels are memory-bound and the goal is one read + one write.

#include "common.cuh"

using namespace pulse;

namespace {

// ------------------------------------------------------------------------------------------
// Forward (scatter): block = (QX column groups, QY row groups) of the *padded* HR image of one
// (n, c). Group q of an axis = padded positions [q f, q f + f); it feeds LR outputs q-3 .. q
// with taps [r + 3f], [r + 2f], [r + f], [r] for its r-th position. Each padded element is read
// exactly once; the partial LR sums of a block go out with atomicAdd.
// Shared memory: taps[4f] | vert[(QY + 3) * QX f] | scratch[40]
// ------------------------------------------------------------------------------------------
template <typename T>
__device__ void downsample_loss_fwd(const T* __restrict__ hr, const float* __restrict__ target,
                                    int N, int C, int H, int W, int f, int QY, int QX,
                                    float eps, float w2, float w1,
                                    float* lr, float* __restrict__ loss, float* __restrict__ grad_lr,
                                    unsigned int* counters) {
    extern __shared__ float smem[];
    float* taps = smem;
    const int cols = QX * f;                       // padded columns in this block's tile
    float* vert = taps + 4 * f;                    // [(QY + 3), cols]
    float* scratch = vert + (QY + 3) * cols;       // [40]
    __shared__ int s_last;

    const int h = H / f, w = W / f;
    const int nc = blockIdx.z, n = nc / C;
    const int before = pad_before_of(f);
    const int qy0 = blockIdx.y * QY, qx0 = blockIdx.x * QX;
    const int qy1 = min(qy0 + QY, h + 3), qx1 = min(qx0 + QX, w + 3);  // h + 3 groups per axis
    const int ny = qy1 - qy0;
    const T* img = hr + (size_t)nc * H * W;
    load_taps(taps, f);

    // 1. Vertical pass: each thread owns padded columns; a rolling window of 4 accumulators
    //    (outputs q, q-1, q-2, q-3) runs down the block's rows, each HR value loaded once.
    for (int pc = qx0 * f + threadIdx.x; pc < qx1 * f; pc += blockDim.x) {
        const int col = reflect_index(pc, before, W);
        const int lc = pc - qx0 * f;
        float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;
        for (int q = qy0; q < qy1; ++q) {
            const T* src = img + col;
#pragma unroll 4
            for (int r = 0; r < f; ++r) {
                const float x = to_f32(src[(size_t)reflect_index(q * f + r, before, H) * W]);
                a0 += taps[r] * x;
                a1 += taps[r + f] * x;
                a2 += taps[r + 2 * f] * x;
                a3 += taps[r + 3 * f] * x;
            }
            vert[(q - qy0) * cols + lc] = a3;      // output q-3 has all of this block's rows
            a3 = a2; a2 = a1; a1 = a0; a0 = 0.f;
        }
        vert[(ny + 0) * cols + lc] = a3;           // outputs qy1-3, qy1-2, qy1-1 (partial)
        vert[(ny + 1) * cols + lc] = a2;
        vert[(ny + 2) * cols + lc] = a1;
    }
    // Columns of the tile past qx1 (last block of a row) stay unused.
    __syncthreads();

    // 2. Horizontal pass: one warp per (vert row k, LR column j); lanes split the taps that
    //    fall inside this tile; the partial sum is added to LR (<= 16 blocks add to a value).
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    const int nj = (qx1 - qx0) + 3;
    for (int pair = warp; pair < (ny + 3) * nj; pair += nwarps) {
        const int k = pair / nj, o = qy0 - 3 + k;
        const int j = qx0 - 3 + pair % nj;
        if (o < 0 || o >= h || j < 0 || j >= w) continue;  // warp-uniform
        const int t0 = max(0, (qx0 - j) * f), t1 = min(4 * f, (qx1 - j) * f);
        float s = 0.f;
        for (int t = t0 + lane; t < t1; t += 32) s += taps[t] * vert[k * cols + (j * f + t - qx0 * f)];
        s = warp_sum(s);
        if (lane == 0) atomicAdd(lr + ((size_t)nc * h + o) * w + j, s);
    }
    if (target == nullptr) return;  // plain downscale

    // 3. Last block of image n: loss terms and dL/dLR (the classic threadfence reduction).
    __threadfence();                // this block's atomics are visible before it counts as done
    __syncthreads();
    if (threadIdx.x == 0) {
        const unsigned int per_image = gridDim.x * gridDim.y * C;
        s_last = atomicAdd(counters + n, 1u) == per_image - 1;
    }
    __syncthreads();
    if (!s_last) return;
    __threadfence();
    const int count = C * h * w;
    const size_t base = (size_t)n * count;
    float sq = 0.f, ab = 0.f;
    for (int i = threadIdx.x; i < count; i += blockDim.x) {
        const float d = __ldcg(lr + base + i) - target[base + i];
        sq += d * d;
        ab += fabsf(d);
    }
    sq = block_sum(sq, scratch);
    ab = block_sum(ab, scratch);
    const float mse = sq / count, mae = ab / count;
    // L2 = max(eps, mse), L1 = 10 max(eps, mae); the clamp passes gradient where mean >= eps
    // (torch.clamp's rule), so an image already within eps gets none.
    const float c2 = mse >= eps ? w2 * 2.f / count : 0.f;
    const float c1 = mae >= eps ? w1 * 10.f / count : 0.f;
    if (threadIdx.x == 0) {
        loss[2 * n] = fmaxf(eps, mse);
        loss[2 * n + 1] = 10.f * fmaxf(eps, mae);
        counters[n] = 0u;           // ready for the next call
    }
    for (int i = threadIdx.x; i < count; i += blockDim.x) {
        const float d = __ldcg(lr + base + i) - target[base + i];
        const float sgn = d > 0.f ? 1.f : (d < 0.f ? -1.f : 0.f);
        grad_lr[base + i] = c2 * d + c1 * sgn;
    }
}

// Calls fn(p) for each padded position p (1 or 2 of them) that reads unpadded index i.
template <typename F>
__device__ __forceinline__ void for_each_padded(int i, int before, int after, int n, F fn) {
    fn(i + before);
    if (i >= 1 && i <= before) fn(before - i);                         // reflected at the start
    if (i >= n - 1 - after && i <= n - 2) fn(before + 2 * (n - 1) - i); // reflected at the end
}

// Calls fn(o, tap) for every LR output o (< m) that padded position p feeds.
template <typename F>
__device__ __forceinline__ void for_each_output(int p, int f, int m, F fn) {
    int lo = p - 4 * f + 1;
    lo = lo <= 0 ? 0 : (lo + f - 1) / f;
    const int hi = min(p / f, m - 1);
    for (int o = lo; o <= hi; ++o) fn(o, p - o * f);
}

// ------------------------------------------------------------------------------------------
// Transpose (gather): D^T(g)[r][c] = sum over (o, ty) feeding from row r, (j, tx) from column
// c, of taps[ty] taps[tx] g[o][j]: the forward's (position -> output) pairs walked backwards
// (the "mirrored parameters" of the forward). Block = RT rows x blockDim.x columns of one
// (n, c); one thread per column: first the horizontal half into tmp[o][thread] for the block's
// LR rows, then each HR row from 1-2 positions x <= 4 LR rows. Every HR element written once.
// Shared memory: taps[4f] | gs[NR * NC] | tmp[NR * blockDim.x]
// ------------------------------------------------------------------------------------------
template <typename T>
__device__ void downscale_transpose(const float* __restrict__ g, int N, int C, int H, int W, int h,
                                    int RT, T* __restrict__ out) {
    extern __shared__ float smem[];
    const int f = H / h, w = W / f;
    const int before = pad_before_of(f), after = 3 * f - before;
    const int NR = (RT + f - 1) / f + 6, NC = ((int)blockDim.x + f - 1) / f + 6;
    float* taps = smem;
    float* gs = taps + 4 * f;
    float* tmp = gs + NR * NC;
    __shared__ int s_oa, s_ob, s_ja, s_jb;

    const int nc = blockIdx.z;
    const int r0 = blockIdx.y * RT, r1 = min(r0 + RT, H);
    const int c0 = blockIdx.x * blockDim.x, c1 = min(c0 + (int)blockDim.x, W);
    load_taps(taps, f);
    if (threadIdx.x == 0) {         // LR rows / columns this tile reads (<= a few dozen steps)
        int oa = h, ob = -1, ja = w, jb = -1;
        for (int r = r0; r < r1; ++r)
            for_each_padded(r, before, after, H, [&](int p) {
                for_each_output(p, f, h, [&](int o, int) { oa = min(oa, o); ob = max(ob, o); }); });
        for (int c = c0; c < c1; ++c)
            for_each_padded(c, before, after, W, [&](int p) {
                for_each_output(p, f, w, [&](int j, int) { ja = min(ja, j); jb = max(jb, j); }); });
        if (ob - oa + 1 > NR || jb - ja + 1 > NC) __trap();  // the host's bound is wrong
        s_oa = oa; s_ob = ob; s_ja = ja; s_jb = jb;
    }
    __syncthreads();
    const int oa = s_oa, nr = s_ob - s_oa + 1, ja = s_ja, ncol = s_jb - s_ja + 1;
    const float* gi = g + (size_t)nc * h * w;
    for (int i = threadIdx.x; i < nr * ncol; i += blockDim.x)
        gs[i] = gi[(size_t)(oa + i / ncol) * w + ja + i % ncol];
    __syncthreads();

    const int c = c0 + threadIdx.x;
    if (c >= W) return;
    // 1. Horizontal transpose for this thread's column: tmp[o] = sum_(j, tx) taps[tx] g[o][j].
    for (int k = 0; k < nr; ++k) {
        float s = 0.f;
        for_each_padded(c, before, after, W, [&](int p) {
            for_each_output(p, f, w, [&](int j, int t) { s += taps[t] * gs[k * ncol + j - ja]; }); });
        tmp[k * blockDim.x + threadIdx.x] = s;
    }
    // 2. Vertical transpose, one HR row at a time; a warp writes 32 consecutive values.
    T* dst = out + (size_t)nc * H * W + c;
    for (int r = r0; r < r1; ++r) {
        float s = 0.f;
        for_each_padded(r, before, after, H, [&](int p) {
            for_each_output(p, f, h, [&](int o, int t) { s += taps[t] * tmp[(o - oa) * blockDim.x + threadIdx.x]; }); });
        dst[(size_t)r * W] = from_f32<T>(s);
    }
}

// ------------------------------------------------------------------------------------------
// Forward (gather, no zeroed memory): block = TO LR rows of one (n, c), all columns. Vertical
// rolling window into vert[TO][W], then each LR value from 4f taps of its row.
// Shared memory: taps[4f] | vert[TO * W]
// ------------------------------------------------------------------------------------------
template <typename T>
__device__ void downscale_gather(const T* __restrict__ x, int N, int C, int H, int W, int h, int TO,
                                 float* __restrict__ y) {
    extern __shared__ float smem[];
    const int f = H / h, w = W / f, before = pad_before_of(f);
    float* taps = smem;
    float* vert = taps + 4 * f;
    const int nc = blockIdx.z, o0 = blockIdx.y * TO, o1 = min(o0 + TO, h);
    const T* img = x + (size_t)nc * H * W;
    load_taps(taps, f);
    for (int col = threadIdx.x; col < W; col += blockDim.x) {
        float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;
        for (int q = o0; q < o1 + 3; ++q) {     // groups q feed outputs q-3 .. q
#pragma unroll 4
            for (int r = 0; r < f; ++r) {
                const float v = to_f32(img[(size_t)reflect_index(q * f + r, before, H) * W + col]);
                a0 += taps[r] * v;
                a1 += taps[r + f] * v;
                a2 += taps[r + 2 * f] * v;
                a3 += taps[r + 3 * f] * v;
            }
            if (q - 3 >= o0) vert[(q - 3 - o0) * W + col] = a3;
            a3 = a2; a2 = a1; a1 = a0; a0 = 0.f;
        }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < (o1 - o0) * w; i += blockDim.x) {
        const int k = i / w, j = i % w;
        float s = 0.f;
        for (int t = 0; t < 4 * f; ++t) s += taps[t] * vert[k * W + reflect_index(j * f + t, before, W)];
        y[((size_t)nc * h + o0 + k) * w + j] = s;
    }
}

}  // namespace

#define PULSE_DOWNSAMPLE_KERNELS(SUFFIX, T)                                                        \
    extern "C" __global__ void downsample_loss_fwd_##SUFFIX(                                       \
        const T* hr, const float* target, int N, int C, int H, int W, int f, int QY, int QX,      \
        float eps, float w2, float w1, float* lr, float* loss, float* grad_lr,                     \
        unsigned int* counters) {                                                                  \
        downsample_loss_fwd<T>(hr, target, N, C, H, W, f, QY, QX, eps, w2, w1, lr, loss, grad_lr, \
                               counters);                                                          \
    }                                                                                              \
    extern "C" __global__ void downscale_transpose_##SUFFIX(const float* g, int N, int C, int H,  \
                                                            int W, int h, int RT, T* out) {        \
        downscale_transpose<T>(g, N, C, H, W, h, RT, out);                                         \
    }                                                                                              \
    extern "C" __global__ void downscale_gather_##SUFFIX(const T* x, int N, int C, int H, int W,  \
                                                         int h, int TO, float* y) {                \
        downscale_gather<T>(x, N, C, H, W, h, TO, y);                                              \
    }

PULSE_DOWNSAMPLE_KERNELS(f32, float)
PULSE_DOWNSAMPLE_KERNELS(f16, __half)
PULSE_DOWNSAMPLE_KERNELS(bf16, __nv_bfloat16)
