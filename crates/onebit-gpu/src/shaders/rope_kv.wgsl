// RoPE on the q and k parts of each row of the fused q/k/v output, with the CPU's own
// cos/sin table (computed once on the host, so the rotation matches it), and the roped k and
// the v of each row written into the layer's KV cache at the row's (slot, position).
// One invocation per (row, head, rotation pair).

struct P {
  heads: u32,
  kv_heads: u32,
  hd: u32,
  qkv_stride: u32,
  qd: u32,
  kvd: u32,
  slot_stride: u32,  // floats per slot in a layer's cache (max_ctx * kvd)
  interleaved: u32,
}

@group(0) @binding(1) var<uniform> p: P;
@group(0) @binding(2) var<storage, read_write> qkv: array<f32>;
@group(0) @binding(3) var<storage, read> rows: array<u32>;   // (slot, position) per row
@group(0) @binding(4) var<storage, read> rope: array<f32>;   // [position][pair] (cos, sin)
@group(0) @binding(5) var<storage, read_write> kc: array<f32>;
@group(0) @binding(6) var<storage, read_write> vc: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let half = p.hd / 2u;
  let all_heads = p.heads + p.kv_heads;
  let g = gid.x + gid.y * 65535u * 64u;
  let i = g % half;
  let hh = (g / half) % all_heads;
  let t = g / (half * all_heads);
  if (t >= step.n) {
    return;
  }
  let slot = rows[2u * t];
  let pos = rows[2u * t + 1u];
  let co = rope[(pos * half + i) * 2u];
  let sn = rope[(pos * half + i) * 2u + 1u];
  var a = i;
  var b = i + half;
  if (p.interleaved == 1u) {
    a = 2u * i;
    b = 2u * i + 1u;
  }
  var base = t * p.qkv_stride + hh * p.hd;
  if (hh >= p.heads) {
    base = t * p.qkv_stride + p.qd + (hh - p.heads) * p.hd;
  }
  let x0 = qkv[base + a];
  let x1 = qkv[base + b];
  let y0 = rounded(x0 * co) - rounded(x1 * sn);
  let y1 = rounded(x0 * sn) + rounded(x1 * co);
  qkv[base + a] = y0;
  qkv[base + b] = y1;
  if (hh >= p.heads) {
    let kvh = hh - p.heads;
    let at = slot * p.slot_stride + pos * p.kvd + kvh * p.hd;
    kc[at + a] = y0;
    kc[at + b] = y1;
    let vb = t * p.qkv_stride + p.qd + p.kvd + kvh * p.hd;
    vc[at + a] = qkv[vb + a];
    vc[at + b] = qkv[vb + b];
  }
}
