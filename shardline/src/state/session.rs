//! Compact field types of a [`SessionEntry`](super::SessionEntry): a daemon holds one entry per
//! placed session, a million of them on a large node, so each costs what it holds and no more.
//!
//! As a `Vec<u32>` and a [`SessionMeta`] the entry took 80 bytes plus a heap block for even a
//! single member; [`Members`] keeps up to [`INLINE`] ids inline, up to [`MAX_SHARDS`] in one
//! fixed heap block (a valid shard set's most: one hop from the entry, where a boxed `Vec` took
//! two, and the control loop reads every placed session's members each tick) and any longer
//! list boxed, and [`Meta`] is one pointer, null for the default metadata nearly every session
//! has. Both read as what they replace (a `[u32]`, a `SessionMeta`) and serialize as it, so
//! the API's JSON and stored states are unchanged.

use std::{
    fmt,
    ops::{Deref, DerefMut},
};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use shardline_common::consts::MAX_SHARDS;

use super::SessionMeta;

/// Member ids a [`Members`] holds without a heap block.
pub const INLINE: usize = 3;

/// A session's shard set members in order: reads as a `[u32]`.
#[derive(Clone)]
pub enum Members {
    /// At most [`INLINE`] ids: the first `len` of `ids`.
    Inline {
        /// How many of `ids` are members.
        len: u8,
        /// The members, then zeros.
        ids: [u32; INLINE],
    },
    /// More than [`INLINE`], at most [`MAX_SHARDS`] ids: the first `len` of `ids`.
    Wide {
        /// How many of `ids` are members.
        len: u8,
        /// The members, then zeros.
        ids: Box<[u32; MAX_SHARDS]>,
    },
    /// A longer list (no valid shard set: a command or stored state may carry one all the
    /// same, and is refused where it is checked).
    Boxed(Box<Vec<u32>>),
}

impl Members {
    /// `ids`, at least [`INLINE`] + 1 and at most [`MAX_SHARDS`] of them, in a fixed block.
    fn wide(ids: &[u32]) -> Self {
        let mut block = Box::new([0; MAX_SHARDS]);
        block[..ids.len()].copy_from_slice(ids);
        Members::Wide {
            len: ids.len() as u8,
            ids: block,
        }
    }

    /// Keeps the members for which `keep` holds, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&u32) -> bool) {
        *self = self.iter().copied().filter(|id| keep(id)).collect();
    }

    /// No members (unplaced).
    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

impl Default for Members {
    fn default() -> Self {
        Members::Inline {
            len: 0,
            ids: [0; INLINE],
        }
    }
}

impl Deref for Members {
    type Target = [u32];

    fn deref(&self) -> &[u32] {
        match self {
            Members::Inline { len, ids } => &ids[..usize::from(*len)],
            Members::Wide { len, ids } => &ids[..usize::from(*len)],
            Members::Boxed(ids) => ids,
        }
    }
}

impl DerefMut for Members {
    fn deref_mut(&mut self) -> &mut [u32] {
        match self {
            Members::Inline { len, ids } => &mut ids[..usize::from(*len)],
            Members::Wide { len, ids } => &mut ids[..usize::from(*len)],
            Members::Boxed(ids) => ids,
        }
    }
}

impl From<&[u32]> for Members {
    fn from(ids: &[u32]) -> Self {
        if ids.len() <= INLINE {
            let mut inline = [0; INLINE];
            inline[..ids.len()].copy_from_slice(ids);
            Members::Inline {
                len: ids.len() as u8,
                ids: inline,
            }
        } else if ids.len() <= MAX_SHARDS {
            Self::wide(ids)
        } else {
            Members::Boxed(Box::new(ids.to_vec()))
        }
    }
}

impl From<Vec<u32>> for Members {
    fn from(ids: Vec<u32>) -> Self {
        if ids.len() <= MAX_SHARDS {
            Self::from(&ids[..])
        } else {
            Members::Boxed(Box::new(ids))
        }
    }
}

impl FromIterator<u32> for Members {
    fn from_iter<I: IntoIterator<Item = u32>>(ids: I) -> Self {
        let mut inline = [0; INLINE];
        let mut len = 0;
        let mut ids = ids.into_iter();
        while let Some(id) = ids.next() {
            if len == INLINE {
                let mut all = inline.to_vec();
                all.push(id);
                all.extend(ids);
                return Members::from(all);
            }
            inline[len] = id;
            len += 1;
        }
        Members::Inline {
            len: len as u8,
            ids: inline,
        }
    }
}

impl<'a> IntoIterator for &'a Members {
    type Item = &'a u32;
    type IntoIter = std::slice::Iter<'a, u32>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl PartialEq for Members {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Members {}

impl PartialEq<Vec<u32>> for Members {
    fn eq(&self, other: &Vec<u32>) -> bool {
        **self == other[..]
    }
}

impl<const N: usize> PartialEq<[u32; N]> for Members {
    fn eq(&self, other: &[u32; N]) -> bool {
        **self == other[..]
    }
}

impl PartialEq<[u32]> for Members {
    fn eq(&self, other: &[u32]) -> bool {
        **self == *other
    }
}

impl fmt::Debug for Members {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for Members {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<u32>::deserialize(d).map(Members::from)
    }
}

/// A session's metadata: reads as a [`SessionMeta`], one null pointer while it is the default.
#[derive(Clone, Default, PartialEq)]
pub struct Meta(Option<Box<SessionMeta>>);

/// What a [`Meta`] without a box reads as.
static NO_META: SessionMeta = SessionMeta {
    class: None,
    labels: std::collections::BTreeMap::new(),
};

impl Deref for Meta {
    type Target = SessionMeta;

    fn deref(&self) -> &SessionMeta {
        self.0.as_deref().unwrap_or(&NO_META)
    }
}

impl From<SessionMeta> for Meta {
    fn from(meta: SessionMeta) -> Self {
        Meta((meta != NO_META).then(|| Box::new(meta)))
    }
}

impl From<&SessionMeta> for Meta {
    fn from(meta: &SessionMeta) -> Self {
        Meta((*meta != NO_META).then(|| Box::new(meta.clone())))
    }
}

impl PartialEq<SessionMeta> for Meta {
    fn eq(&self, other: &SessionMeta) -> bool {
        **self == *other
    }
}

impl fmt::Debug for Meta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

impl Serialize for Meta {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Meta {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        SessionMeta::deserialize(d).map(Meta::from)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn an_entry_costs_32_bytes_and_no_heap_block_for_a_short_set() {
        assert_eq!(std::mem::size_of::<Members>(), 16);
        assert_eq!(std::mem::size_of::<Meta>(), 8);
        assert_eq!(std::mem::size_of::<super::super::SessionEntry>(), 32);
        assert!(matches!(
            Members::from(vec![1, 2, 3]),
            Members::Inline { .. }
        ));
        assert!(Meta::from(SessionMeta::default()).0.is_none());
    }

    #[test]
    fn members_read_serialize_and_change_as_the_vec_they_replace() {
        for ids in [
            vec![],
            vec![7],
            vec![1, 2, 3],
            vec![1, 2, 3, 4],
            (0..16).collect(),
            (0..17).collect(),
            (0..40).collect(),
        ] {
            let members = Members::from(ids.clone());
            assert_eq!(members, ids);
            assert_eq!(members, *ids);
            assert_eq!(ids.iter().copied().collect::<Members>(), ids);
            assert_eq!(Members::from(&ids[..]), members);
            let json = serde_json::to_string(&members).unwrap();
            assert_eq!(json, serde_json::to_string(&ids).unwrap());
            assert_eq!(serde_json::from_str::<Members>(&json).unwrap(), ids);
            assert_eq!(format!("{members:?}"), format!("{ids:?}"));
            let mut odd = members.clone();
            odd.retain(|id| id % 2 == 1);
            let want: Vec<u32> = ids.iter().copied().filter(|id| id % 2 == 1).collect();
            assert_eq!(odd, want);
            let mut none = members;
            none.clear();
            assert!(none.is_empty());
        }
        let mut sorted = Members::from(vec![3, 1, 2]);
        sorted.sort_unstable();
        assert_eq!(sorted, [1, 2, 3]);
        // A boxed list that shrinks is inline again.
        let mut long = Members::from(vec![1, 2, 3, 4]);
        assert!(matches!(long, Members::Wide { len: 4, .. }));
        long.retain(|id| *id != 4);
        assert!(matches!(long, Members::Inline { len: 3, .. }));
        // A shard set's most take one fixed block; only a longer list takes a `Vec`.
        let widest: Members = (0..16).collect();
        assert!(matches!(widest, Members::Wide { len: 16, .. }));
        let mut longer: Members = (0..17).collect();
        assert!(matches!(longer, Members::Boxed(_)));
        longer.retain(|id| *id < 16);
        assert!(matches!(longer, Members::Wide { len: 16, .. }));
    }

    #[test]
    fn meta_reads_and_serializes_as_session_meta() {
        let meta = SessionMeta {
            class: Some("bulk".into()),
            labels: BTreeMap::from([("a".into(), "b".into())]),
        };
        for m in [SessionMeta::default(), meta] {
            let compact = Meta::from(&m);
            assert_eq!(compact, m);
            assert_eq!(*compact, m);
            let json = serde_json::to_string(&compact).unwrap();
            assert_eq!(json, serde_json::to_string(&m).unwrap());
            assert_eq!(serde_json::from_str::<Meta>(&json).unwrap(), m);
        }
    }
}
