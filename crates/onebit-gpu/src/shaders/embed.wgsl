// Token embeddings into the rows of x, from one chunk of the table (a table larger than a
// storage binding is split into chunks of rows; each chunk fills the rows whose token it
// holds). Rows are f16 pairs in a u32 (exact widening, as the CPU's f16 table) or f32.

struct P { hidden: u32, first: u32, count: u32, half: u32 }

@group(0) @binding(1) var<uniform> p: P;
@group(0) @binding(2) var<storage, read> tokens: array<u32>;
@group(0) @binding(3) var<storage, read> table: array<u32>;
@group(0) @binding(4) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x + gid.y * 65535u * 256u;
  let t = i / p.hidden;
  let c = i % p.hidden;
  if (t >= step.n) {
    return;
  }
  let id = tokens[t];
  if (id < p.first || id >= p.first + p.count) {
    return;
  }
  let r = id - p.first;
  if (p.half == 1u) {
    let pair = unpack2x16float(table[(r * p.hidden + c) / 2u]);
    x[t * p.hidden + c] = pair[c % 2u];
  } else {
    x[t * p.hidden + c] = bitcast<f32>(table[r * p.hidden + c]);
  }
}
