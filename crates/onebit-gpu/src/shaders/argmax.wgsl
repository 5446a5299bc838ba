// Greedy sampling on the device: the index of the largest logit of each row, the lowest
// index among equals (as the CPU sampler: a later value must be strictly greater).

struct P { vocab: u32, p0: u32, p1: u32, p2: u32 }

@group(0) @binding(1) var<uniform> p: P;
@group(0) @binding(2) var<storage, read> logits: array<f32>;
@group(0) @binding(3) var<storage, read_write> ids: array<u32>;

const WG: u32 = 256u;
var<workgroup> best_v: array<f32, 256>;
var<workgroup> best_i: array<u32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let t = wid.x;
  if (t >= step.n) {
    return;
  }
  var bv = -3.4028235e38;
  var bi = 0xffffffffu;
  for (var j = lid; j < p.vocab; j += WG) {
    let v = logits[t * p.vocab + j];
    if (v == v && (bi == 0xffffffffu || v > bv)) {
      bv = v;
      bi = j;
    }
  }
  best_v[lid] = bv;
  best_i[lid] = bi;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s >> 1u) {
    if (lid < s) {
      let ov = best_v[lid + s];
      let oi = best_i[lid + s];
      let mine = best_i[lid];
      if (oi != 0xffffffffu && (mine == 0xffffffffu || ov > best_v[lid] || (ov == best_v[lid] && oi < mine))) {
        best_v[lid] = ov;
        best_i[lid] = oi;
      }
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    var r = best_i[0];
    if (r == 0xffffffffu) {
      r = 0u;
    }
    ids[t] = r;
  }
}
