//! The state machine's snapshot as a compact binary image.
//!
//! A snapshot is the whole [`ControlState`]; written as JSON, a million placed sessions made a
//! ~95 MB document (`{"service":"kv","session":…}` and the field names per session) that the
//! daemon built in memory beside the state, and redb buffered again while it stored it: the
//! daemon's peak memory was the snapshot's. Here everything but the sessions and their critical
//! state is the small JSON head it always was, and the sessions follow field by field, grouped
//! by service (each name written once) in key order (each session number as the LEB128 step
//! from the one before): about 5 bytes a placed session.
//!
//! Layout after [`FORMAT`]: the head (length-prefixed JSON of the state without `sessions` and
//! `kv`); the sessions' groups (count, then per group the service name, the entry count and
//! per entry: session step, generation, member count, members, and a metadata flag followed by
//! its JSON when it is not the default); the critical state's groups (count, then per group the
//! service name, the session count and per session: session step, key count, then each key and
//! value). An image that starts with `{` is the JSON snapshot of an older store, still read.

use std::collections::BTreeMap;

use super::{put_bytes, put_uint, CodecError, Reader, FORMAT};
use crate::{
    config::ServiceName,
    state::{ControlState, Map, SessionEntry, SessionMeta, SessionRef},
};

const META_DEFAULT: u8 = 0;
const META_JSON: u8 = 1;

/// `state` as an image.
pub fn encode_image(state: &ControlState) -> Vec<u8> {
    let head = ControlState {
        sessions: Map::new(),
        kv: Map::new(),
        ..state.clone()
    };
    let mut out = vec![FORMAT];
    put_bytes(
        &mut out,
        &serde_json::to_vec(&head).expect("a control state serializes"),
    );
    out.reserve(state.sessions.len() * 6);
    put_groups(&mut out, &state.sessions, |out, entry| {
        put_uint(out, entry.generation);
        put_uint(out, entry.backends.len() as u64);
        for id in entry.backends.iter() {
            put_uint(out, u64::from(*id));
        }
        if entry.meta == SessionMeta::default() {
            out.push(META_DEFAULT);
        } else {
            out.push(META_JSON);
            put_bytes(
                out,
                &serde_json::to_vec(&*entry.meta).expect("metadata serializes"),
            );
        }
    });
    put_groups(&mut out, &state.kv, |out, pairs| {
        put_uint(out, pairs.len() as u64);
        for (key, value) in pairs {
            put_bytes(out, key.as_bytes());
            put_bytes(out, value);
        }
    });
    out
}

/// An image [`encode_image`] wrote, or an older store's JSON snapshot.
pub fn decode_image(bytes: &[u8]) -> Result<ControlState, CodecError> {
    if bytes.first() == Some(&b'{') {
        return Ok(serde_json::from_slice(bytes)?);
    }
    let mut sessions = Map::new();
    let mut kv = Map::new();
    let head = walk(
        bytes,
        |session, entry| {
            sessions.insert(session, entry);
        },
        |session, pairs| {
            kv.insert(session, pairs);
        },
    )?;
    Ok(ControlState {
        sessions,
        kv,
        ..head
    })
}

/// Checks that `bytes` decodes ([`decode_image`]) without building the state.
pub fn check_image(bytes: &[u8]) -> Result<(), CodecError> {
    if bytes.first() == Some(&b'{') {
        serde_json::from_slice::<ControlState>(bytes)?;
        return Ok(());
    }
    walk(bytes, |_, _| {}, |_, _| {}).map(|_| ())
}

/// Writes `map`'s entries grouped by service, each value with `put`.
fn put_groups<V: Clone>(
    out: &mut Vec<u8>,
    map: &Map<SessionRef, V>,
    mut put: impl FnMut(&mut Vec<u8>, &V),
) {
    // Keys are ordered by service first, so each service's entries are one run.
    let mut groups: Vec<(&str, usize)> = Vec::new();
    for session in map.keys() {
        match groups.last_mut() {
            Some((name, n)) if *name == session.service => *n += 1,
            _ => groups.push((&session.service, 1)),
        }
    }
    put_uint(out, groups.len() as u64);
    let mut entries = map.iter();
    for (name, n) in groups {
        put_bytes(out, name.as_bytes());
        put_uint(out, n as u64);
        let mut last = 0;
        for (session, value) in entries.by_ref().take(n) {
            put_uint(out, session.session - last);
            last = session.session;
            put(out, value);
        }
    }
}

/// Reads an image, handing each session's entry and critical state to the callbacks; returns
/// the head (the state without either).
fn walk(
    bytes: &[u8],
    mut session: impl FnMut(SessionRef, SessionEntry),
    mut state: impl FnMut(SessionRef, BTreeMap<String, Vec<u8>>),
) -> Result<ControlState, CodecError> {
    match bytes.first() {
        Some(&FORMAT) => {}
        Some(&byte) => return Err(CodecError::Format { byte }),
        None => return Err(CodecError::Truncated { at: 0 }),
    }
    let mut r = Reader::new(bytes, 1);
    let head: ControlState = serde_json::from_slice(r.bytes()?)?;
    r.groups(|r, at| {
        let generation = r.uint()?;
        let n = r.len()?;
        let mut backends = Vec::with_capacity(n);
        for _ in 0..n {
            backends.push(r.u32()?);
        }
        let meta = match r.byte()? {
            META_DEFAULT => SessionMeta::default(),
            META_JSON => serde_json::from_slice(r.bytes()?)?,
            tag => {
                return Err(CodecError::Tag {
                    what: "metadata",
                    tag,
                    at: r.at - 1,
                })
            }
        };
        session(
            at,
            SessionEntry {
                backends: backends.into(),
                generation,
                meta: meta.into(),
            },
        );
        Ok(())
    })?;
    r.groups(|r, at| {
        let n = r.len()?;
        let mut pairs = BTreeMap::new();
        for _ in 0..n {
            let key = r.string()?;
            pairs.insert(key, r.bytes()?.to_vec());
        }
        state(at, pairs);
        Ok(())
    })?;
    r.end()?;
    Ok(head)
}

impl Reader<'_> {
    /// Groups as [`put_groups`] wrote them, each entry's value read by `value`.
    fn groups(
        &mut self,
        mut value: impl FnMut(&mut Self, SessionRef) -> Result<(), CodecError>,
    ) -> Result<(), CodecError> {
        for _ in 0..self.len()? {
            // One name per group: every key of the group shares it.
            let service = ServiceName::new(&self.string()?);
            let mut last = 0u64;
            for _ in 0..self.len()? {
                let step = self.uint()?;
                last = last
                    .checked_add(step)
                    .ok_or_else(|| self.malformed("a session number overflows 64 bits"))?;
                let at = SessionRef {
                    service: service.clone(),
                    session: last,
                };
                value(self, at)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Command;

    fn kv(service: &str, session: u64) -> SessionRef {
        SessionRef {
            service: service.into(),
            session,
        }
    }

    fn state() -> ControlState {
        let config = crate::config::Config::parse(
            r#"
interface = "eth0"
[[services]]
name = "kv"
vip = "10.100.0.1"
port = 7000
protocol = "udp"
mode = "header"
forward = "l2dsr"
[[services]]
name = "web"
vip = "10.100.0.2"
port = 80
protocol = "tcp"
mode = "flow"
forward = "l2dsr"
[[backends]]
id = 1
ipv4 = "10.0.0.11"
mac = "02:00:00:00:00:11"
[[backends]]
id = 4000
ipv4 = "10.0.0.12"
mac = "02:00:00:00:00:12"
"#,
            "test",
        )
        .unwrap();
        let mut state = ControlState::from_config(&config);
        let mut commands = Vec::new();
        for s in [0, 1, 5, 1 << 40, u64::MAX] {
            commands.push(Command::Place {
                session: kv("kv", s),
                backends: vec![1, 4000],
            });
        }
        commands.push(Command::Place {
            session: kv("web", 3),
            backends: vec![4000],
        });
        commands.push(Command::SetMeta {
            session: kv("web", 9),
            meta: SessionMeta {
                class: Some("bulk".into()),
                labels: BTreeMap::from([("tenant".into(), "a".into())]),
            },
        });
        commands.push(Command::PutState {
            session: kv("kv", 5),
            key: "cart".into(),
            value: vec![0, 255, 7],
        });
        commands.push(Command::PutState {
            session: kv("web", u64::MAX),
            key: "k".into(),
            value: Vec::new(),
        });
        for c in &commands {
            state.apply(c).unwrap();
        }
        state
    }

    #[test]
    fn an_image_decodes_to_the_state_it_was_made_of() {
        let state = state();
        let image = encode_image(&state);
        check_image(&image).unwrap();
        assert_eq!(decode_image(&image).unwrap(), state);
        assert_eq!(
            decode_image(&encode_image(&ControlState::default())).unwrap(),
            ControlState::default()
        );
    }

    #[test]
    fn an_older_stores_json_snapshot_still_decodes() {
        let state = state();
        let json = serde_json::to_vec(&state).unwrap();
        check_image(&json).unwrap();
        assert_eq!(decode_image(&json).unwrap(), state);
    }

    #[test]
    fn a_placed_session_costs_a_few_bytes() {
        let mut state = state();
        let before = encode_image(&state).len();
        for s in 1000..11_000 {
            state
                .apply(&Command::Place {
                    session: kv("kv", s),
                    backends: vec![1],
                })
                .unwrap();
        }
        let per_session = (encode_image(&state).len() - before) / 10_000;
        assert!(per_session <= 6, "{per_session} bytes a session");
    }

    #[test]
    fn every_cut_or_damaged_image_is_an_error_never_a_panic() {
        let image = encode_image(&state());
        for end in 0..image.len() {
            assert!(check_image(&image[..end]).is_err(), "cut at {end}");
        }
        for at in 0..image.len() {
            let mut bad = image.clone();
            bad[at] ^= 0xff;
            let _ = check_image(&bad);
            let _ = decode_image(&bad);
        }
        let mut longer = image.clone();
        longer.push(0);
        assert!(check_image(&longer).is_err());
    }
}
