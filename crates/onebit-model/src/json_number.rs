//! Bounds on the numbers of structured output: a schema's `minimum` / `maximum` (and their
//! exclusive forms) and `multipleOf`, read exactly from the schema's text, and whether the
//! digits of a number read so far can still become a value within them. `multipleOf` is
//! decimal: 0.3 is a multiple of 0.1 (as the `jsonschema` crate and pydantic judge it; a
//! validator dividing doubles would not); an integer held to a `multipleOf` has at most 15
//! digits, so that it is exactly the double a validator reads.
//!
//! An integer is held as its value. A bounded `number` is written without an exponent, with
//! at most [`FRACTION`] decimals and [`DIGITS`] digits in all, and held as its value in
//! units of 10⁻⁹ (`i128`): bounds and values then compare exactly. Fifteen digits is what an
//! `f64` keeps (any two such decimals parse to different doubles, in order), so a validator
//! that reads the reply's numbers as `f64`, as JSON Schema validators do, agrees with every
//! comparison made here. Unbounded numbers are not read by this module.

use crate::json_mode::Num;

/// Most decimals of a bounded non-integer number.
pub const FRACTION: u32 = 9;
/// Most digits (before and after the point; a lone leading `0` not counted) of a bounded
/// non-integer number.
pub const DIGITS: u32 = 15;
/// Most digits of a bounded integer.
const INT_DIGITS: u32 = 31;

/// The values a number node accepts, inclusive, in units of 10^-`scale`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Range {
    /// Least value.
    pub min: i128,
    /// Greatest value.
    pub max: i128,
    /// 0 for an integer, [`FRACTION`] for a decimal.
    pub scale: u8,
    /// Every value is a multiple of this many units (`multipleOf`; 1: any value).
    pub multiple: u128,
}

/// Largest `multipleOf` in units: its least common multiple with a step of at most 10⁹
/// units stays within an `i128`.
pub(crate) const MAX_MULTIPLE: u128 = 10u128.pow(27);

/// Greatest common divisor.
pub(crate) fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The digits of a number read so far: the sign, every digit read as one integer (`mag`:
/// "12.5" is 125), how many are before the point (`int`, a lone `0` not counted) and after it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Digits {
    pub neg: bool,
    pub mag: u128,
    pub int: u8,
    pub frac: u8,
}

impl Digits {
    /// The digits after byte `b` took the number to `to`.
    pub(crate) fn after(self, b: u8, to: Num) -> Digits {
        let mut d = self;
        match (to, b) {
            (Num::Minus, _) => d.neg = true,
            (Num::Int | Num::Zero | Num::Frac, b'0'..=b'9') => {
                // Unbounded numbers may run on; their digits are not compared, only capped.
                d.mag = (d.mag * 10 + (b - b'0') as u128).min(10u128.pow(31));
                if to == Num::Int {
                    d.int = d.int.saturating_add(1);
                } else if to == Num::Frac {
                    d.frac = d.frac.saturating_add(1);
                }
            }
            _ => {}
        }
        d
    }
}

fn pow10(e: u32) -> u128 {
    10u128.pow(e)
}

impl Range {
    /// Whether a magnitude in `lo..=hi` that is a multiple of `step` (in units), with the
    /// sign of `neg`, lies within the range (and so is a multiple of `multiple` too: of the
    /// least common multiple of both).
    fn meets(&self, neg: bool, lo: u128, hi: u128, step: u128) -> bool {
        let step = step / gcd(step, self.multiple) * self.multiple;
        let (lo, hi, step) = (lo as i128, hi as i128, step as i128);
        let (a, b) = if neg {
            (lo.max(self.max.saturating_neg()), hi.min(self.min.saturating_neg()))
        } else {
            (lo.max(self.min), hi.min(self.max))
        };
        // The least multiple of step at or above a (a ≥ lo ≥ 0).
        a <= b && (a / step + (a % step != 0) as i128).checked_mul(step).is_some_and(|m| m <= b)
    }

    /// Decimals that may follow `int` digits before the point.
    fn decimals(&self, int: u32) -> u32 {
        (self.scale as u32).min(DIGITS.saturating_sub(int))
    }

    /// Magnitudes (in units) written with `int` digits before the point, all starting with
    /// the digits of `mag`, followed by any allowed decimals: `lo..=hi` in steps of `step`.
    fn span(&self, mag: u128, extra: u32, int: u32) -> (u128, u128, u128) {
        let unit = pow10(self.scale as u32);
        let step = pow10(self.scale as u32 - self.decimals(int));
        let lo = mag * pow10(extra) * unit;
        (lo, (mag + 1) * pow10(extra) * unit - step, step)
    }

    /// Whether a number in the range can still be written from here (the part `part` and
    /// the digits `d` read so far).
    pub(crate) fn admits(&self, part: Num, d: Digits) -> bool {
        let s = self.scale as u32;
        // A multiple of an integer beyond fifteen digits is judged on the double nearest to
        // it by validators that read numbers as f64 (2^53 ≈ 9·10^15).
        let most = if s == 0 && self.multiple == 1 { INT_DIGITS } else { DIGITS };
        match part {
            Num::Minus => {
                let zero = self.admits(Num::Zero, d);
                zero || (1..=9u8)
                    .any(|k| self.admits(Num::Int, Digits { mag: k as u128, int: 1, ..d }))
            }
            Num::Zero => {
                let (lo, hi, step) = self.span(0, 0, 0);
                self.meets(d.neg, lo, hi, step)
            }
            Num::Int => (d.int as u32..=most).any(|int| {
                let (lo, hi, step) = self.span(d.mag, int - d.int as u32, int);
                self.meets(d.neg, lo, hi, step)
            }),
            Num::Dot | Num::Frac => {
                let c = self.decimals(d.int as u32);
                let f = d.frac as u32;
                if f > c || (part == Num::Dot && c == 0) {
                    return false;
                }
                let (unit, step) = (pow10(s - f), pow10(s - c));
                let lo = d.mag * unit;
                self.meets(d.neg, lo, lo + unit - step, step)
            }
            Num::E | Num::ESign | Num::Exp => false,
        }
    }

    /// Whether the whole number read (`part` complete) lies within the range.
    pub(crate) fn holds(&self, d: Digits) -> bool {
        let v = (d.mag * pow10(self.scale as u32 - (d.frac as u32).min(self.scale as u32))) as i128;
        let v = if d.neg { -v } else { v };
        self.min <= v && v <= self.max && v.unsigned_abs() % self.multiple == 0
    }

    /// Whether any number at all lies within the range and the digits allowed.
    pub(crate) fn reachable(&self) -> bool {
        let d = Digits::default();
        self.min <= self.max
            && (self.admits(Num::Minus, Digits { neg: true, ..d })
                || self.admits(Num::Zero, d)
                || (1..=9u8).any(|k| self.admits(Num::Int, Digits { mag: k as u128, int: 1, ..d })))
    }
}

/// A JSON number's text times 10^`scale`, rounded up (`up`) or down to an integer;
/// magnitudes of 10^37 and beyond are held at 10^37 (further than any number a range admits).
/// None when `text` is not a number.
pub(crate) fn scaled(text: &str, scale: u32, up: bool) -> Option<i128> {
    let (neg, t) = match text.strip_prefix('-') {
        Some(t) => (true, t),
        None => (false, text),
    };
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], t[i + 1..].parse::<i64>().ok()?),
        None => (t, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    // The digits as an integer, and the power of ten that scales them to units.
    let digits = format!("{int}{frac}");
    let digits = digits.trim_start_matches('0');
    let mut power = exp.saturating_add(scale as i64).saturating_sub(frac.len() as i64);
    let cap: i128 = 10i128.pow(37);
    if digits.is_empty() {
        return Some(0);
    }
    if (digits.len() as i64).saturating_add(power) > 37 {
        return Some(if neg { -cap } else { cap });
    }
    // Digits beyond what an i128 holds only decide which way an inexact value rounds.
    let keep = digits.len().min(37);
    power += (digits.len() - keep) as i64;
    let dropped = digits[keep..].bytes().any(|b| b != b'0');
    let mut v: i128 = digits[..keep].parse().ok()?;
    let mut inexact = dropped;
    if power >= 0 {
        v *= 10i128.pow(power as u32);
    } else if -power > 37 {
        inexact |= v != 0;
        v = 0;
    } else {
        let p = 10i128.pow((-power) as u32);
        inexact |= v % p != 0;
        v /= p;
    }
    // v is the magnitude rounded toward zero; round the signed value the way asked.
    if inexact && (up != neg) {
        v += 1;
    }
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_read_exactly() {
        assert_eq!(scaled("0.1", 9, true), Some(100_000_000));
        assert_eq!(scaled("0.3", 9, false), Some(300_000_000));
        assert_eq!(scaled("-2.5", 0, true), Some(-2));
        assert_eq!(scaled("-2.5", 0, false), Some(-3));
        assert_eq!(scaled("2.5", 0, true), Some(3));
        assert_eq!(scaled("1e-7", 9, false), Some(100));
        assert_eq!(scaled("1.5e-10", 9, true), Some(1));
        assert_eq!(scaled("1.5e-10", 9, false), Some(0));
        assert_eq!(scaled("-1.5e-10", 9, false), Some(-1));
        assert_eq!(scaled("1e300", 9, false), Some(10i128.pow(37)));
        assert_eq!(scaled("-1e300", 0, true), Some(-(10i128.pow(37))));
        assert_eq!(scaled("1e-300", 9, true), Some(1));
        assert_eq!(scaled("0", 9, true), Some(0));
        assert_eq!(
            scaled("123456789012345678901234567890123456789012", 0, true),
            Some(10i128.pow(37))
        );
        assert_eq!(scaled("x", 0, true), None);
        assert_eq!(scaled("1.", 0, true), Some(1));
    }

    #[test]
    fn prefixes_reach_values_within_the_range() {
        // 0.1 ..= 0.3 as decimals.
        let r = Range { min: 100_000_000, max: 300_000_000, scale: 9, multiple: 1 };
        let at = |part, neg, mag, int, frac| r.admits(part, Digits { neg, mag, int, frac });
        assert!(at(Num::Zero, false, 0, 0, 0));
        assert!(at(Num::Dot, false, 0, 0, 0));
        assert!(at(Num::Frac, false, 2, 0, 1)); // 0.2
        assert!(at(Num::Frac, false, 3, 0, 1)); // 0.3 (may end, or add zeros)
        assert!(!at(Num::Frac, false, 31, 0, 2)); // 0.31
        assert!(!at(Num::Frac, false, 0, 0, 1)); // 0.0
        assert!(!at(Num::Frac, false, 9, 0, 2)); // 0.09 cannot become 0.1
        assert!(!at(Num::Int, false, 1, 1, 0)); // 1, 10, 100...
        assert!(!at(Num::Minus, true, 0, 0, 0));
        assert!(r.holds(Digits { neg: false, mag: 3, int: 0, frac: 1 }));
        assert!(!r.holds(Digits { neg: false, mag: 301, int: 0, frac: 3 }));
        // An integer range: 18 ..= 120.
        let r = Range { min: 18, max: 120, scale: 0, multiple: 1 };
        let at = |part, mag, int| r.admits(part, Digits { neg: false, mag, int, frac: 0 });
        assert!(at(Num::Int, 1, 1)); // 1 → 18, 100...
        assert!(!at(Num::Int, 13, 2));
        assert!(at(Num::Int, 12, 2)); // 120
        assert!(!at(Num::Int, 121, 3));
        assert!(!at(Num::Zero, 0, 0));
    }

    #[test]
    fn multiples_narrow_what_prefixes_reach() {
        // Multiples of 25 (0.25 at scale 2 would be the same) between 30 and 60: only 50.
        let r = Range { min: 30, max: 60, scale: 0, multiple: 25 };
        let at = |part, mag, int| r.admits(part, Digits { neg: false, mag, int, frac: 0 });
        assert!(at(Num::Int, 5, 1) && at(Num::Int, 50, 2));
        assert!(!at(Num::Int, 4, 1) && !at(Num::Int, 3, 1) && !at(Num::Int, 6, 1));
        assert!(r.holds(Digits { neg: false, mag: 50, int: 2, frac: 0 }));
        assert!(!r.holds(Digits { neg: false, mag: 40, int: 2, frac: 0 }));
        let r = Range { max: 49, ..r };
        assert!(!r.reachable());
        // Decimals: multiples of 0.25 (250,000,000 units of 10^-9); 0.5 and 0.75 after "0.".
        let r = Range { min: i128::MIN, max: i128::MAX, scale: 9, multiple: 250_000_000 };
        let d = |neg, mag, int, frac| Digits { neg, mag, int, frac };
        assert!(r.admits(Num::Frac, d(false, 7, 0, 1)) && !r.admits(Num::Frac, d(false, 71, 0, 2)));
        assert!(r.admits(Num::Frac, d(true, 75, 0, 2)) && r.holds(d(true, 75, 0, 2)));
        assert!(!r.holds(d(false, 7, 0, 1)) && r.holds(d(false, 5, 0, 1)));
        // An integer held to a multiple has at most 15 digits (exact as a double).
        let r = Range { min: 0, max: i128::MAX, scale: 0, multiple: 18 };
        let big =
            |int: u32| Digits { neg: false, mag: 10u128.pow(int - 1), int: int as u8, frac: 0 };
        let last = Digits { mag: 10u128.pow(14) + 8, ..big(15) }; // 10^14 + 8 = 18 · 5555555555556
        assert!(r.admits(Num::Int, big(14)) && r.admits(Num::Int, last) && r.holds(last));
        assert!(!r.admits(Num::Int, big(16)));
        assert!(Range { multiple: 1, ..r }.admits(Num::Int, big(16)));
        // The largest multiple allowed leaves only 0 among numbers of 15 digits.
        let r = Range { multiple: MAX_MULTIPLE, ..r };
        assert!(r.admits(Num::Zero, d(false, 0, 0, 0)) && !r.admits(Num::Int, d(false, 1, 1, 0)));
    }

    #[test]
    fn digits_and_decimals_are_capped() {
        let r = Range { min: -(10i128.pow(30)), max: 10i128.pow(30), scale: 9, multiple: 1 };
        let d = Digits { neg: false, mag: 10u128.pow(14), int: 15, frac: 0 };
        assert!(r.admits(Num::Int, d));
        assert!(!r.admits(Num::Dot, d)); // 15 digits: no room for a decimal
        assert!(!r.admits(Num::Int, Digits { mag: 10u128.pow(15), int: 16, ..d }));
        let d = Digits { neg: false, mag: 1_234_567_891, int: 1, frac: 9 };
        assert!(!r.admits(Num::Frac, Digits { mag: d.mag * 10, frac: 10, ..d }));
        assert!(r.admits(Num::Frac, d));
        // Fourteen digits leave room for one decimal: x.95 ..= x.99 cannot be written.
        let x: u128 = 12_345_678_901_234;
        let unit = 1_000_000_000u128;
        let r = Range {
            min: (x * unit + 950_000_000) as i128,
            max: (x * unit + 990_000_000) as i128,
            scale: 9,
            multiple: 1,
        };
        let d = Digits { neg: false, mag: x, int: 14, frac: 0 };
        assert!(!r.admits(Num::Dot, d) && !r.admits(Num::Int, d) && !r.reachable());
        let r = Range { max: (x * unit + 900_000_000) as i128, ..r };
        assert!(!r.reachable());
        let r = Range { min: (x * unit + 900_000_000) as i128, ..r };
        assert!(r.admits(Num::Dot, d) && r.reachable());
        // Nothing of at most 9 decimals lies strictly between 0 and 1e-12.
        let r = Range { min: 1, max: 0, scale: 9, multiple: 1 };
        assert!(!r.reachable());
    }
}
