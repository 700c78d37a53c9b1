//! QUIC header parsing and QUIC-LB plaintext connection ids, for `quic` services.
//!
//! A `quic` service routes by the packet's destination connection id (DCID), so a connection
//! keeps its backend when the client's address or port changes (NAT rebinding, migration) and
//! when the default table is re-sharded. The ids follow the QUIC-LB draft's plaintext
//! algorithm (draft-ietf-quic-load-balancers), with length self-description:
//!
//! ```text
//! octet 0: config rotation (3 bits) | id length - 1 (5 bits)
//! octets 1 ..= server_id_len: server id, big endian (= the backend id)
//! the rest: nonce (the server's own bytes; 4 or more recommended)
//! ```
//!
//! Parsing follows RFC 9000 (v1) and the version-independent invariants of RFC 8999. It is
//! bounded and allocation-free: fixed-size loads, no loop over packet length. The connection id
//! is held as three big-endian words, masked past its length ([`CidWords`]): in the kernel a
//! byte array is a load and a store per byte, and the hash and the server id read words.
//! What a packet becomes:
//!
//! - long header, any version but 0, and short header: routed by its DCID;
//! - version 0 (Version Negotiation) and v1 Retry: [`QuicError::ServerOnly`], dropped (only
//!   servers send them; one arriving at a VIP is spoofed or looped);
//! - fixed bit clear on a v1 long header or a short header: [`QuicError::FixedBit`], dropped
//!   (shardline's servers must not advertise `grease_quic_bit`, RFC 9287);
//! - DCID longer than 20 bytes (or a short-header id describing itself so):
//!   [`QuicError::CidTooLong`], dropped;
//! - fewer than [`QUIC_CID_WINDOW`] bytes from the DCID's start to the datagram's end:
//!   [`QuicError::Truncated`], dropped (no server could decrypt it).

use crate::{
    consts::{
        QUIC_CID_WINDOW, QUIC_MAX_CID_LEN, QUIC_MAX_SERVER_ID_LEN, QUIC_ROTATION_UNROUTABLE,
        QUIC_V1,
    },
    hash::mix64,
    packet::PacketBytes,
};

/// The header form bit: set on long headers.
const FORM_BIT: u8 = 0x80;
/// The fixed ("QUIC") bit: set on every v1 packet unless greased.
const FIXED_BIT: u8 = 0x40;
/// Long header: first octet, version (4), DCID length (1).
const LONG_PREFIX: usize = 6;
/// Seed of the connection-id hash, so an all-zero id does not hash to zero.
const CID_SEED: u64 = 0x5155_4943_2d4c_4221;

/// What kind of packet the header says this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketKind {
    /// v1 Initial: the client's first flight, DCID chosen at random by the client.
    Initial,
    /// v1 0-RTT: early data, same DCID as the client's Initial.
    ZeroRtt,
    /// v1 Handshake: DCID chosen by the server.
    Handshake,
    /// A long header of a version other than 1 (routed by its DCID, the invariant part).
    OtherVersion,
    /// Short header (1-RTT): DCID chosen by the server, length self-described.
    Short,
}

/// A parsed QUIC header: as much as routing needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuicHeader {
    /// The packet kind.
    pub kind: PacketKind,
    /// Version of a long header, 0 for a short header.
    pub version: u32,
    /// The DCID's bytes, zero past `dcid_len`.
    pub dcid: CidWords,
    /// Length of the DCID.
    pub dcid_len: usize,
}

/// A connection id's 20-byte window as big-endian words: bytes 0..8, 8..16 and 16..20, every
/// byte past the id's length zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CidWords {
    /// Bytes 0..8.
    pub a: u64,
    /// Bytes 8..16.
    pub b: u64,
    /// Bytes 16..20.
    pub t: u32,
}

impl CidWords {
    /// The words of `cid`'s first `len` bytes (the rest read as zero).
    pub fn from_bytes(cid: &[u8; QUIC_MAX_CID_LEN], len: usize) -> Self {
        let c = cid;
        Self {
            a: u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]),
            b: u64::from_be_bytes([c[8], c[9], c[10], c[11], c[12], c[13], c[14], c[15]]),
            t: u32::from_be_bytes([c[16], c[17], c[18], c[19]]),
        }
        .masked(len)
    }

    /// These words with every byte from `len` on zeroed.
    #[inline(always)]
    pub fn masked(self, len: usize) -> Self {
        Self {
            a: self.a & be_mask64(len),
            b: self.b & be_mask64(len.saturating_sub(8)),
            t: (u64::from(self.t) & (be_mask64(len.saturating_sub(16)) >> 32)) as u32,
        }
    }

    /// The window's bytes.
    pub fn bytes(&self) -> [u8; QUIC_MAX_CID_LEN] {
        let mut out = [0; QUIC_MAX_CID_LEN];
        out[..8].copy_from_slice(&self.a.to_be_bytes());
        out[8..16].copy_from_slice(&self.b.to_be_bytes());
        out[16..].copy_from_slice(&self.t.to_be_bytes());
        out
    }

    /// The first byte: config rotation and length.
    #[inline(always)]
    fn first(&self) -> u8 {
        (self.a >> 56) as u8
    }
}

/// A mask keeping the first `n` bytes of a big-endian `u64` (all of it from 8 on).
#[inline(always)]
const fn be_mask64(n: usize) -> u64 {
    if n >= 8 {
        u64::MAX
    } else if n == 0 {
        0
    } else {
        u64::MAX << (64 - 8 * n)
    }
}

/// Why a datagram to a `quic` service is not a routable QUIC packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuicError {
    /// Shorter than its header and the bytes every decryptable packet has after the DCID.
    Truncated,
    /// Fixed bit clear on a v1 long header or a short header.
    FixedBit,
    /// DCID longer than 20 bytes.
    CidTooLong,
    /// Version Negotiation or Retry: sent by servers only.
    ServerOnly,
}

/// How a service's servers lay out their connection ids (from the service's map value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CidLayout {
    /// Config rotation codepoint of the current config (`0..=6`; 7 disables server ids).
    pub rotation: u8,
    /// Length of the server id in octets (`1..=4`; 0 disables server ids).
    pub server_id_len: u8,
}

/// What routing takes from a `quic` packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuicIdentity {
    /// Hash of the whole DCID: the request key, so one connection id stays on one shard.
    pub key: u64,
    /// The server id the DCID carries for the current config, if it carries one.
    pub server_id: Option<u32>,
}

/// Parses the QUIC header of the UDP payload `off..end`.
#[inline(always)]
pub fn parse_quic<P: PacketBytes + ?Sized>(
    p: &P,
    off: usize,
    end: usize,
) -> Result<QuicHeader, QuicError> {
    if off + LONG_PREFIX > end {
        return Err(QuicError::Truncated);
    }
    let head: [u8; LONG_PREFIX] = p.load(off).ok_or(QuicError::Truncated)?;
    let first = head[0];
    let (kind, version, dcid_off) = if first & FORM_BIT != 0 {
        let version = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        // Version Negotiation leaves the fixed bit unused, so it is recognised first.
        if version == 0 {
            return Err(QuicError::ServerOnly);
        }
        let kind = if version == QUIC_V1 {
            if first & FIXED_BIT == 0 {
                return Err(QuicError::FixedBit);
            }
            match (first >> 4) & 0x3 {
                0 => PacketKind::Initial,
                1 => PacketKind::ZeroRtt,
                2 => PacketKind::Handshake,
                _ => return Err(QuicError::ServerOnly),
            }
        } else {
            PacketKind::OtherVersion
        };
        (kind, version, off + LONG_PREFIX)
    } else {
        if first & FIXED_BIT == 0 {
            return Err(QuicError::FixedBit);
        }
        (PacketKind::Short, 0, off + 1)
    };
    if dcid_off + QUIC_CID_WINDOW > end {
        return Err(QuicError::Truncated);
    }
    // The window as three words (inside the bytes checked just above).
    let a = p.u64_at(dcid_off).ok_or(QuicError::Truncated)?;
    let b = p.u64_at(dcid_off + 8).ok_or(QuicError::Truncated)?;
    let t = p.word_at(dcid_off + 16).ok_or(QuicError::Truncated)?;
    let window = CidWords {
        a,
        b,
        t: u32::from_be(t),
    };
    let dcid_len = if kind == PacketKind::Short {
        // Short headers carry no length: shardline's servers describe it in the first octet.
        (window.first() & 0x1f) as usize + 1
    } else {
        head[5] as usize
    };
    if dcid_len > QUIC_MAX_CID_LEN {
        return Err(QuicError::CidTooLong);
    }
    Ok(QuicHeader {
        kind,
        version,
        dcid: window.masked(dcid_len),
        dcid_len,
    })
}

/// [`CidWords`] cover the whole window, which is the longest id.
const _: () = assert!(QUIC_CID_WINDOW == 20 && QUIC_MAX_CID_LEN == 20);

impl QuicHeader {
    /// Hash of the DCID's bytes and length.
    #[inline(always)]
    pub fn cid_hash(&self) -> u64 {
        cid_words_hash(self.dcid, self.dcid_len)
    }

    /// The server id the DCID carries under `layout`: its rotation bits name the current config,
    /// its self-described length is its real length, and it is long enough to hold the id.
    #[inline(always)]
    pub fn server_id(&self, layout: CidLayout) -> Option<u32> {
        let first = self.dcid.first();
        let sid_len = layout.server_id_len as usize;
        if layout.rotation >= QUIC_ROTATION_UNROUTABLE
            || sid_len == 0
            || sid_len > QUIC_MAX_SERVER_ID_LEN
            || self.dcid_len < 1 + sid_len
            || first >> 5 != layout.rotation
            || (first & 0x1f) as usize + 1 != self.dcid_len
        {
            return None;
        }
        // Octets 1 ..= sid_len (at most 4): bits 55..24 of the first word, then the unused
        // low octets shifted out.
        let octets = (self.dcid.a >> 24) as u32;
        Some(octets >> (8 * (QUIC_MAX_SERVER_ID_LEN - sid_len)))
    }
}

/// Hash of a connection id (`len` bytes of `cid`, the rest ignored).
pub fn cid_hash(cid: &[u8; QUIC_MAX_CID_LEN], len: usize) -> u64 {
    cid_words_hash(CidWords::from_bytes(cid, len), len)
}

/// [`cid_hash`] of an id already in words, zero past `len`.
#[inline(always)]
fn cid_words_hash(w: CidWords, len: usize) -> u64 {
    let t = u64::from(w.t) | ((len as u64) << 32);
    mix64(t ^ mix64(w.b ^ mix64(w.a ^ CID_SEED)))
}

/// The routing identity of the QUIC packet in the UDP payload `off..end`.
#[inline(always)]
pub fn quic_identity<P: PacketBytes + ?Sized>(
    p: &P,
    off: usize,
    end: usize,
    layout: CidLayout,
) -> Result<QuicIdentity, QuicError> {
    let h = parse_quic(p, off, end)?;
    Ok(QuicIdentity {
        key: h.cid_hash(),
        server_id: h.server_id(layout),
    })
}

/// Writes a server's connection id into `out`: the first octet (rotation, length - 1), the
/// server id in `layout.server_id_len` octets, then `nonce`. Returns the id's length, or `None`
/// if the layout is unroutable, the id does not fit or `server_id` needs more octets.
pub fn encode_cid(
    layout: CidLayout,
    server_id: u32,
    nonce: &[u8],
    out: &mut [u8; QUIC_MAX_CID_LEN],
) -> Option<usize> {
    let sid_len = layout.server_id_len as usize;
    let len = 1 + sid_len + nonce.len();
    if layout.rotation >= QUIC_ROTATION_UNROUTABLE
        || sid_len == 0
        || sid_len > QUIC_MAX_SERVER_ID_LEN
        || len > QUIC_MAX_CID_LEN
        || (sid_len < 4 && server_id >> (8 * sid_len) != 0)
    {
        return None;
    }
    out[0] = (layout.rotation << 5) | (len as u8 - 1);
    let id = server_id.to_be_bytes();
    out[1..1 + sid_len].copy_from_slice(&id[4 - sid_len..]);
    out[1 + sid_len..len].copy_from_slice(nonce);
    Some(len)
}

#[cfg(test)]
#[path = "quic/tests.rs"]
mod tests;
