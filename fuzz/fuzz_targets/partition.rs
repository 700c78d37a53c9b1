//! Fuzzes the shard lookup with arbitrary shard sets and keys: the owner is always a member
//! (for any count, scheme and split points, sorted or not), and an empty set has none.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardline_common::{
    consts::MAX_SHARDS,
    maps::ShardSet,
    partition::pick_shard,
};

fuzz_target!(|input: (u8, u8, [u32; MAX_SHARDS], [u64; MAX_SHARDS - 1], u64)| {
    let (count, scheme, backends, splits, key) = input;
    let set = ShardSet {
        generation: 1,
        count: u32::from(count % (MAX_SHARDS as u8 + 2)),
        scheme: u32::from(scheme % 3),
        backends,
        splits,
        stats_slot: 0,
        handoff: 0,
    };
    let members = &set.backends[..(set.count as usize).min(MAX_SHARDS)];
    match pick_shard(&set, key) {
        Some(id) => assert!(members.contains(&id), "owner {id} is not a member of {members:?}"),
        None => assert!(members.is_empty() || members.contains(&u32::MAX) || set.count as usize > MAX_SHARDS),
    }
});
