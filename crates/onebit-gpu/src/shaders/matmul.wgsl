// Integer matrix products over int8 activations packed four to a u32 (byte i of word j is
// column 4j+i), eight output rows per workgroup (eight invocations per row, striding over the
// row's words), eight token rows per workgroup so a weight word is read once for eight tokens. Sums are exact i32; the one float step is the scaling, in
// the same order as the CPU kernels.
//
// ternary_main: weights are 2-bit codes c = t + 1, sixteen per u32, laid out so that
// (word >> 2j) & 0x03030303 holds the codes of columns 4j..4j+3 as bytes: dot4I8Packed of
// that with activation word j gives sum(c*q), and sum(t*q) = sum(c*q) - sum(q).
// int8_main: weights are int8 rows (the quantized output head), four to a u32.
//
// ternary_tiled_main: the ternary product for prompt chunks (the host picks it from 16 rows
// of tokens up): a 32-row x 32-token output tile per workgroup, the reduction in chunks of
// four weight words (64 columns) staged in workgroup memory, so each weight word is read
// from memory once per 32 tokens and each activation word once per 32 rows; each invocation
// keeps a 4 x 4 block of exact i32 sums, and the float step is the same `store`.

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
    store(r, t0 + lane, part[lane * 64u + first], ternary);
  }
}

// Scales the exact sum of row r, token t and writes (or adds) it: the CPU kernels' float steps.
fn store(r: u32, t: u32, total: i32, ternary: bool) {
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

const TILE: u32 = 32u;  // output rows and token rows per tiled workgroup
const KC: u32 = 4u;     // weight words per staged chunk (64 columns, 16 activation words)
var<workgroup> w_tile: array<u32, 128>;   // [row][word], TILE x KC
var<workgroup> a_tile: array<u32, 512>;   // [token][activation word], TILE x 4·KC

@compute @workgroup_size(64)
fn ternary_tiled_main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r0 = (wid.x + wid.z * 32768u) * TILE;
  let t0 = wid.y * TILE;
  if (t0 >= step.n) {
    return;
  }
  // Invocation (ir, it) owns rows ir + 8i and tokens it + 8j (i, j < 4).
  let ir = lid % 8u;
  let it = lid / 8u;
  var acc: array<i32, 16>;
  for (var k0 = 0u; k0 < p.kw; k0 += KC) {
    for (var e = lid; e < TILE * KC; e += 64u) {
      let r = r0 + e / KC;
      let k = k0 + e % KC;
      var v = 0u;
      if (r < p.rows && k < p.kw) {
        v = w[r * p.kw + k];
      }
      w_tile[e] = v;
    }
    for (var e = lid; e < TILE * KC * 4u; e += 64u) {
      let t = t0 + e / (KC * 4u);
      let aw = k0 * 4u + e % (KC * 4u);
      var v = 0u;
      if (t < step.n && aw < p.act_stride) {
        v = act[t * p.act_stride + aw];
      }
      a_tile[e] = v;
    }
    workgroupBarrier();
    for (var j = 0u; j < KC; j++) {
      for (var i = 0u; i < 4u; i++) {
        let word = w_tile[(ir + 8u * i) * KC + j];
        let s0 = word & 0x03030303u;
        let s1 = (word >> 2u) & 0x03030303u;
        let s2 = (word >> 4u) & 0x03030303u;
        let s3 = (word >> 6u) & 0x03030303u;
        for (var q = 0u; q < 4u; q++) {
          let a = (it + 8u * q) * (KC * 4u) + j * 4u;
          acc[i * 4u + q] += dot4I8Packed(s0, a_tile[a]) + dot4I8Packed(s1, a_tile[a + 1u])
            + dot4I8Packed(s2, a_tile[a + 2u]) + dot4I8Packed(s3, a_tile[a + 3u]);
        }
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    for (var q = 0u; q < 4u; q++) {
      let r = r0 + ir + 8u * i;
      let t = t0 + it + 8u * q;
      if (r < p.rows && t < step.n) {
        store(r, t, acc[i * 4u + q], true);
      }
    }
  }
}
