// Causal attention of one row's head over its slot's cached positions 0..=pos (grouped
// query heads share a KV head), in three passes as the CPU's decode attention: scaled dot
// products, softmax (max-subtracted exp, then divided by the sum), probability-weighted V.
// One workgroup per (head, row); scores live in a storage scratch so any context fits.

struct P {
  heads: u32,
  kv_heads: u32,
  hd: u32,
  qkv_stride: u32,
  qd: u32,
  kvd: u32,
  slot_stride: u32,
  max_ctx: u32,
  scale: f32,
  p0: u32,
  p1: u32,
  p2: u32,
}

@group(0) @binding(1) var<uniform> p: P;
@group(0) @binding(2) var<storage, read> qkv: array<f32>;
@group(0) @binding(3) var<storage, read> rows: array<u32>;
@group(0) @binding(4) var<storage, read> kc: array<f32>;
@group(0) @binding(5) var<storage, read> vc: array<f32>;
@group(0) @binding(6) var<storage, read_write> scores: array<f32>;
@group(0) @binding(7) var<storage, read_write> att: array<f32>;

const WG: u32 = 64u;
var<workgroup> red: array<f32, 64>;

fn reduce(lid: u32, v: f32, is_max: bool) -> f32 {
  red[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s >> 1u) {
    if (lid < s) {
      if (is_max) {
        red[lid] = max(red[lid], red[lid + s]);
      } else {
        red[lid] = red[lid] + red[lid + s];
      }
    }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let h = wid.x;
  let t = wid.y;
  if (t >= step.n) {
    return;
  }
  let g = h / (p.heads / p.kv_heads);
  let slot = rows[2u * t];
  let n_pos = rows[2u * t + 1u] + 1u;
  let kb = slot * p.slot_stride + g * p.hd;
  let qo = t * p.qkv_stride + h * p.hd;
  let sb = (t * p.heads + h) * p.max_ctx;
  var m = -3.4028235e38;
  for (var j = lid; j < n_pos; j += WG) {
    let s = dot_cpu(qo, kb + j * p.kvd) * p.scale;
    scores[sb + j] = s;
    m = max(m, s);
  }
  let mx = reduce(lid, m, true);
  for (var j = lid; j < n_pos; j += WG) {
    scores[sb + j] = exp_cpu(scores[sb + j] - mx);
  }
  // The CPU sums the exponentials in position order; one invocation does the same.
  storageBarrier();
  workgroupBarrier();
  if (lid == 0u) {
    var total = 0.0;
    for (var j = 0u; j < n_pos; j++) {
      total += scores[sb + j];
    }
    red[0] = total;
  }
  workgroupBarrier();
  let sum = red[0];
  for (var j = lid; j < n_pos; j += WG) {
    scores[sb + j] = scores[sb + j] / sum;
  }
  storageBarrier();
  workgroupBarrier();
  // o += p_j * v_j in position order, product and sum rounded apart, as the CPU's axpy.
  for (var d = lid; d < p.hd; d += WG) {
    var o = 0.0;
    for (var j = 0u; j < n_pos; j++) {
      o += rounded(scores[sb + j] * vc[kb + j * p.kvd + d]);
    }
    att[t * p.qd + h * p.hd + d] = o;
  }
}

// q·k exactly as the CPU's dot_f32: sixteen accumulators over whole chunks of sixteen (each
// product rounded before its add), summed in order, then the tail's products in order.
fn dot_cpu(qo: u32, ko: u32) -> f32 {
  var acc: array<f32, 16>;
  let whole = p.hd / 16u * 16u;
  for (var c = 0u; c < whole; c += 16u) {
    for (var i = 0u; i < 16u; i++) {
      acc[i] += rounded(qkv[qo + c + i] * kc[ko + c + i]);
    }
  }
  var tail = 0.0;
  for (var d = whole; d < p.hd; d++) {
    tail += rounded(qkv[qo + d] * kc[ko + d]);
  }
  var total = 0.0;
  for (var i = 0u; i < 16u; i++) {
    total += acc[i];
  }
  return total + tail;
}
