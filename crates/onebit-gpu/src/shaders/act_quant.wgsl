// One token row per workgroup: the value of each column (a plain copy, RMSNorm times its
// weight, or the gated activation act(gate)*up, optionally RMS-normed), then per-token int8
// absmax quantization exactly as the CPU's ActQuant: a = 127 / max(|v|, 1e-5),
// q = round_half_even(clamp(v*a, -128, 127)), packed four to a u32, with sum(q).
// Each thread owns the same four-column groups in every pass, so it reads back only its own
// scratch writes.

struct P {
  cols: u32,
  in_stride: u32,   // floats per input row
  in_off: u32,      // first input column (gate for the gated modes)
  mode: u32,        // 0: copy, 1: gated relu^2, 2: gated silu
  norm: u32,        // 1: RMSNorm with weight w
  act_stride: u32,  // output words per token
  eps: f32,
  gather: u32,      // 1: input row t is rows[t] (the head's wanted rows)
  up_off: u32,      // first input column of `up` in the gated modes
  p0: u32,
  p1: u32,
  p2: u32,
}

@group(0) @binding(1) var<uniform> p: P;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
@group(0) @binding(4) var<storage, read> gather_rows: array<u32>;
@group(0) @binding(5) var<storage, read_write> tmp: array<f32>;
@group(0) @binding(6) var<storage, read_write> act: array<u32>;
@group(0) @binding(7) var<storage, read_write> act_scale: array<f32>;
@group(0) @binding(8) var<storage, read_write> act_sum: array<i32>;

const WG: u32 = 256u;
var<workgroup> red_f: array<f32, 256>;
var<workgroup> red_i: array<i32, 256>;

fn value(s: u32, c: u32) -> f32 {
  let g = x[s * p.in_stride + p.in_off + c];
  if (p.mode == 0u) {
    return g;
  }
  var a: f32;
  if (p.mode == 1u) {
    let r = max(g, 0.0);
    a = r * r;
  } else {
    a = g / (1.0 + exp_cpu(-g));
  }
  return a * x[s * p.in_stride + p.up_off + c];
}

fn max_f(lid: u32, v: f32) -> f32 {
  red_f[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s >> 1u) {
    if (lid < s) {
      red_f[lid] = max(red_f[lid], red_f[lid + s]);
    }
    workgroupBarrier();
  }
  let r = red_f[0];
  workgroupBarrier();
  return r;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let t = wid.x;
  if (t >= step.n) {
    return;
  }
  var s = t;
  if (p.gather == 1u) {
    s = gather_rows[t];
  }
  let base = t * p.cols;
  let groups = (p.cols + 3u) / 4u;
  for (var g = lid; g < groups; g += WG) {
    for (var j = 0u; j < 4u; j++) {
      let c = g * 4u + j;
      if (c < p.cols) {
        let v = value(s, c);
        tmp[base + c] = v;
      }
    }
  }
  var r = 1.0;
  if (p.norm == 1u) {
    // The CPU sums the squares in column order; one invocation does the same here, so the
    // norm, and with it every int8 code, comes out as the CPU's (a tree sum would differ in
    // the last bits and flip codes that sit on a rounding boundary).
    storageBarrier();
    workgroupBarrier();
    if (lid == 0u) {
      var total = 0.0;
      for (var c = 0u; c < p.cols; c++) {
        let v = tmp[base + c];
        total += rounded(v * v);
      }
      red_f[0] = total;
    }
    workgroupBarrier();
    r = 1.0 / rounded(sqrt(red_f[0] / f32(p.cols) + p.eps));
    workgroupBarrier();
  }
  var m = 1e-5;
  for (var g = lid; g < groups; g += WG) {
    for (var j = 0u; j < 4u; j++) {
      let c = g * 4u + j;
      if (c < p.cols) {
        var v = tmp[base + c];
        if (p.norm == 1u) {
          v = v * r * w[c];
          tmp[base + c] = v;
        }
        let av = abs(v);
        if (av > m) {
          m = av;
        }
      }
    }
  }
  let mx = max_f(lid, m);
  let a = 127.0 / mx;
  var qs = 0;
  for (var g = lid; g < p.act_stride; g += WG) {
    var word = 0u;
    for (var j = 0u; j < 4u; j++) {
      let c = g * 4u + j;
      var q = 0;
      if (c < p.cols) {
        var y = clamp(tmp[base + c] * a, -128.0, 127.0);
        if (y != y) {
          y = 0.0;
        }
        q = i32(round(y));
      }
      qs += q;
      word = word | ((u32(q) & 0xffu) << (8u * j));
    }
    act[t * p.act_stride + g] = word;
  }
  red_i[lid] = qs;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k = k >> 1u) {
    if (lid < k) {
      red_i[lid] = red_i[lid] + red_i[lid + k];
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    act_scale[t] = a;
    act_sum[t] = red_i[0];
  }
}
