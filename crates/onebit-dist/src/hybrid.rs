//! Hybrid parallelism: a pipeline whose stages may each be a group of nodes splitting the
//! stage's blocks tensor-parallel (the planner's "tensor-parallel groups inside low-latency
//! islands, pipeline across them"). A plain pipeline is the hybrid whose every stage has one
//! node; tensor parallelism over all nodes is the hybrid of one stage (run by
//! [`crate::tensor`], which also splits the output head).
//!
//! Ranks are laid out stage by stage: stage 0 holds ranks `0..n₀` (rank 0, the head, leads
//! it and holds the embeddings and the whole output head), stage 1 the next `n₁`, and so on.
//! The first rank of a stage leads it: hidden states travel leader to leader round the ring
//! as in a pipeline ([`crate::pipeline`]); a leader hands every message it gets on to its
//! stage's other nodes (the same bytes, so all of them run the same rows in the same type),
//! and the group's four gathers per block run among its members only
//! ([`crate::comm::GroupComm`]). The head's own group gets the head's tokens. Every node of a
//! group ends a block with the whole hidden state, so only the leader sends it on.

use crate::error::{DistError, Result};
use onebit_model::{ModelConfig, TensorPart, TensorSplit};
use std::ops::Range;

/// The stages of a ring, as ranges of mesh ranks in order (the first rank of each leads it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ring {
    stages: Vec<Range<usize>>,
}

impl Ring {
    /// A ring of `sizes[i]` nodes in stage i, ranks in order from 0.
    pub fn new(sizes: &[usize]) -> Result<Ring> {
        if sizes.len() < 2 || sizes.contains(&0) {
            return Err(DistError::Usage(format!(
                "a ring of stages {sizes:?}: at least two, each of at least one node"
            )));
        }
        let mut start = 0;
        let stages = sizes
            .iter()
            .map(|&n| {
                start += n;
                start - n..start
            })
            .collect();
        Ok(Ring { stages })
    }

    /// The plain pipeline of `nodes` stages of one node each.
    pub fn plain(nodes: usize) -> Result<Ring> {
        Ring::new(&vec![1; nodes])
    }

    /// Nodes in the ring.
    pub fn nodes(&self) -> usize {
        self.stages.last().map_or(0, |s| s.end)
    }

    /// Stages in the ring.
    pub fn len(&self) -> usize {
        self.stages.len()
    }

    /// Whether the ring has no stage (never, once made).
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// The stage holding `rank`.
    pub fn stage_of(&self, rank: usize) -> Option<usize> {
        self.stages.iter().position(|s| s.contains(&rank))
    }

    /// Stage `s`'s ranks.
    pub fn group(&self, s: usize) -> Range<usize> {
        self.stages[s].clone()
    }

    /// The rank leading stage `s` (taken modulo the stage count).
    pub fn leader(&self, s: usize) -> usize {
        self.stages[s % self.stages.len()].start
    }

    /// What `rank` does in the ring.
    pub fn role(&self, rank: usize) -> Result<Role> {
        let s = self.stage_of(rank).ok_or_else(|| {
            DistError::Usage(format!("rank {rank} outside a ring of {} nodes", self.nodes()))
        })?;
        let lead = self.leader(s);
        let group: Vec<usize> = self.group(s).collect();
        Ok(Role {
            stage: s,
            // A leader hears from the stage before; anyone else from its leader.
            source: if rank == lead { self.leader(s + self.len() - 1) } else { lead },
            next: (rank == lead).then(|| self.leader(s + 1)),
            members: if rank == lead { group[1..].to_vec() } else { Vec::new() },
            group: if group.len() > 1 { group } else { Vec::new() },
        })
    }
}

/// One node's part in a [`Ring`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Role {
    /// Its stage.
    pub stage: usize,
    /// The rank it receives its messages from.
    pub source: usize,
    /// For a leader: the next stage's leader (the head for the last stage).
    pub next: Option<usize>,
    /// For a leader: the other nodes of its stage, which it hands every message to.
    pub members: Vec<usize>,
    /// Every rank of its stage where it has several nodes (the gathers' group); else empty.
    pub group: Vec<usize>,
}

/// One stage of a hybrid layout.
#[derive(Clone, Debug, PartialEq)]
pub struct HybridStage {
    /// Blocks the stage holds.
    pub blocks: usize,
    /// How its nodes split the blocks; `None`: one node holds them whole.
    pub split: Option<TensorSplit>,
}

impl HybridStage {
    /// Nodes running the stage.
    pub fn nodes(&self) -> usize {
        self.split.as_ref().map_or(1, |s| s.nodes())
    }
}

/// A hybrid layout: stages in rank order, head's first.
#[derive(Clone, Debug, PartialEq)]
pub struct HybridLayout {
    /// The stages.
    pub stages: Vec<HybridStage>,
}

impl HybridLayout {
    /// Stages of `groups[i]` nodes with `blocks[i]` blocks each, every group's split in
    /// proportion to `shares` (one per node, in rank order; equal if `None`).
    pub fn new(
        c: &ModelConfig,
        groups: &[usize],
        blocks: &[usize],
        shares: Option<&[f64]>,
    ) -> Result<HybridLayout> {
        let nodes: usize = groups.iter().sum();
        if groups.len() != blocks.len()
            || blocks.iter().sum::<usize>() != c.layers
            || blocks.contains(&0)
        {
            return Err(DistError::Usage(format!(
                "hybrid stages of {groups:?} nodes with blocks {blocks:?}: one block count per \
                 stage, each at least 1, summing to {}",
                c.layers
            )));
        }
        if shares.is_some_and(|s| s.len() != nodes) {
            return Err(DistError::Usage(format!("tensor shares for {nodes} nodes needed")));
        }
        let mut first = 0;
        let mut stages = Vec::with_capacity(groups.len());
        for (&n, &b) in groups.iter().zip(blocks) {
            let equal = vec![1.0; n];
            let sh = shares.map_or(&equal[..], |s| &s[first..first + n]);
            let split = (n > 1).then(|| TensorSplit::proportional(c, sh)).transpose()?;
            stages.push(HybridStage { blocks: b, split });
            first += n;
        }
        let layout = HybridLayout { stages };
        layout.ring()?;
        Ok(layout)
    }

    /// Nodes per stage.
    pub fn sizes(&self) -> Vec<usize> {
        self.stages.iter().map(HybridStage::nodes).collect()
    }

    /// The ring of the stages' nodes.
    pub fn ring(&self) -> Result<Ring> {
        Ring::new(&self.sizes())
    }

    /// Mesh rank `rank`'s blocks and piece of them (`None`: whole blocks).
    pub fn part_of(&self, rank: usize) -> Result<(Range<usize>, Option<TensorPart>)> {
        let ring = self.ring()?;
        let s = ring.stage_of(rank).ok_or_else(|| {
            DistError::Usage(format!("rank {rank} outside a layout of {} nodes", ring.nodes()))
        })?;
        let start: usize = self.stages[..s].iter().map(|x| x.blocks).sum();
        let stage = &self.stages[s];
        let piece = stage
            .split
            .as_ref()
            .map(|split| TensorPart { split: split.clone(), rank: rank - ring.group(s).start });
        Ok((start..start + stage.blocks, piece))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_follow_the_stages() {
        // Stage 0: ranks 0, 1; stage 1: rank 2; stage 2: ranks 3, 4, 5.
        let ring = Ring::new(&[2, 1, 3]).unwrap();
        assert_eq!(ring.nodes(), 6);
        let r = ring.role(0).unwrap();
        assert_eq!((r.source, r.next, r.members, r.group), (3, Some(2), vec![1], vec![0, 1]));
        let r = ring.role(1).unwrap();
        assert_eq!((r.source, r.next, r.members, r.group), (0, None, vec![], vec![0, 1]));
        let r = ring.role(2).unwrap();
        assert_eq!((r.source, r.next, r.members, r.group), (0, Some(3), vec![], vec![]));
        let r = ring.role(3).unwrap();
        assert_eq!((r.source, r.next, r.members.clone(), r.stage), (2, Some(0), vec![4, 5], 2));
        assert_eq!(ring.role(5).unwrap().source, 3);
        assert!(ring.role(6).is_err());
        assert!(Ring::new(&[3]).is_err() && Ring::new(&[1, 0]).is_err());
        assert_eq!(Ring::plain(3).unwrap().role(2).unwrap().next, Some(0));
    }

    #[test]
    fn a_layout_gives_every_rank_its_blocks_and_piece() {
        let c = ModelConfig::preset("2b4t").unwrap();
        let l = HybridLayout::new(&c, &[1, 2], &[10, 20], None).unwrap();
        assert_eq!(l.part_of(0).unwrap(), (0..10, None));
        let (blocks, piece) = l.part_of(2).unwrap();
        assert_eq!(
            (blocks, piece.map(|p| (p.rank, p.split.q_heads))),
            (10..30, Some((1, vec![0, 10, 20])))
        );
        assert!(l.part_of(3).is_err());
        assert!(HybridLayout::new(&c, &[1, 2], &[10, 19], None).is_err());
        assert!(HybridLayout::new(&c, &[1, 2], &[0, 30], None).is_err());
        assert!(HybridLayout::new(&c, &[3], &[30], None).is_err());
        assert!(HybridLayout::new(&c, &[1, 2], &[10, 20], Some(&[1.0, 1.0])).is_err());
    }
}
