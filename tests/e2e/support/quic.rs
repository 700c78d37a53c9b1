//! QUIC test payloads: long headers (Initial, 0-RTT, Handshake, Retry, Version Negotiation),
//! short headers, and server connection ids in `TEST_CONFIG`'s QUIC-LB layout.

use rand::{rngs::StdRng, Rng};
use shardline_common::{
    consts::QUIC_MAX_CID_LEN,
    quic::{encode_cid, CidLayout},
};

/// UDP port of `quic` (IPv4) and `quic6` in `TEST_CONFIG`.
pub const QUIC_PORT: u16 = 4433;
/// Their layout: `cid_generation = 10` is rotation 3; server ids of 2 octets.
pub const LAYOUT: CidLayout = CidLayout {
    rotation: 3,
    server_id_len: 2,
};
/// A client's random 20-byte Initial DCID whose first octet does not decode (rotation 4).
pub const CLIENT_DCID: [u8; 20] = [
    0x93, 0x1f, 0x2e, 0x3d, 0x4c, 0x5b, 0x6a, 0x79, 0x88, 0x97, 0xa6, 0xb5, 0xc4, 0xd3, 0xe2, 0xf1,
    0x00, 0x0f, 0x1e, 0x2d,
];
/// The client's own connection id (the SCID of its long headers).
pub const CLIENT_SCID: [u8; 8] = [0xc1, 0x1e, 0x47, 0, 0, 0, 0, 1];

/// A server connection id of `layout` for `server_id`, with an 8-octet nonce.
pub fn server_cid_in(layout: CidLayout, server_id: u32, nonce: u8) -> Vec<u8> {
    let mut out = [0u8; QUIC_MAX_CID_LEN];
    let len = encode_cid(layout, server_id, &[nonce; 8], &mut out).expect("fits");
    out[..len].to_vec()
}

/// A server connection id of [`LAYOUT`] for `server_id`.
pub fn server_cid(server_id: u32) -> Vec<u8> {
    server_cid_in(LAYOUT, server_id, 0x5e)
}

/// A v1 long header of type `kind` (0 Initial, 1 0-RTT, 2 Handshake) from the client to
/// `dcid`, padded to `total` bytes (Initials are at least 1200).
pub fn long(kind: u8, dcid: &[u8], total: usize) -> Vec<u8> {
    let mut p = long_prefix(0xc0 | (kind << 4), 1, dcid);
    p.push(CLIENT_SCID.len() as u8);
    p.extend_from_slice(&CLIENT_SCID);
    if kind == 0 {
        p.push(0); // token length
    }
    let rest = total.saturating_sub(p.len() + 2);
    p.extend_from_slice(&(0x4000 | rest as u16).to_be_bytes());
    p.resize(total.max(p.len()), 0xa7);
    p
}

/// First octet, version, DCID length and DCID.
pub fn long_prefix(first: u8, version: u32, dcid: &[u8]) -> Vec<u8> {
    let mut p = vec![first];
    p.extend_from_slice(&version.to_be_bytes());
    p.push(dcid.len() as u8);
    p.extend_from_slice(dcid);
    p
}

/// A short header (1-RTT) to `dcid` with a 1-octet packet number and `body` protected bytes.
pub fn short(dcid: &[u8], body: usize) -> Vec<u8> {
    let mut p = vec![0x40];
    p.extend_from_slice(dcid);
    p.push(0x17);
    p.resize(p.len() + body, 0x3c);
    p
}

/// A Retry from a server: version 1, type 3, the client's id as DCID, a token and a tag.
pub fn retry(dcid: &[u8]) -> Vec<u8> {
    let mut p = long_prefix(0xf0, 1, dcid);
    p.push(8);
    p.extend_from_slice(&server_cid(1)[..8]);
    p.extend_from_slice(b"token");
    p.extend_from_slice(&[0x11; 16]);
    p
}

/// A Version Negotiation packet: version 0, then the versions offered.
pub fn version_negotiation(dcid: &[u8]) -> Vec<u8> {
    let mut p = long_prefix(0x80 | 0x35, 0, dcid);
    p.push(8);
    p.extend_from_slice(&CLIENT_SCID);
    p.extend_from_slice(&1u32.to_be_bytes());
    p.extend_from_slice(&0x6b33_43cfu32.to_be_bytes());
    p
}

/// A random QUIC payload for the agreement run: every packet kind, server ids known, down,
/// unknown and of another rotation, client ids, and broken headers.
pub fn random_payload(rng: &mut StdRng) -> Vec<u8> {
    let server_id = match rng.gen_range(0..6) {
        0 if rng.gen_bool(0.5) => super::random::DOWN_BACKEND,
        0 => 99,
        1 => rng.gen_range(0..0x1_0000),
        n => n,
    };
    let layout = if rng.gen_bool(0.1) {
        CidLayout {
            rotation: rng.gen_range(0..8),
            ..LAYOUT
        }
    } else {
        LAYOUT
    };
    let cid = if layout.rotation == 7 {
        let mut c = server_cid(server_id);
        c[0] |= 0xe0;
        c
    } else {
        server_cid_in(layout, server_id, rng.gen())
    };
    let client: Vec<u8> = (0..rng.gen_range(8..=20)).map(|_| rng.gen()).collect();
    let mut p = match rng.gen_range(0..10) {
        0 => long(0, &client, 1200),
        1 => long(1, &client, rng.gen_range(40..200)),
        2 => long(2, &cid, rng.gen_range(40..200)),
        3 => retry(&client),
        4 => version_negotiation(&client),
        5 => long_prefix(0xc0, rng.gen(), &client),
        _ => short(&cid, rng.gen_range(0..64)),
    };
    match rng.gen_range(0..12) {
        0 => p[0] ^= 0x40,
        1 if p.len() > 5 => p[5] = rng.gen_range(21..=255),
        2 => p.truncate(rng.gen_range(0..p.len())),
        _ => {}
    }
    p
}
