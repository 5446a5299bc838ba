// Integer matrix products over int8 activations packed four to a u32 (byte i of word j is
// column 4j+i), eight output rows per workgroup (eight invocations per row, striding over the
// row's words), eight token rows per workgroup so a weight word is read once for eight tokens. Sums are exact i32; the one float step is the scaling, in
// the same order as the CPU kernels.
//
// ternary_main: weights are 2-bit codes c = t + 1, sixteen per u32, laid out so that
// (word >> 2j) & 0x03030303 holds the codes of columns 4j..4j+3 as bytes: dot4I8Packed of
// that with activation word j gives sum(c*q), and sum(t*q) = sum(c*q) - sum(q).
// int8_main: weights are int8 rows (the quantized output head), four to a u32.

struct P {
  rows: u32,        // output rows of this matrix (or chunk)
  kw: u32,          // weight words per row
  out_stride: u32,  // floats per output row (token)
  accumulate: u32,  // 1: out += result (the residual connection)
  act_stride: u32,  // activation words per token
  row_base: u32,    // first output column written by this matrix
  p0: u32,
  p1: u32,
}

@group(0) @binding(1) var<uniform> p: P;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read> row_scale: array<f32>;
@group(0) @binding(4) var<storage, read> act: array<u32>;
@group(0) @binding(5) var<storage, read> act_scale: array<f32>;
@group(0) @binding(6) var<storage, read> act_sum: array<i32>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;

const LANES: u32 = 8u;   // invocations per output row
const RPW: u32 = 8u;     // output rows per workgroup
const TT: u32 = 8u;      // token rows per workgroup
var<workgroup> part: array<i32, 512>;  // [token][invocation]

// Sums each row's eight lanes and stores lane l's token t0 + l.
fn reduce_and_store(lid: u32, r: u32, t0: u32, nt: u32, acc: array<i32, 8>, ternary: bool) {
  for (var t = 0u; t < TT; t++) {
    part[t * 64u + lid] = acc[t];
  }
  workgroupBarrier();
  let lane = lid % LANES;
  let first = lid - lane;
  for (var s = LANES / 2u; s > 0u; s = s >> 1u) {
    if (lane < s) {
      for (var t = 0u; t < TT; t++) {
        part[t * 64u + lid] += part[t * 64u + lid + s];
      }
    }
    workgroupBarrier();
  }
  if (lane < nt && r < p.rows) {
    let t = t0 + lane;
    let total = part[lane * 64u + first];
    var v: f32;
    if (ternary) {
      v = f32(total - act_sum[t]) * (row_scale[r] / act_scale[t]);
    } else {
      v = f32(total) * row_scale[r] / act_scale[t];
    }
    let o = t * p.out_stride + p.row_base + r;
    if (p.accumulate == 1u) {
      out[o] = out[o] + rounded(v);
    } else {
      out[o] = v;
    }
  }
}

@compute @workgroup_size(64)
fn ternary_main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = (wid.x + wid.z * 32768u) * RPW + lid / LANES;
  let t0 = wid.y * TT;
  if (t0 >= step.n) {
    return;
  }
  let nt = min(TT, step.n - t0);
  var acc: array<i32, 8>;
  if (r < p.rows) {
    for (var k = lid % LANES; k < p.kw; k += LANES) {
      let word = w[r * p.kw + k];
      let s0 = word & 0x03030303u;
      let s1 = (word >> 2u) & 0x03030303u;
      let s2 = (word >> 4u) & 0x03030303u;
      let s3 = (word >> 6u) & 0x03030303u;
      for (var t = 0u; t < nt; t++) {
        let a = (t0 + t) * p.act_stride + k * 4u;
        acc[t] += dot4I8Packed(s0, act[a]) + dot4I8Packed(s1, act[a + 1u])
          + dot4I8Packed(s2, act[a + 2u]) + dot4I8Packed(s3, act[a + 3u]);
      }
    }
  }
  reduce_and_store(lid, r, t0, nt, acc, true);
}

@compute @workgroup_size(64)
fn int8_main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = (wid.x + wid.z * 32768u) * RPW + lid / LANES;
  let t0 = wid.y * TT;
  if (t0 >= step.n) {
    return;
  }
  let nt = min(TT, step.n - t0);
  var acc: array<i32, 8>;
  if (r < p.rows) {
    for (var k = lid % LANES; k < p.kw; k += LANES) {
      let word = w[r * p.kw + k];
      for (var t = 0u; t < nt; t++) {
        acc[t] += dot4I8Packed(word, act[(t0 + t) * p.act_stride + k]);
      }
    }
  }
  reduce_and_store(lid, r, t0, nt, acc, false);
}
