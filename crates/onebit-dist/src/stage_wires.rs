//! The element types of a staged mesh (a pipeline or a hybrid), link by link: the type each
//! stage's leader sends its hidden states in (to the next stage's leader, the last stage's
//! back to the head) and the type each stage's group gathers its pieces in. The planner
//! chooses them per link — exact f32 inside a wired island, int8 across a slow hop — and the
//! head tells every node with one `WIRES` message round the ring, in order with the rows.
//!
//! Message: `WIRES`, the stage count s (u8), s hop types, s gather types (one byte each:
//! [`WireDtype`]'s code). Parsing checks every length and code.

use crate::wire::WireDtype;

/// The pipeline message kind that sets the element types (kinds 1-4 are the rows and the
/// controls of `crate::pipeline`).
pub(crate) const WIRES: u8 = 8;

/// Per stage, the element type of the hop out of it and of its group's gathers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageWires {
    /// `hops[g]`: stage g's leader to stage g + 1's (the last stage's back to the head).
    pub hops: Vec<WireDtype>,
    /// `gathers[g]`: stage g's gathers among its nodes (unused where it has one node).
    pub gathers: Vec<WireDtype>,
}

impl StageWires {
    /// `dtype` on every link of `stages` stages.
    pub fn uniform(stages: usize, dtype: WireDtype) -> StageWires {
        StageWires { hops: vec![dtype; stages], gathers: vec![dtype; stages] }
    }

    /// Stages described.
    pub fn stages(&self) -> usize {
        self.hops.len()
    }

    /// The type every link of a ring of `sizes` nodes per stage sends, where they all send
    /// one (gathers of one-node stages do not count).
    pub fn single_type(&self, sizes: &[usize]) -> Option<WireDtype> {
        let mut used = self.used(sizes);
        let first = *used.next()?;
        used.all(|&d| d == first).then_some(first)
    }

    /// The lossiest type any link of a ring of `sizes` nodes per stage sends (f32: exact).
    pub fn lossiest(&self, sizes: &[usize]) -> WireDtype {
        self.used(sizes).copied().max_by_key(|d| d.code()).unwrap_or(WireDtype::F32)
    }

    /// Hops and gathers (of stages with several nodes) of a ring of `sizes` that send a lossy
    /// type.
    pub fn lossy_links(&self, sizes: &[usize]) -> usize {
        self.used(sizes).filter(|&&d| d != WireDtype::F32).count()
    }

    /// Every hop's type, then the gathers' of stages with several nodes.
    fn used<'a>(&'a self, sizes: &'a [usize]) -> impl Iterator<Item = &'a WireDtype> + 'a {
        let gathers = self.gathers.iter().zip(sizes).filter(|(_, &n)| n > 1).map(|(d, _)| d);
        self.hops.iter().chain(gathers)
    }

    /// `q8` where every link sends one type, else each link's, as [`StageWires::parse`] reads
    /// them: `hops=q8,f32` (a pipeline) or `hops=q8,q8/groups=f32,-` (`-`: a stage of one node
    /// gathers nothing).
    pub fn label(&self, sizes: &[usize]) -> String {
        if let Some(d) = self.single_type(sizes) {
            return d.name().to_string();
        }
        let names = |v: &[WireDtype], skip: &dyn Fn(usize) -> bool| {
            let n: Vec<&str> =
                v.iter().enumerate().map(|(g, d)| if skip(g) { "-" } else { d.name() }).collect();
            n.join(",")
        };
        let hops = names(&self.hops, &|_| false);
        if sizes.iter().all(|&n| n == 1) {
            return format!("hops={hops}");
        }
        let groups = names(&self.gathers, &|g| sizes.get(g).is_none_or(|&n| n == 1));
        format!("hops={hops}/groups={groups}")
    }

    /// Reads link-by-link types as [`StageWires::label`] writes them (`groups` may be left
    /// out: f32; `-` is f32), or says what is wrong.
    pub fn parse(s: &str) -> Result<StageWires, String> {
        let list = |part: Option<&str>, key: &str| -> Result<Option<Vec<WireDtype>>, String> {
            let Some(part) = part else { return Ok(None) };
            let v = part
                .strip_prefix(key)
                .and_then(|r| r.strip_prefix('='))
                .ok_or(format!("expected {key}=… in '{part}'"))?;
            let types = v.split(',').map(|n| match n {
                "-" => Ok(WireDtype::F32),
                n => WireDtype::from_name(n).ok_or(format!("unknown element type '{n}'")),
            });
            types.collect::<Result<Vec<_>, _>>().map(Some)
        };
        let mut parts = s.split('/');
        let hops = list(parts.next(), "hops")?.unwrap_or_default();
        let gathers =
            list(parts.next(), "groups")?.unwrap_or_else(|| vec![WireDtype::F32; hops.len()]);
        if parts.next().is_some()
            || hops.len() < 2
            || gathers.len() != hops.len()
            || hops.len() > 64
        {
            return Err(format!(
                "'{s}': one type per stage for hops (2 to 64 stages) and as many for groups"
            ));
        }
        Ok(StageWires { hops, gathers })
    }

    /// Writes the [`WIRES`] message.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.clear();
        out.extend([WIRES, self.stages().min(255) as u8]);
        out.extend(self.hops.iter().chain(&self.gathers).map(|d| d.code()));
    }

    /// Parses a [`WIRES`] message, or says why it is malformed.
    pub(crate) fn decode(b: &[u8]) -> Result<StageWires, String> {
        let (&kind, rest) = b.split_first().ok_or("empty wire-types message")?;
        let (&s, codes) = rest.split_first().ok_or("truncated wire-types message")?;
        let s = s as usize;
        if kind != WIRES || s == 0 || codes.len() != 2 * s {
            return Err(format!("wire-types message of {} bytes for {s} stages", b.len()));
        }
        let types = codes
            .iter()
            .map(|&c| WireDtype::from_code(c).ok_or(format!("unknown element type {c}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(StageWires { hops: types[..s].to_vec(), gathers: types[s..].to_vec() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use WireDtype::{F16, F32, Q8};

    #[test]
    fn messages_round_trip_and_have_the_documented_bytes() {
        let w = StageWires { hops: vec![Q8, F32], gathers: vec![F32, F16] };
        let mut out = Vec::new();
        w.encode(&mut out);
        assert_eq!(out, [8, 2, 2, 0, 0, 1]);
        assert_eq!(StageWires::decode(&out), Ok(w));
        for bad in [&[][..], &[8], &[8, 0], &[8, 2, 2, 0, 0], &[8, 1, 3, 0], &[1, 1, 0, 0]] {
            assert!(StageWires::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn labels_name_every_link_only_where_they_differ() {
        let w = StageWires { hops: vec![Q8, Q8], gathers: vec![F32, Q8] };
        // A one-node stage's gather type does not count.
        assert_eq!(w.single_type(&[1, 2]), Some(Q8));
        assert_eq!(w.label(&[1, 2]), "q8");
        assert_eq!(w.single_type(&[2, 1]), None);
        assert_eq!(w.label(&[2, 1]), "hops=q8,q8/groups=f32,-");
        assert_eq!(w.lossiest(&[2, 1]), Q8);
        assert_eq!((w.lossy_links(&[2, 1]), w.lossy_links(&[1, 2])), (2, 3));
        let p = StageWires { hops: vec![F16, F32], gathers: vec![Q8, Q8] };
        assert_eq!(p.label(&[1, 1]), "hops=f16,f32");
        assert_eq!(p.lossiest(&[1, 1]), F16);
        assert_eq!(StageWires::uniform(3, F32).lossiest(&[2, 2, 1]), F32);
    }

    #[test]
    fn labels_parse_back_and_bad_ones_say_why() {
        let w = StageWires { hops: vec![Q8, F16, Q8], gathers: vec![F32, Q8, F32] };
        let l = w.label(&[1, 2, 1]);
        assert_eq!(l, "hops=q8,f16,q8/groups=-,q8,-");
        assert_eq!(StageWires::parse(&l), Ok(w));
        let p = StageWires::parse("hops=q8,f32").unwrap();
        assert_eq!((p.hops, p.gathers), (vec![Q8, F32], vec![F32, F32]));
        for bad in [
            "",
            "q8",
            "hops=q8",
            "hops=q8,f8",
            "hops=q8,q8/groups=f32",
            "groups=f32,f32",
            "hops=q8,q8/groups=f32,f32/x",
            "hops=q8,q8/hops=f32,f32",
        ] {
            assert!(StageWires::parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn malformed_messages_are_errors_not_panics(b in proptest::collection::vec(any::<u8>(), 0..24)) {
            let _ = StageWires::decode(&b);
        }
    }
}
