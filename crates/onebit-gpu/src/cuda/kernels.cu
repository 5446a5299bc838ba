// onebit's CUDA kernels: the same algorithms, layouts and float steps as the WGSL kernels in
// ../shaders (one ternary word holds sixteen 2-bit codes c = t + 1; activations are int8 four
// to a u32; sums are exact i32), so both backends give the CPU scalar kernels' results.
// Compiled at run time by NVRTC with --fmad=false: a contracted multiply-add rounds once
// where the CPU rounds twice, and the products must match the CPU bit for bit.
// No #include: NVRTC alone (no CUDA toolkit headers) must compile this file.

typedef unsigned int u32;

#define LANES 8  // threads per output row
#define RPB 8    // output rows per block
#define TT 8     // token rows per block: a weight word is read once for eight tokens

// The eight lanes of a row are eight neighbouring threads of one warp: three xor shuffles
// leave every lane holding the row's sum.
__device__ __forceinline__ int row_sum(int v) {
  v += __shfl_xor_sync(0xffffffffu, v, 4);
  v += __shfl_xor_sync(0xffffffffu, v, 2);
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v;
}

// Lane l of row r stores token t0 + l: out = float(sum) scaled in the CPU's order.
__device__ __forceinline__ void store(const int* acc, u32 r, u32 t0, u32 nt, bool ternary,
                                      const float* row_scale, const float* act_scale,
                                      const int* act_sum, float* out, u32 rows, u32 out_stride,
                                      u32 accumulate, u32 row_base) {
  int total = 0;
  const u32 lane = threadIdx.x % LANES;
#pragma unroll
  for (u32 t = 0; t < TT; t++) {
    int s = row_sum(acc[t]);
    if (t == lane) total = s;
  }
  if (lane >= nt || r >= rows) return;
  const u32 t = t0 + lane;
  float v;
  if (ternary) {
    v = (float)(total - act_sum[t]) * (row_scale[r] / act_scale[t]);
  } else {
    v = (float)total * row_scale[r] / act_scale[t];
  }
  const size_t o = (size_t)t * out_stride + row_base + r;
  out[o] = accumulate ? out[o] + v : v;
}

#define MATMUL_PARAMS                                                                  \
  const u32 *__restrict__ w, const float *__restrict__ row_scale,                         \
      const u32 *__restrict__ act, const float *__restrict__ act_scale,                    \
      const int *__restrict__ act_sum, float *out, u32 n, u32 rows, u32 kw, u32 out_stride, \
      u32 accumulate, u32 act_stride, u32 row_base
#define MATMUL_ARGS \
  w, row_scale, act, act_scale, act_sum, out, n, rows, kw, out_stride, accumulate, act_stride, row_base

// Both products: row r of the weights (kw u32 words) times tokens t0..t0+TT. TERNARY: a
// word holds sixteen 2-bit codes c = T + 1 and meets four activation words, and
// sum(T q) = sum(c q) - sum(q); otherwise a word holds four int8 weights (the head's rows,
// padded to 64 columns) and meets one activation word.
template <bool TERNARY>
__device__ __forceinline__ void matmul(MATMUL_PARAMS) {
  const u32 r = blockIdx.x * RPB + threadIdx.x / LANES;
  const u32 t0 = blockIdx.y * TT;
  if (t0 >= n) return;
  const u32 nt = min((u32)TT, n - t0);
  int acc[TT] = {0, 0, 0, 0, 0, 0, 0, 0};
  if (r < rows) {
    for (u32 k = threadIdx.x % LANES; k < kw; k += LANES) {
      const u32 word = w[(size_t)r * kw + k];
      if (TERNARY) {
        const int s0 = (int)(word & 0x03030303u);
        const int s1 = (int)((word >> 2) & 0x03030303u);
        const int s2 = (int)((word >> 4) & 0x03030303u);
        const int s3 = (int)((word >> 6) & 0x03030303u);
#pragma unroll
        for (u32 t = 0; t < TT; t++) {
          if (t < nt) {
            const u32* a = act + (size_t)(t0 + t) * act_stride + k * 4;
            acc[t] += __dp4a(s0, (int)a[0], 0) + __dp4a(s1, (int)a[1], 0) +
                      __dp4a(s2, (int)a[2], 0) + __dp4a(s3, (int)a[3], 0);
          }
        }
      } else {
#pragma unroll
        for (u32 t = 0; t < TT; t++) {
          if (t < nt)
            acc[t] = __dp4a((int)word, (int)act[(size_t)(t0 + t) * act_stride + k], acc[t]);
        }
      }
    }
  }
  store(acc, r, t0, nt, TERNARY, row_scale, act_scale, act_sum, out, rows, out_stride,
        accumulate, row_base);
}

// out[t][row_base + r] (=|+=) (sum_k T[r][k] q[t][k]) * row_scale[r] / act_scale[t].
// Grid (ceil(rows / 8), ceil(n / 8)), 64 threads.
extern "C" __global__ void ternary_matmul(MATMUL_PARAMS) { matmul<true>(MATMUL_ARGS); }

// The output head: int8 rows times int8 activations. Same grid as ternary_matmul.
extern "C" __global__ void int8_matmul(MATMUL_PARAMS) { matmul<false>(MATMUL_ARGS); }

#define AQ 256  // threads per token row in act_quant and argmax

// The value of column c of source row s: a copy (mode 0), or act(gate) * up with act =
// relu^2 (mode 1) or silu (mode 2).
__device__ __forceinline__ float aq_value(const float* x, u32 s, u32 c, u32 in_stride,
                                          u32 in_off, u32 up_off, u32 mode) {
  const float g = x[(size_t)s * in_stride + in_off + c];
  if (mode == 0) return g;
  float a;
  if (mode == 1) {
    const float r = fmaxf(g, 0.0f);
    a = r * r;
  } else {
    a = g / (1.0f + expf(-g));
  }
  return a * x[(size_t)s * in_stride + up_off + c];
}

// One token row per block: the row's values (optionally RMS-normed with weight w), then
// per-token int8 absmax quantization exactly as the CPU's ActQuant: a = 127 / max(|v|, 1e-5),
// q = round_half_even(clamp(v * a, -128, 127)) with NaN -> 0, packed four to a u32, sum(q).
// tmp holds the row's values (n x cols floats); each thread reads back only its own writes
// except across __syncthreads.
extern "C" __global__ void act_quant(const float* __restrict__ x, const float* __restrict__ w,
                                     const u32* __restrict__ gather_rows, float* tmp, u32* act,
                                     float* act_scale, int* act_sum, u32 n, u32 cols,
                                     u32 in_stride, u32 in_off, u32 mode, u32 norm,
                                     u32 act_stride, float eps, u32 gather, u32 up_off) {
  __shared__ float red_f[AQ];
  __shared__ int red_i[AQ];
  const u32 t = blockIdx.x, lid = threadIdx.x;
  if (t >= n) return;
  const u32 s = gather ? gather_rows[t] : t;
  float* row = tmp + (size_t)t * cols;
  for (u32 c = lid; c < cols; c += AQ) row[c] = aq_value(x, s, c, in_stride, in_off, up_off, mode);
  float r = 1.0f;
  if (norm) {
    // The CPU sums the squares in column order; one thread does the same, so the norm (and
    // with it every int8 code on a rounding boundary) comes out as the CPU's.
    __syncthreads();
    if (lid == 0) {
      float total = 0.0f;
      for (u32 c = 0; c < cols; c++) total += row[c] * row[c];
      red_f[0] = total;
    }
    __syncthreads();
    r = 1.0f / sqrtf(red_f[0] / (float)cols + eps);
    __syncthreads();
  }
  float m = 1e-5f;
  for (u32 c = lid; c < cols; c += AQ) {
    float v = row[c];
    if (norm) {
      v = v * r * w[c];
      row[c] = v;
    }
    const float av = fabsf(v);
    if (av > m) m = av;
  }
  red_f[lid] = m;
  __syncthreads();
  for (u32 k = AQ / 2; k > 0; k >>= 1) {
    if (lid < k) red_f[lid] = fmaxf(red_f[lid], red_f[lid + k]);
    __syncthreads();
  }
  const float a = 127.0f / red_f[0];
  int qs = 0;
  for (u32 g = lid; g < act_stride; g += AQ) {
    u32 word = 0;
    for (u32 j = 0; j < 4; j++) {
      const u32 c = g * 4 + j;
      int q = 0;
      if (c < cols) {
        float y = row[c] * a;
        y = (y != y) ? 0.0f : fminf(fmaxf(y, -128.0f), 127.0f);
        q = __float2int_rn(y);
      }
      qs += q;
      word |= ((u32)q & 0xffu) << (8 * j);
    }
    act[(size_t)t * act_stride + g] = word;
  }
  red_i[lid] = qs;
  __syncthreads();
  for (u32 k = AQ / 2; k > 0; k >>= 1) {
    if (lid < k) red_i[lid] += red_i[lid + k];
    __syncthreads();
  }
  if (lid == 0) {
    act_scale[t] = a;
    act_sum[t] = red_i[0];
  }
}

// Greedy sampling on the device: per row the index of the largest logit, the lowest index
// among equals (as the CPU sampler), NaN never chosen; a row of NaN gives 0.
extern "C" __global__ void argmax(const float* __restrict__ logits, u32* ids, u32 n, u32 vocab) {
  __shared__ float best_v[AQ];
  __shared__ u32 best_i[AQ];
  const u32 t = blockIdx.x, lid = threadIdx.x;
  if (t >= n) return;
  float bv = -3.4028235e38f;
  u32 bi = 0xffffffffu;
  for (u32 j = lid; j < vocab; j += AQ) {
    const float v = logits[(size_t)t * vocab + j];
    if (v == v && (bi == 0xffffffffu || v > bv)) {
      bv = v;
      bi = j;
    }
  }
  best_v[lid] = bv;
  best_i[lid] = bi;
  __syncthreads();
  for (u32 s = AQ / 2; s > 0; s >>= 1) {
    if (lid < s) {
      const float ov = best_v[lid + s];
      const u32 oi = best_i[lid + s], mine = best_i[lid];
      if (oi != 0xffffffffu &&
          (mine == 0xffffffffu || ov > best_v[lid] || (ov == best_v[lid] && oi < mine))) {
        best_v[lid] = ov;
        best_i[lid] = oi;
      }
    }
    __syncthreads();
  }
  if (lid == 0) ids[t] = best_i[0] == 0xffffffffu ? 0u : best_i[0];
}
