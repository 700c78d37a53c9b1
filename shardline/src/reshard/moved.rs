//! A moved placement with its previous owners: whole ([`Handoff`], its plan included) for
//! those who read it, compact ([`CompactHandoff`]) as the swap stage records and keeps it.

use std::time::Instant;

use shardline_common::{
    maps::{scheme, SessionKey, ShardSet},
    plan::{session_plan, SessionPlan},
};

use super::placed::CompactSet;

/// A moved placement whose previous owners stay known until `until`.
#[derive(Clone, Debug)]
pub struct Handoff {
    /// The session.
    pub session: SessionKey,
    /// The placement before the move.
    pub previous: ShardSet,
    /// The placement after it.
    pub current: ShardSet,
    /// What moved.
    pub plan: SessionPlan,
    /// When the previous owners stop being published.
    pub until: Instant,
}

/// A [`Handoff`] as the swap stage records it in a [`Swap`](super::Swap) and keeps it while
/// its window is open: the two sets compact, the plan computed when asked (it follows from
/// them). A burst of placements keeps rate x window of them open (tens of thousands), a swap
/// may record a million: 64 bytes each where a [`Handoff`] takes about 460 and its plan's
/// heap block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompactHandoff {
    /// The session.
    pub session: SessionKey,
    previous: CompactSet,
    current: CompactSet,
    /// When the previous owners stop being published.
    pub until: Instant,
}

impl From<&Handoff> for CompactHandoff {
    fn from(h: &Handoff) -> Self {
        Self::new(h.session, &h.previous, &h.current, h.until)
    }
}

impl CompactHandoff {
    /// `session` moved from `previous` to `current`, its previous owners published until
    /// `until`.
    pub fn new(
        session: SessionKey,
        previous: &ShardSet,
        current: &ShardSet,
        until: Instant,
    ) -> Self {
        Self {
            session,
            previous: CompactSet::from(previous),
            current: CompactSet::from(current),
            until,
        }
    }

    /// The placement before the move.
    pub fn previous(&self) -> ShardSet {
        self.previous.get()
    }

    /// The previous placement as kept (what the handoff board keeps too).
    pub(crate) fn previous_compact(&self) -> &CompactSet {
        &self.previous
    }

    /// The placement after the move.
    pub fn current(&self) -> ShardSet {
        self.current.get()
    }

    /// The handoff whole, its plan computed.
    pub fn handoff(&self) -> Handoff {
        let (previous, current) = (self.previous(), self.current());
        Handoff {
            session: self.session,
            plan: session_plan(Some(&previous), &current),
            previous,
            current,
            until: self.until,
        }
    }
}

/// Whether going from `previous` to `current` moves any key: whether [`session_plan`] is
/// anything but [`SessionPlan::Unchanged`], without building the plan (two heap blocks, for
/// each of a tick's 10,000 sessions). Under rendezvous hashing no key moves exactly when the
/// members are the same (in any order); a range set's plan is built.
pub(super) fn moves_keys(previous: &ShardSet, current: &ShardSet) -> bool {
    if previous.scheme != current.scheme {
        return true;
    }
    if current.scheme == scheme::RANGE {
        return session_plan(Some(previous), current) != SessionPlan::Unchanged;
    }
    let (old, new) = (previous.members(), current.members());
    !(new.iter().all(|b| old.contains(b)) && old.iter().all(|b| new.contains(b)))
}
