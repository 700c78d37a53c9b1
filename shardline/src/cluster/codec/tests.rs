use std::collections::{BTreeMap, BTreeSet};

use openraft::{BasicNode, Membership, Vote};

use super::*;
use crate::{
    config::Config,
    state::{ConfigTables, SessionMeta},
};

fn config() -> Config {
    Config::parse(
        r#"
interface = "eth0"
[[services]]
name = "kv"
vip = "10.100.0.1"
port = 7000
protocol = "udp"
mode = "header"
forward = "l2dsr"
[[backends]]
id = 1
ipv4 = "10.0.0.11"
mac = "02:00:00:00:00:11"
weight = 3
[[sessions]]
service = "kv"
session = 42
backends = [1]
"#,
        "test",
    )
    .unwrap()
}

fn kv(session: u64) -> SessionRef {
    SessionRef {
        service: "kv".into(),
        session,
    }
}

/// The variant's name; exhaustive, so a new variant fails to compile until it is listed
/// here and in [`every_command`].
fn name(command: &Command) -> &'static str {
    match command {
        Command::LoadConfig(_) => "LoadConfig",
        Command::UpsertBackend(_) => "UpsertBackend",
        Command::RegisterBackend(_) => "RegisterBackend",
        Command::SetWeight { .. } => "SetWeight",
        Command::SetHealth { .. } => "SetHealth",
        Command::HealthVote { .. } => "HealthVote",
        Command::ServiceHealthVote { .. } => "ServiceHealthVote",
        Command::SetServiceHealth { .. } => "SetServiceHealth",
        Command::Drain { .. } => "Drain",
        Command::DrainTimedOut { .. } => "DrainTimedOut",
        Command::RemoveBackend { .. } => "RemoveBackend",
        Command::JoinPool { .. } => "JoinPool",
        Command::LeavePool { .. } => "LeavePool",
        Command::Place { .. } => "Place",
        Command::Unplace { .. } => "Unplace",
        Command::SetMeta { .. } => "SetMeta",
        Command::PutState { .. } => "PutState",
        Command::DeleteState { .. } => "DeleteState",
        Command::Batch { .. } => "Batch",
    }
}

const VARIANTS: usize = 19;

fn every_command() -> Vec<Command> {
    let config = config();
    let backend = config.backends[0].clone();
    let singles = vec![
        Command::LoadConfig(ConfigTables::of(&config)),
        Command::UpsertBackend(backend.clone()),
        Command::RegisterBackend(backend),
        Command::SetWeight { id: 7, weight: 0 },
        Command::SetHealth {
            id: u32::MAX,
            healthy: false,
        },
        Command::HealthVote {
            node: u64::MAX,
            id: 3,
            healthy: true,
            members: vec![1, 2, 3],
        },
        Command::ServiceHealthVote {
            node: 2,
            service: "kv".into(),
            id: 1,
            healthy: false,
            members: vec![],
        },
        Command::SetServiceHealth {
            service: "kv".into(),
            id: 1,
            healthy: true,
        },
        Command::Drain {
            id: 1,
            draining: true,
        },
        Command::DrainTimedOut { id: 1 },
        Command::RemoveBackend { id: 2 },
        Command::JoinPool {
            service: "kv".into(),
            id: 1,
            weight: None,
        },
        Command::LeavePool {
            service: "kv".into(),
            id: 1,
        },
        Command::Place {
            session: kv(u64::MAX),
            backends: vec![1, 128, u32::MAX],
        },
        Command::Place {
            session: kv(0),
            backends: vec![],
        },
        Command::Unplace { session: kv(300) },
        Command::SetMeta {
            session: kv(1),
            meta: SessionMeta {
                class: Some("bulk".into()),
                labels: BTreeMap::from([("team".into(), "ünïcode ✓".into())]),
            },
        },
        Command::PutState {
            session: SessionRef {
                service: "ß-service".into(),
                session: 1 << 35,
            },
            key: "k".into(),
            value: (0..=255).collect(),
        },
        Command::PutState {
            session: kv(2),
            key: String::new(),
            value: vec![],
        },
        Command::DeleteState {
            session: kv(9),
            key: "gone".into(),
        },
    ];
    let mut all = singles.clone();
    all.push(Command::batch(singles));
    all.push(Command::batch(vec![]));
    all
}

fn entry(index: u64, payload: EntryPayload<TypeConfig>) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(index / 3 + 1, index % 5), index),
        payload,
    }
}

fn every_entry() -> Vec<Entry<TypeConfig>> {
    let membership = Membership::new(
        vec![BTreeSet::from([1, 2]), BTreeSet::from([2, 3])],
        BTreeMap::from([
            (1, BasicNode::new("127.0.0.1:1")),
            (2, BasicNode::new("127.0.0.1:2")),
            (3, BasicNode::new("127.0.0.1:3")),
            (4, BasicNode::new("127.0.0.1:4")),
        ]),
    );
    let mut out = vec![
        entry(0, EntryPayload::Blank),
        entry(u64::MAX, EntryPayload::Membership(membership)),
    ];
    for (i, command) in every_command().into_iter().enumerate() {
        out.push(entry(i as u64 + 1, EntryPayload::Normal(command)));
    }
    out
}

#[test]
fn every_command_variant_round_trips() {
    let commands = every_command();
    let names: BTreeSet<&str> = commands.iter().map(name).collect();
    assert_eq!(
        names.len(),
        VARIANTS,
        "a variant is not exercised: {names:?}"
    );
    for entry in every_entry() {
        let bytes = encode_entry(&entry);
        assert_eq!(bytes[0], FORMAT);
        let back = decode_entry(&bytes).unwrap_or_else(|e| panic!("{entry:?}: {e}"));
        assert_eq!(back, entry);
    }
}

#[test]
fn hot_commands_are_far_smaller_than_their_json() {
    let batch = Command::batch(
        (0..10_000)
            .map(|i| Command::Place {
                session: kv(i * 7919),
                backends: vec![1 + (i % 8) as u32, 5],
            })
            .collect(),
    );
    let e = entry(10, EntryPayload::Normal(batch));
    let binary = encode_entry(&e).len();
    let json = serde_json::to_vec(&e).unwrap().len();
    assert!(binary * 4 < json, "binary {binary} bytes, JSON {json}");
}

#[test]
fn entries_of_the_old_json_format_still_read() {
    for entry in every_entry() {
        let json = serde_json::to_vec(&entry).unwrap();
        assert_eq!(json[0], b'{');
        assert_eq!(decode_entry(&json).unwrap(), entry);
    }
}

#[test]
fn damaged_records_are_refused_never_misread() {
    for entry in every_entry() {
        let bytes = encode_entry(&entry);
        // Every strict prefix: the record ends early.
        for cut in 0..bytes.len() {
            assert!(
                decode_entry(&bytes[..cut]).is_err(),
                "{entry:?} cut at {cut} of {} decoded",
                bytes.len()
            );
        }
        // A byte left over.
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            decode_entry(&long),
            Err(CodecError::Malformed { .. })
        ));
    }
    // Another format's first byte.
    let mut other = encode_entry(&entry(1, EntryPayload::Blank));
    other[0] = 0xb2;
    assert!(matches!(
        decode_entry(&other),
        Err(CodecError::Format { byte: 0xb2 })
    ));
    // An unknown payload tag and an unknown command tag.
    let blank = encode_entry(&entry(1, EntryPayload::Blank));
    let mut bad = blank.clone();
    *bad.last_mut().unwrap() = 9;
    assert!(matches!(
        decode_entry(&bad),
        Err(CodecError::Tag {
            what: "payload",
            tag: 9,
            ..
        })
    ));
    let mut bad = blank;
    *bad.last_mut().unwrap() = NORMAL;
    bad.push(77);
    assert!(matches!(
        decode_entry(&bad),
        Err(CodecError::Tag {
            what: "command",
            tag: 77,
            ..
        })
    ));
    // A damaged JSON-format entry is an error too.
    let json = serde_json::to_vec(&entry(3, EntryPayload::Blank)).unwrap();
    assert!(decode_entry(&json[..json.len() - 1]).is_err());
}

#[test]
fn forged_counts_and_nesting_are_refused_without_allocating() {
    // A batch claiming u64::MAX commands in a few bytes.
    let mut forged = vec![FORMAT, 1, 1, 1, NORMAL, BATCH];
    put_uint(&mut forged, u64::MAX);
    assert!(matches!(
        decode_entry(&forged),
        Err(CodecError::Truncated { .. })
    ));
    // An integer of more than 64 bits.
    let mut wide = vec![FORMAT];
    wide.extend([0xff; 10]);
    wide.push(1);
    assert!(matches!(
        decode_entry(&wide),
        Err(CodecError::Malformed { .. })
    ));
    // A backend id over 32 bits.
    let mut out = vec![FORMAT, 1, 1, 1, NORMAL, PLACE];
    put_bytes(&mut out, b"kv");
    put_uint(&mut out, 1);
    put_uint(&mut out, 1);
    put_uint(&mut out, u64::from(u32::MAX) + 1);
    assert!(matches!(
        decode_entry(&out),
        Err(CodecError::Malformed { .. })
    ));
    // Batches nested past the limit.
    let mut deep = Command::batch(vec![]);
    for _ in 0..MAX_DEPTH {
        deep = Command::batch(vec![deep]);
    }
    let bytes = encode_entry(&entry(1, EntryPayload::Normal(deep)));
    assert!(matches!(
        decode_entry(&bytes),
        Err(CodecError::Malformed { .. })
    ));
    // A string that is not UTF-8.
    let mut out = vec![FORMAT, 1, 1, 1, NORMAL, UNPLACE];
    put_bytes(&mut out, &[0xff, 0xfe]);
    put_uint(&mut out, 1);
    assert!(matches!(
        decode_entry(&out),
        Err(CodecError::Malformed { .. })
    ));
}

#[test]
fn append_requests_round_trip_and_damage_is_refused() {
    let req = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(4, 2),
        prev_log_id: Some(LogId::new(CommittedLeaderId::new(3, 1), 17)),
        leader_commit: None,
        entries: every_entry(),
    };
    let bytes = encode_append(&req);
    let back = decode_append(&bytes).unwrap();
    assert_eq!(back.vote, req.vote);
    assert_eq!(back.prev_log_id, req.prev_log_id);
    assert_eq!(back.leader_commit, req.leader_commit);
    assert_eq!(back.entries, req.entries);
    for cut in 0..bytes.len() {
        assert!(
            decode_append(&bytes[..cut]).is_err(),
            "cut at {cut} decoded"
        );
    }
    let json = serde_json::to_vec(&req).unwrap();
    assert!(matches!(
        decode_append(&json),
        Err(CodecError::Format { byte: b'{' })
    ));
}
