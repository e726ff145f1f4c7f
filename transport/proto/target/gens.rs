//! The target's data generations: what its image belongs to, whether it
//! is consistent, and how SYNC records change that.
//!
//! A SYNC record is a barrier in the commit log: it starts once every
//! earlier record is on the device and nothing after it starts before it
//! is done. The glue executes it as [`Target::sync_meta`] says: for
//! SYNC_DONE it flushes the data device first (the image it declares
//! consistent must survive a power loss), then it writes the superblock
//! with the new generations, then it reports the record done; only then
//! does memory (and so the next HELLO_REPLY) take the new state. A crash
//! at any point leaves the superblock as before (the previous copy) or as
//! after, and the source's rule resends whatever may differ.

use core::ops::DerefMut;

use super::Target;
use crate::log::commit::WindowSlot;
use crate::log::locks::LockSlot;
use crate::log::meta::generation::{decide, Generations, Rule};
use crate::log::pages::Pages;
use crate::log::record::{Header, Hello, Kind, SYNC_DONE, SYNC_START};
use crate::transport::proto::Refusal;

/// The target's generations and consistency after SYNC record `h`, from
/// `gens` and `consistent` before it.
fn after_sync(gens: Generations, consistent: bool, h: &Header) -> (Generations, bool) {
    let mut g = gens;
    match h.count {
        SYNC_START => {
            g.target_sync_started(h.sector);
            (g, false)
        }
        SYNC_DONE => {
            if g.current != h.sector {
                g.rotate(h.sector);
            }
            (g, true)
        }
        _ => (gens, consistent),
    }
}

impl<P, W, F, L> Target<P, W, F, L>
where
    P: Pages,
    W: DerefMut<Target = [WindowSlot]>,
    F: DerefMut<Target = [u32]>,
    L: DerefMut<Target = [LockSlot]>,
{
    /// Gives the target the generations and consistency flag its
    /// superblock holds (a new target: no generation, not consistent).
    pub fn attach_generations(&mut self, gens: Generations, consistent: bool) {
        self.gens = gens;
        self.consistent = consistent;
    }

    /// The generations and consistency as the metadata device holds them.
    pub fn generations(&self) -> (Generations, bool) {
        (self.gens, self.consistent)
    }

    /// A read through the target's own device arrives: true if it must
    /// fail because the image is in the middle of a sync (a mix of two
    /// generations that no source ever held). A target that never held a
    /// generation serves what its device holds.
    pub fn read_refused(&mut self) -> bool {
        let refuse = !self.consistent && self.gens.current != 0;
        if refuse {
            self.stats.reads_refused = self.stats.reads_refused.saturating_add(1);
        }
        refuse
    }

    /// The rule the last accepted handshake applied (status).
    pub fn last_rule(&self) -> Option<Rule> {
        self.rule
    }

    /// For an issued SYNC record: the superblock to write (generations,
    /// consistent) and whether the data device must be flushed first.
    /// `None` for any other record.
    pub fn sync_meta(&self, h: &Header) -> Option<(Generations, bool, bool)> {
        if h.kind != Kind::Sync {
            return None;
        }
        let (g, c) = after_sync(self.gens, self.consistent, h);
        Some((g, c, h.count == SYNC_DONE))
    }

    /// SYNC record `h` is done: its superblock is on the device.
    pub(super) fn sync_applied(&mut self, h: &Header) {
        let (g, c) = after_sync(self.gens, self.consistent, h);
        self.gens = g;
        self.consistent = c;
    }

    /// The generations' rule for a source's HELLO: a refusal, if the
    /// stream must not go on top of this image. A source that keeps no
    /// generations (all zero) gets no rule.
    pub(super) fn gens_refusal(&mut self, h: &Hello) -> Option<Refusal> {
        if h.gens.current == 0 {
            self.rule = None;
            return None;
        }
        let rule = decide(&h.gens, &self.gens, self.consistent);
        self.rule = Some(rule);
        match rule {
            Rule::Refuse(r) => Some(r.into()),
            _ => None,
        }
    }
}
