//! Residual add: `out = a + b`.

/// `out = a + b`.
pub fn residual_forward(out: &mut [f32], a: &[f32], b: &[f32]) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = x + y;
    }
}

/// `da += dout; db += dout` (pass the same buffer twice through [`accumulate`] when a == b).
pub fn residual_backward(da: &mut [f32], db: &mut [f32], dout: &[f32]) {
    accumulate(da, dout);
    accumulate(db, dout);
}

/// `dst += src`.
pub fn accumulate(dst: &mut [f32], src: &[f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}
