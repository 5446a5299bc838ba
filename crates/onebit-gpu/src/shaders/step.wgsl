// Prepended to every kernel: the per-pass uniform at binding 0 (the rows of this pass, and a
// zero the host always writes) and `rounded`.

struct Step { n: u32, zero: u32, p1: u32, p2: u32 }

@group(0) @binding(0) var<uniform> step: Step;

// `v` as computed, hidden from the compiler by an XOR with the runtime zero `step.zero`:
// otherwise it may fuse a product with the add that follows into one fma, where the CPU
// rounds the product and the sum separately.
fn rounded(v: f32) -> f32 {
  return bitcast<f32>(bitcast<u32>(v) ^ step.zero);
}
