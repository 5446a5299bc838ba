//! Every WGSL kernel against the CPU (the checks in `common/checks.rs`, which the CUDA
//! kernels run too).

mod common;

use common::context;
use onebit_gpu::GpuContext;

struct Wgpu(GpuContext);

common::checks::device_over!(Wgpu, onebit_gpu::kernels);

fn device() -> Option<Wgpu> {
    context().map(Wgpu)
}

common::checks::kernel_check_tests!(device);

/// Both ternary kernels on every shape, whatever the token count would pick.
#[test]
fn row_and_tiled_ternary_kernels_are_each_bit_exact() {
    let Some(Wgpu(ctx)) = device() else { return };
    for tiled in [false, true] {
        let what = if tiled { " (tiled)" } else { " (rows)" };
        common::checks::ternary_bit_exact(
            |m, x| onebit_gpu::kernels::ternary_matmul_on(&ctx, m, x, tiled).unwrap(),
            what,
        );
    }
}

/// The device's sampler against the host's `Sampler::pick` on rows with ties, signed zeros
/// and wide ranges, for top-k 1 to 256, top-p, min-p, temperatures and the repetition
/// penalty: the same token for every draw.
#[test]
fn device_sampling_picks_what_the_host_picks() {
    use onebit_model::{Draw, Sampler, SamplerConfig};
    let Some(Wgpu(ctx)) = device() else { return };
    let mut rng = common::Rng(0x2545_f491_4f6c_dd1d);
    let mut checked = 0;
    for vocab in [1usize, 7, 300, 5000] {
        let mut logits = Vec::new();
        let (mut draws, mut penalized, mut samplers): (Vec<Draw>, Vec<u32>, Vec<Sampler>) =
            (Vec::new(), Vec::new(), Vec::new());
        for row in 0..48 {
            let spread = [0.5f32, 4.0, 40.0][row % 3];
            logits.extend((0..vocab).map(|i| match row % 4 {
                // Heavy ties: few distinct values.
                0 => (rng.unit() * 3.0).round() * 0.5,
                1 if i % 5 == 0 => -0.0,
                _ => rng.unit() * spread,
            }));
            let cfg = SamplerConfig {
                temperature: [0.3f32, 1.0, 2.5][row % 3],
                top_k: [1usize, 2, 40, 256, vocab.min(256)][row % 5],
                top_p: [1.0f32, 0.9, 0.5][(row / 3) % 3],
                min_p: [0.0f32, 0.05, 0.3][(row / 2) % 3],
                repeat_penalty: [1.0f32, 1.3][row % 2],
                repeat_last_n: 8,
                seed: row as u64 * 977 + vocab as u64,
            };
            let history: Vec<u32> = (0..12).map(|_| rng.below(vocab) as u32).collect();
            let mut s = Sampler::new(cfg, vocab);
            draws.push(s.draw(&history, &mut penalized));
            samplers.push(s);
        }
        let got = onebit_gpu::kernels::sample(&ctx, &logits, vocab, &draws, &penalized).unwrap();
        for (row, (s, d)) in samplers.iter_mut().zip(&draws).enumerate() {
            let mut l = logits[row * vocab..(row + 1) * vocab].to_vec();
            let want = s.pick(&mut l, d, &penalized);
            assert_eq!(got[row], want, "vocab {vocab}, row {row}, draw {d:?}");
            checked += 1;
        }
    }
    eprintln!("{checked} draws picked the same token on the device and the host");
}
