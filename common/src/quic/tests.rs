//! Fixtures: RFC 9001's sample packets and hand-built headers, parsed from byte slices.

extern crate std;

use std::{vec, vec::Vec};

use super::*;

const LAYOUT: CidLayout = CidLayout {
    rotation: 3,
    server_id_len: 2,
};

/// The start of RFC 9001 Appendix A.2's client Initial (DCID 8394c8f03e515708), padded.
fn rfc9001_initial() -> [u8; 64] {
    let mut p = [0u8; 64];
    let head = [
        0xc0, 0x00, 0x00, 0x00, 0x01, 0x08, 0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08, 0x00,
        0x00, 0x44, 0x9e, 0x7b, 0x9a, 0xec, 0x34,
    ];
    p[..head.len()].copy_from_slice(&head);
    p
}

/// A long header of `first` and `version` carrying `dcid`, followed by 32 payload bytes.
fn long(first: u8, version: u32, dcid: &[u8]) -> Vec<u8> {
    let mut p = vec![first];
    p.extend_from_slice(&version.to_be_bytes());
    p.push(dcid.len() as u8);
    p.extend_from_slice(dcid);
    p.extend_from_slice(&[0x5a; 32]);
    p
}

/// A short header with `dcid`, then a packet number and 24 bytes of protected payload.
fn short(dcid: &[u8]) -> Vec<u8> {
    let mut p = vec![0x41];
    p.extend_from_slice(dcid);
    p.extend_from_slice(&[0xa5; 25]);
    p
}

fn server_cid(server_id: u32) -> Vec<u8> {
    let mut out = [0u8; QUIC_MAX_CID_LEN];
    let len = encode_cid(LAYOUT, server_id, &[9, 8, 7, 6, 5], &mut out).unwrap();
    out[..len].to_vec()
}

fn parse(p: &[u8]) -> Result<QuicHeader, QuicError> {
    parse_quic(p, 0, p.len())
}

#[test]
fn rfc9001_initial_yields_its_dcid() {
    let p = rfc9001_initial();
    let h = parse(&p).unwrap();
    assert_eq!(h.kind, PacketKind::Initial);
    assert_eq!(h.version, 1);
    assert_eq!(h.dcid_len, 8);
    let dcid = h.dcid.bytes();
    assert_eq!(dcid[..8], [0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08]);
    assert!(dcid[8..].iter().all(|b| *b == 0), "padding is zeroed");
    // A client's random id carries no server id (rotation 0b100, not 3).
    assert_eq!(h.server_id(LAYOUT), None);
}

#[test]
fn long_header_types_are_told_apart() {
    let cid = server_cid(7);
    assert_eq!(
        parse(&long(0xc3, 1, &cid)).unwrap().kind,
        PacketKind::Initial
    );
    assert_eq!(
        parse(&long(0xd1, 1, &cid)).unwrap().kind,
        PacketKind::ZeroRtt
    );
    assert_eq!(
        parse(&long(0xe2, 1, &cid)).unwrap().kind,
        PacketKind::Handshake
    );
    let other = parse(&long(0x80, 0x6b33_43cf, &cid)).unwrap();
    assert_eq!(
        (other.kind, other.version),
        (PacketKind::OtherVersion, 0x6b33_43cf),
        "other versions are routed by the invariant DCID, fixed bit or not"
    );
    for first in [0xc0, 0xd0, 0xe0] {
        assert_eq!(
            parse(&long(first, 1, &cid)).unwrap().server_id(LAYOUT),
            Some(7)
        );
    }
}

#[test]
fn server_only_packets_are_refused() {
    // RFC 9001 Appendix A.4's Retry.
    let retry = [
        0xff, 0x00, 0x00, 0x00, 0x01, 0x00, 0x08, 0xf0, 0x67, 0xa5, 0x50, 0x2a, 0x42, 0x62, 0xb5,
        0x74, 0x6f, 0x6b, 0x65, 0x6e, 0x04, 0xa2, 0x65, 0xba, 0x2e, 0xff, 0x4d, 0x82, 0x90, 0x58,
        0xfb, 0x3f, 0x0f, 0x24, 0x96, 0xba,
    ];
    assert_eq!(parse(&retry), Err(QuicError::ServerOnly));
    // Version Negotiation: version 0, the rest of the first octet arbitrary (fixed bit too).
    let vn = long(0x80 | 0x2a, 0, &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(parse(&vn), Err(QuicError::ServerOnly));
}

#[test]
fn bogus_headers_are_refused() {
    let cid = server_cid(1);
    assert_eq!(parse(&long(0x83, 1, &cid)), Err(QuicError::FixedBit));
    let mut s = short(&cid);
    s[0] = 0x01;
    assert_eq!(parse(&s), Err(QuicError::FixedBit));
    assert_eq!(
        parse(&long(0xc0, 1, &[0x11; 21])),
        Err(QuicError::CidTooLong)
    );
    // A short-header id claiming 21 bytes or more.
    let mut s = short(&[0x11; 20]);
    s[1] = 0x14;
    assert_eq!(parse(&s), Err(QuicError::CidTooLong));
}

#[test]
fn truncated_packets_are_refused_at_every_length() {
    let whole = long(0xe0, 1, &server_cid(2));
    // Six header octets, then the 20-byte window from the DCID's start.
    let need = 6 + QUIC_CID_WINDOW;
    for len in 0..need {
        assert_eq!(
            parse(&whole[..len]),
            Err(QuicError::Truncated),
            "{len} bytes"
        );
    }
    assert!(parse(&whole[..need]).is_ok());
    // The datagram's end bounds the parse, not the buffer's.
    assert_eq!(
        parse_quic(&whole[..], 0, need - 1),
        Err(QuicError::Truncated)
    );
    let s = short(&server_cid(2));
    assert_eq!(parse(&s[..QUIC_CID_WINDOW]), Err(QuicError::Truncated));
    assert!(parse(&s[..1 + QUIC_CID_WINDOW]).is_ok());
}

#[test]
fn short_header_server_id_round_trips() {
    for id in [0, 1, 4, 255, 4095, 0xffff] {
        let cid = server_cid(id);
        let h = parse(&short(&cid)).unwrap();
        assert_eq!((h.kind, h.dcid_len), (PacketKind::Short, cid.len()));
        assert_eq!(h.server_id(LAYOUT), Some(id));
    }
    let mut out = [0u8; QUIC_MAX_CID_LEN];
    assert_eq!(
        encode_cid(LAYOUT, 0x1_0000, &[], &mut out),
        None,
        "needs 3 octets"
    );
    let unroutable = CidLayout {
        rotation: QUIC_ROTATION_UNROUTABLE,
        ..LAYOUT
    };
    assert_eq!(encode_cid(unroutable, 1, &[], &mut out), None);
}

#[test]
fn server_id_needs_the_current_rotation_and_a_true_length() {
    let h = parse(&short(&server_cid(9))).unwrap();
    let other = CidLayout {
        rotation: 4,
        ..LAYOUT
    };
    assert_eq!(h.server_id(other), None, "another config's id");
    let disabled = CidLayout {
        rotation: QUIC_ROTATION_UNROUTABLE,
        ..LAYOUT
    };
    assert_eq!(h.server_id(disabled), None);
    // A long header whose DCID length disagrees with the self-described one.
    let mut cid = server_cid(9);
    cid.push(0);
    assert_eq!(parse(&long(0xe0, 1, &cid)).unwrap().server_id(LAYOUT), None);
    // Too short to hold the server id.
    let tiny = [(3 << 5) | 1, 0];
    assert_eq!(
        parse(&long(0xe0, 1, &tiny)).unwrap().server_id(LAYOUT),
        None
    );
}

#[test]
fn the_key_is_the_whole_cid_and_nothing_else() {
    let a = server_cid(3);
    let key = |p: &[u8]| quic_identity(p, 0, p.len(), LAYOUT).unwrap().key;
    // Same id in a long and a short header, different packet bytes after it: same key.
    assert_eq!(key(&long(0xe0, 1, &a)), key(&short(&a)));
    let mut s = short(&a);
    s[a.len() + 3] ^= 0xff;
    assert_eq!(key(&s), key(&short(&a)));
    let mut b = a.clone();
    b[a.len() - 1] ^= 1;
    assert_ne!(key(&short(&a)), key(&short(&b)));
    // Trailing zero bytes count through the length.
    assert_ne!(cid_hash(&[0; 20], 4), cid_hash(&[0; 20], 5));
    assert_ne!(cid_hash(&[0; 20], 0), 0);
}

/// The hash as it was written byte by byte (before the words): the words must give the same
/// key for every id, so a connection keeps its shard across the change and the replay agrees.
fn bytewise_cid_hash(cid: &[u8; QUIC_MAX_CID_LEN], len: usize) -> u64 {
    let mut c = [0u8; QUIC_MAX_CID_LEN];
    for (i, b) in cid.iter().enumerate() {
        if i < len {
            c[i] = *b;
        }
    }
    let a = u64::from_be_bytes(c[..8].try_into().unwrap());
    let b = u64::from_be_bytes(c[8..16].try_into().unwrap());
    let t = u64::from(u32::from_be_bytes(c[16..].try_into().unwrap())) | ((len as u64) << 32);
    crate::hash::mix64(t ^ crate::hash::mix64(b ^ crate::hash::mix64(a ^ 0x5155_4943_2d4c_4221)))
}

#[test]
fn the_word_hash_and_server_id_match_the_bytewise_ones() {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..400 {
        let mut cid = [0u8; QUIC_MAX_CID_LEN];
        for b in cid.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let len = round % (QUIC_MAX_CID_LEN + 1);
        assert_eq!(
            cid_hash(&cid, len),
            bytewise_cid_hash(&cid, len),
            "len {len}, {cid:02x?}"
        );
        // Through the parser: a long header with this id and bytes after it that are not zero.
        let mut id = cid[..len].to_vec();
        if len > 0 {
            id[0] = (id[0] & 0xe0) | (len as u8 - 1);
        }
        let packet = long(0xc0, 1, &id);
        let h = parse(&packet).unwrap();
        assert_eq!(h.dcid.bytes()[..len], id[..]);
        assert!(h.dcid.bytes()[len..].iter().all(|b| *b == 0), "len {len}");
        let mut padded = [0u8; QUIC_MAX_CID_LEN];
        padded[..len].copy_from_slice(&id);
        assert_eq!(h.cid_hash(), bytewise_cid_hash(&padded, len), "len {len}");
        for sid_len in 1..=QUIC_MAX_SERVER_ID_LEN as u8 {
            let layout = CidLayout {
                rotation: id.first().map_or(0, |f| f >> 5).min(6),
                server_id_len: sid_len,
            };
            let want = (len > usize::from(sid_len) && id[0] >> 5 == layout.rotation).then(|| {
                id[1..=usize::from(sid_len)]
                    .iter()
                    .fold(0u32, |acc, b| (acc << 8) | u32::from(*b))
            });
            assert_eq!(h.server_id(layout), want, "len {len}, sid {sid_len}");
        }
    }
}
