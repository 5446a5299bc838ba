//! Medians of `BitLinearLayer::forward_with_operands` and `forward` on the reference training
//! shape's three linear shapes (2048 tokens: d 256 → 256, 256 → 688, 688 → 256), 2 threads.
//! Argument: calls per median (default 200).

use onebit_kernels::ThreadPool;
use onebit_train::ops::bitlinear_layer::BitLinearLayer;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let pool = ThreadPool::new(2);
    let reps: usize = std::env::args().nth(1).map_or(200, |s| s.parse().expect("calls per median"));
    for (t, o, i) in [(2048, 256, 256), (2048, 688, 256), (2048, 256, 688)] {
        let x: Vec<f32> = (0..t * i).map(|v| ((v * 7919 % 1000) as f32 - 500.0) * 1e-3).collect();
        let w: Vec<f32> = (0..o * i).map(|v| ((v * 31 % 1000) as f32 - 500.0) * 1e-4).collect();
        let mut layer = BitLinearLayer::new(o, i).expect("layer");
        let (mut y, mut xu, mut wu) = (vec![0f32; t * o], vec![0f32; t * i], vec![0f32; o * i]);
        let mut time = |f: &mut dyn FnMut()| {
            median(
                (0..reps)
                    .map(|_| {
                        let s = std::time::Instant::now();
                        f();
                        s.elapsed().as_secs_f64() * 1e3
                    })
                    .collect(),
            )
        };
        let with = time(&mut || {
            layer
                .forward_with_operands(&pool, &mut y, (&mut xu, &mut wu), &x, &w)
                .expect("forward");
        });
        let plain = time(&mut || {
            layer.forward(&pool, &mut y, &x, &w, 1.0).expect("forward");
        });
        println!("{t}x{o}x{i}: forward_with_operands {with:.3} ms, forward {plain:.3} ms");
    }
}
