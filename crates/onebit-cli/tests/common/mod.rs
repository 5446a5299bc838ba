//! Helpers shared by the CLI test files.

/// Flags of the smallest model `onebit train` runs in a test in seconds.
pub const TINY_MODEL: [&str; 12] = [
    "--hidden", "32", "--layers", "1", "--heads", "2", "--ffn", "64", "--seq", "32", "--batch", "2",
];

/// `args` with the [`TINY_MODEL`] flags spliced in after the first `n`.
pub fn with_tiny<'a>(args: &[&'a str], n: usize) -> Vec<&'a str> {
    let mut v = args[..n].to_vec();
    v.extend(TINY_MODEL);
    v.extend(&args[n..]);
    v
}
