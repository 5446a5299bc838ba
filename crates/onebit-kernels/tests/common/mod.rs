//! What the kernel tests share: a seeded xorshift generator and the ISAs std (not our own
//! detection) says this CPU has, so a detection slip cannot pass as "scalar only".
#![allow(dead_code)] // each test file uses its own subset

/// xorshift64: reproducible test data without a dependency.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// `n` trits in {-1, 0, +1}.
    pub fn trits(&mut self, n: usize) -> Vec<i8> {
        (0..n).map(|_| (self.next() % 3) as i8 - 1).collect()
    }
    /// `n` int8 activations over the whole range.
    pub fn acts(&mut self, n: usize) -> Vec<i8> {
        (0..n).map(|_| self.next() as u8 as i8).collect()
    }
    /// A float in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// The ISAs std reports on this CPU, by our names (`Isa::name`).
pub fn std_detected() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut isas = vec!["scalar"];
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            isas.push("avx2");
        }
        if std::is_x86_feature_detected!("avx512bw") && std::is_x86_feature_detected!("avx512vnni")
        {
            isas.push("avx512");
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            isas.push("neon");
        }
        if std::arch::is_aarch64_feature_detected!("dotprod") {
            isas.push("neon-dot");
        }
    }
    isas
}
