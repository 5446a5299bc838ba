// exp_cpu(x): onebit_kernels::dense::exp_f32 step for step, so softmax and SiLU give the
// CPU's bits: k = round_half_even(x * log2 e) (adding and removing 1.5 * 2^23), r = (x - k hi) - k mid (both products exact),
// the degree-7 Taylor polynomial of e^r by Horner's rule with every product rounded on its
// own (`rounded`, from step.wgsl, keeps the compiler from
// fusing it with the add; the CPU never fuses either), times 2^k from exponent bits; 0 below
// -87, infinity above 88.72, NaN kept. Constants are the f32 bit patterns of the CPU's
// (checked by onebit-kernels' tests). Prepended to every kernel.

fn exp_cpu(x: f32) -> f32 {
  if (x != x) {
    return x;
  }
  if (x < -87.0) {
    return 0.0;
  }
  if (x > 88.72) {
    return bitcast<f32>(0x7f800000u);
  }
  // Half-to-even rounding by adding and removing 1.5 * 2^23, as the CPU does.
  let k = rounded(rounded(x * bitcast<f32>(0x3fb8aa3bu)) + 12582912.0) - 12582912.0;
  let r = (x - rounded(k * bitcast<f32>(0x3f317200u))) - rounded(k * bitcast<f32>(0x35bfbe00u));
  var p = bitcast<f32>(0x39500d01u);
  p = rounded(p * r) + bitcast<f32>(0x3ab60b61u);
  p = rounded(p * r) + bitcast<f32>(0x3c088889u);
  p = rounded(p * r) + bitcast<f32>(0x3d2aaaabu);
  p = rounded(p * r) + bitcast<f32>(0x3e2aaaabu);
  p = rounded(p * r) + 0.5;
  p = rounded(p * r) + 1.0;
  p = rounded(p * r) + 1.0;
  let ki = i32(k);
  if (ki > 127) {
    return p * bitcast<f32>(254u << 23u) * bitcast<f32>(u32(ki) << 23u);
  }
  return p * bitcast<f32>(u32(ki + 127) << 23u);
}
