// Sampling on the device: the pick of onebit_model's `Sampler::pick`, step for step, for
// draws of temperature > 0 and a top-k of at most 256 (the host checks both). One workgroup
// per row: the repetition penalty (products by the host's reciprocal), the top-k
// candidates in the host's total order (logit as `f32::total_cmp` orders it, then the lower
// index), softmax weights by `exp_cpu` (exp.wgsl), top-p and min-p, and the pick by the
// draw's uniform number, with every float step in the host's order and rounding.
//
// Finding the candidates: keys are the logits' bits made order-preserving as u32; the k-th
// largest key is found bit by bit (32 counting passes), every key above it is a candidate,
// and so are as many keys equal to it as are still needed, the lowest indices first (each
// invocation scans a contiguous range, so a prefix sum of the ranges' tie counts orders
// them). The k candidates are then ranked by counting.

struct P { vocab: u32, p0: u32, p1: u32, p2: u32 }

struct Draw {
  temperature: f32,
  inv_temperature: f32,
  top_k: u32,
  top_p: f32,
  min_p: f32,
  repeat_penalty: f32,
  inv_penalty: f32,
  u: f32,
  hist_start: u32,
  hist_len: u32,
  pad0: u32,
  pad1: u32,
}

@group(0) @binding(1) var<uniform> p: P;
@group(0) @binding(2) var<storage, read_write> logits: array<f32>;
@group(0) @binding(3) var<storage, read> draws: array<Draw>;
@group(0) @binding(4) var<storage, read> penalized: array<u32>;
@group(0) @binding(5) var<storage, read_write> ids: array<u32>;

const WG: u32 = 256u;
var<workgroup> counts: array<u32, 256>;
var<workgroup> total_count: u32;
var<workgroup> n_cand: atomic<u32>;
var<workgroup> cand: array<u32, 256>;
var<workgroup> sorted: array<u32, 256>;
var<workgroup> probs: array<f32, 256>;

// The logit's bits, ordered as `f32::total_cmp` orders floats.
fn key(v: f32) -> u32 {
  let b = bitcast<u32>(v);
  if ((b & 0x80000000u) != 0u) {
    return ~b;
  }
  return b | 0x80000000u;
}

// Sums `counts` over the workgroup; every invocation gets the total.
fn sum_counts(lid: u32, mine: u32) -> u32 {
  counts[lid] = mine;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s >> 1u) {
    if (lid < s) {
      counts[lid] += counts[lid + s];
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    total_count = counts[0];
  }
  return workgroupUniformLoad(&total_count);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let t = wid.x;
  if (t >= step.n) {
    return;
  }
  let base = t * p.vocab;
  let d = draws[t];
  if (lid == 0u) {
    for (var i = 0u; i < d.hist_len; i++) {
      let tok = penalized[d.hist_start + i];
      if (tok < p.vocab) {
        let l = logits[base + tok];
        if (l > 0.0) {
          logits[base + tok] = l * d.inv_penalty;
        } else {
          logits[base + tok] = l * d.repeat_penalty;
        }
      }
    }
  }
  storageBarrier();
  let k = clamp(d.top_k, 1u, min(p.vocab, WG));
  let chunk = (p.vocab + WG - 1u) / WG;
  let lo = min(lid * chunk, p.vocab);
  let hi = min(lo + chunk, p.vocab);
  // The largest threshold with at least k keys at or above it: the k-th largest key.
  var thr = 0u;
  for (var bit = 0u; bit < 32u; bit++) {
    let cand_thr = thr | (0x80000000u >> bit);
    var c = 0u;
    for (var j = lo; j < hi; j++) {
      c += u32(key(logits[base + j]) >= cand_thr);
    }
    if (sum_counts(lid, c) >= k) {
      thr = cand_thr;
    }
  }
  var above = 0u;
  var ties = 0u;
  for (var j = lo; j < hi; j++) {
    let kk = key(logits[base + j]);
    above += u32(kk > thr);
    ties += u32(kk == thr);
  }
  let n_above = sum_counts(lid, above);
  // Ties before this invocation's range (an exclusive prefix sum, sequential: 256 adds).
  counts[lid] = ties;
  if (lid == 0u) {
    atomicStore(&n_cand, 0u);
  }
  workgroupBarrier();
  if (lid == 0u) {
    var run = 0u;
    for (var i = 0u; i < WG; i++) {
      let c = counts[i];
      counts[i] = run;
      run += c;
    }
  }
  workgroupBarrier();
  var tie_rank = counts[lid];
  let ties_wanted = k - n_above;
  for (var j = lo; j < hi; j++) {
    let kk = key(logits[base + j]);
    var take = kk > thr;
    if (kk == thr) {
      take = tie_rank < ties_wanted;
      tie_rank += 1u;
    }
    if (take) {
      cand[atomicAdd(&n_cand, 1u)] = j;
    }
  }
  workgroupBarrier();
  // Rank each candidate by counting those before it: larger key, or equal key and lower index.
  if (lid < k) {
    let me = cand[lid];
    let mk = key(logits[base + me]);
    var rank = 0u;
    for (var i = 0u; i < k; i++) {
      let o = cand[i];
      let ok = key(logits[base + o]);
      rank += u32(ok > mk || (ok == mk && o < me));
    }
    sorted[rank] = me;
  }
  workgroupBarrier();
  if (lid == 0u) {
    let top = logits[base + sorted[0]];
    var total = 0.0;
    for (var i = 0u; i < k; i++) {
      let w = rounded(exp_cpu((logits[base + sorted[i]] - top) * d.inv_temperature));
      probs[i] = w;
      total = total + w;
    }
    var keep = 0u;
    var cum = 0.0;
    for (var i = 0u; i < k; i++) {
      let w = probs[i];
      if (keep > 0u && (cum >= rounded(d.top_p * total) || w < rounded(d.min_p * probs[0]))) {
        break;
      }
      cum = cum + w;
      keep += 1u;
    }
    var r = rounded(d.u * cum);
    var pick = sorted[keep - 1u];
    for (var i = 0u; i < keep; i++) {
      r = r - probs[i];
      if (r <= 0.0) {
        pick = sorted[i];
        break;
      }
    }
    ids[t] = pick;
  }
}
