//! Bounds-checked parsing of Ethernet (one optional 802.1Q tag), IPv4 (options allowed), IPv6
//! (a bounded walk of extension headers), UDP and TCP, and the shardline header.
//!
//! Written against [`PacketBytes`] so the same code runs on an XDP context in the kernel and on
//! a byte slice in userspace. Every read is a fixed-size load that fails when it would cross the
//! end of the packet; nothing here loops over packet length.

use crate::{
    consts::*,
    maps::{addr_words, v4_mapped, Addr},
};

/// Read-only access to a packet's bytes.
pub trait PacketBytes {
    /// Packet length in bytes.
    fn len(&self) -> usize;

    /// Whether the packet has no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole frame's length: [`len`](Self::len) (the bytes loads can reach) plus the
    /// fragments of an XDP multi-buffer frame, which only helpers read. Asked only when an IP
    /// header's length runs past [`len`](Self::len), so a frame held whole pays nothing for it.
    #[inline(always)]
    fn whole_len(&self) -> usize {
        self.len()
    }

    /// The `N` bytes at `off`, or `None` if they are not all inside the packet.
    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]>;

    /// The byte at `off`.
    #[inline(always)]
    fn u8_at(&self, off: usize) -> Option<u8> {
        self.load::<1>(off).map(|b| b[0])
    }

    /// The big-endian `u16` at `off`.
    #[inline(always)]
    fn u16_at(&self, off: usize) -> Option<u16> {
        self.load::<2>(off).map(u16::from_be_bytes)
    }

    /// The 16 bytes at `off` as an [`Addr`] (an IPv6 address).
    #[inline(always)]
    fn addr_at(&self, off: usize) -> Option<Addr> {
        self.load::<16>(off).map(addr_words)
    }

    /// The 4 bytes at `off` as one native-endian word (an IPv4 address in [`Addr`] form).
    #[inline(always)]
    fn word_at(&self, off: usize) -> Option<u32> {
        self.load::<4>(off).map(u32::from_ne_bytes)
    }

    /// The big-endian `u64` at `off`.
    #[inline(always)]
    fn u64_at(&self, off: usize) -> Option<u64> {
        self.load::<8>(off).map(u64::from_be_bytes)
    }
}

impl PacketBytes for [u8] {
    #[inline(always)]
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }

    #[inline(always)]
    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        let end = off.checked_add(N)?;
        let bytes = self.get(off..end)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Some(out)
    }
}

/// Most IPv6 extension headers walked before the packet is given up on.
pub const MAX_EXT_HEADERS: usize = 4;

/// The network layer of a packet, as far as routing needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L3 {
    /// Offset of the IP header (after Ethernet and VLAN tag).
    pub off: usize,
    /// IPv6 (else IPv4).
    pub v6: bool,
    /// Source address, IPv4-mapped for IPv4.
    pub src: Addr,
    /// Destination address, IPv4-mapped for IPv4.
    pub dst: Addr,
    /// Transport protocol (after IPv6 extension headers).
    pub proto: u8,
    /// Offset of the transport header.
    pub l4_off: usize,
    /// Offset one past the IP packet's last byte, from its length field (frames may be padded).
    pub end: usize,
}

/// Why the network layer could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L3Error {
    /// Not IPv4 or IPv6 (by EtherType), or shorter than an Ethernet header.
    NotIp,
    /// Malformed or truncated header; the destination address if it could be read.
    Malformed(Option<Addr>),
    /// A fragment to this destination.
    Fragment(Addr),
    /// More IPv6 extension headers than [`MAX_EXT_HEADERS`] to this destination.
    TooManyExtHeaders(Addr),
}

/// Offset of the IP header and the EtherType, after at most one 802.1Q tag.
#[inline(always)]
pub fn parse_l2<P: PacketBytes + ?Sized>(p: &P) -> Option<(usize, u16)> {
    let eth: [u8; ETH_HLEN] = p.load(0)?;
    let proto = u16::from_be_bytes([eth[12], eth[13]]);
    if proto == ETH_P_8021Q {
        let tag: [u8; VLAN_HLEN] = p.load(ETH_HLEN)?;
        return Some((ETH_HLEN + VLAN_HLEN, u16::from_be_bytes([tag[2], tag[3]])));
    }
    Some((ETH_HLEN, proto))
}

/// Parses the IP header at the offset [`parse_l2`] found.
#[inline(always)]
pub fn parse_l3<P: PacketBytes + ?Sized>(p: &P) -> Result<L3, L3Error> {
    let (off, ethertype) = parse_l2(p).ok_or(L3Error::NotIp)?;
    match ethertype {
        ETH_P_IPV4 => parse_ipv4(p, off),
        ETH_P_IPV6 => parse_ipv6(p, off),
        _ => Err(L3Error::NotIp),
    }
}

/// Whether an IP packet ending at `end` runs past the frame. The linear part is compared
/// first: only a packet longer than it (a multi-buffer frame, or a truncated one) asks for the
/// whole frame's length, so in the kernel only those pay the helper call.
#[inline(always)]
fn beyond_frame<P: PacketBytes + ?Sized>(p: &P, end: usize) -> bool {
    end > p.len() && end > p.whole_len()
}

#[inline(always)]
fn parse_ipv4<P: PacketBytes + ?Sized>(p: &P, off: usize) -> Result<L3, L3Error> {
    // The destination ends the fixed header: checked first, it bounds the other reads.
    let dst = v4_mapped_word(p.word_at(off + 16).ok_or(L3Error::Malformed(None))?);
    let src = v4_mapped_word(p.word_at(off + 12).ok_or(L3Error::Malformed(None))?);
    let vihl = p.u8_at(off).ok_or(L3Error::Malformed(None))?;
    let ihl = ((vihl & 0x0f) as usize) * 4;
    let total = p.u16_at(off + 2).ok_or(L3Error::Malformed(None))? as usize;
    if vihl >> 4 != 4 || ihl < IPV4_HLEN || total < ihl || beyond_frame(p, off + total) {
        return Err(L3Error::Malformed(Some(dst)));
    }
    // More-fragments flag or a non-zero offset: no reliable ports in this packet.
    if p.u16_at(off + 6).ok_or(L3Error::Malformed(None))? & 0x3fff != 0 {
        return Err(L3Error::Fragment(dst));
    }
    let proto = p.u8_at(off + 9).ok_or(L3Error::Malformed(None))?;
    Ok(L3 {
        off,
        v6: false,
        src,
        dst,
        proto,
        l4_off: off + ihl,
        end: off + total,
    })
}

#[inline(always)]
fn parse_ipv6<P: PacketBytes + ?Sized>(p: &P, off: usize) -> Result<L3, L3Error> {
    // The fixed header ends with the destination: one bounds check covers it all.
    let dst = p
        .addr_at(off + IPV6_HLEN - 16)
        .ok_or(L3Error::Malformed(None))?;
    let src = p.addr_at(off + 8).ok_or(L3Error::Malformed(None))?;
    let first = p.u64_at(off).ok_or(L3Error::Malformed(None))?;
    let payload = ((first >> 16) & 0xffff) as usize;
    let end = off + IPV6_HLEN + payload;
    if first >> 60 != 6 || beyond_frame(p, end) {
        return Err(L3Error::Malformed(Some(dst)));
    }
    let mut proto = ((first >> 8) & 0xff) as u8;
    let mut l4_off = off + IPV6_HLEN;
    let mut walked = 0;
    while walked < MAX_EXT_HEADERS {
        match proto {
            // Hop-by-hop, routing, destination options: length in 8-octet units, first excluded.
            0 | 43 | 60 => {
                let ext = p.u16_at(l4_off).ok_or(L3Error::Malformed(Some(dst)))?;
                proto = (ext >> 8) as u8;
                l4_off += ((ext & 0xff) as usize + 1) * 8;
            }
            // Authentication header: length in 4-octet units, first two excluded.
            51 => {
                let ext = p.u16_at(l4_off).ok_or(L3Error::Malformed(Some(dst)))?;
                proto = (ext >> 8) as u8;
                l4_off += ((ext & 0xff) as usize + 2) * 4;
            }
            44 => return Err(L3Error::Fragment(dst)),
            _ => break,
        }
        walked += 1;
    }
    if matches!(proto, 0 | 43 | 60 | 51 | 44) {
        return Err(L3Error::TooManyExtHeaders(dst));
    }
    if l4_off > end {
        return Err(L3Error::Malformed(Some(dst)));
    }
    Ok(L3 {
        off,
        v6: true,
        src,
        dst,
        proto,
        l4_off,
        end,
    })
}

/// The transport layer of a packet, as far as routing needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L4 {
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Offset of the transport payload.
    pub payload_off: usize,
    /// Offset one past the payload: the UDP length bounds a datagram, not the IP length (bytes
    /// after it are not part of the datagram); for TCP, the IP packet's end.
    pub payload_end: usize,
}

/// The transport header, if it is whole and consistent with the IP length.
#[inline(always)]
pub fn parse_l4<P: PacketBytes + ?Sized>(p: &P, l3: &L3) -> Option<L4> {
    let sport = p.u16_at(l3.l4_off)?;
    let dport = p.u16_at(l3.l4_off + 2)?;
    let (header_len, payload_end) = match l3.proto {
        IPPROTO_UDP => {
            let len = p.u16_at(l3.l4_off + 4)? as usize;
            if len < UDP_HLEN || l3.l4_off + len > l3.end {
                return None;
            }
            (UDP_HLEN, l3.l4_off + len)
        }
        IPPROTO_TCP => {
            let doff = ((p.u8_at(l3.l4_off + 12)? >> 4) as usize) * 4;
            if doff < TCP_HLEN || l3.l4_off + doff > l3.end || p.u8_at(l3.l4_off + 19).is_none() {
                return None;
            }
            (doff, l3.end)
        }
        _ => return None,
    };
    Some(L4 {
        sport,
        dport,
        payload_off: l3.l4_off + header_len,
        payload_end,
    })
}

/// The shardline header at the start of a header-mode payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardlineHeader {
    /// Header flags (reserved).
    pub flags: u8,
    /// The session the request belongs to.
    pub session: u64,
    /// The request key partitioned across the session's shards.
    pub key: u64,
}

/// Why a header-mode payload was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Payload shorter than [`HEADER_LEN`].
    Short,
    /// First two bytes are not [`HEADER_MAGIC`].
    BadMagic,
    /// Version is not [`HEADER_VERSION`].
    BadVersion,
}

/// Parses the shardline header at `off`, which must lie before `end` (the UDP payload's end).
#[inline(always)]
pub fn parse_header<P: PacketBytes + ?Sized>(
    p: &P,
    off: usize,
    end: usize,
) -> Result<ShardlineHeader, HeaderError> {
    if off + HEADER_LEN > end {
        return Err(HeaderError::Short);
    }
    // The key ends the header: checking it first bounds every other read.
    let key = p.u64_at(off + 12).ok_or(HeaderError::Short)?;
    let session = p.u64_at(off + 4).ok_or(HeaderError::Short)?;
    if p.u16_at(off).ok_or(HeaderError::Short)? != HEADER_MAGIC {
        return Err(HeaderError::BadMagic);
    }
    if p.u8_at(off + 2).ok_or(HeaderError::Short)? != HEADER_VERSION {
        return Err(HeaderError::BadVersion);
    }
    let flags = p.u8_at(off + 3).ok_or(HeaderError::Short)?;
    Ok(ShardlineHeader {
        flags,
        session,
        key,
    })
}

/// Encodes a shardline header (used by clients, the lab and tests).
pub fn encode_header(session: u64, key: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..2].copy_from_slice(&HEADER_MAGIC.to_be_bytes());
    h[2] = HEADER_VERSION;
    h[4..12].copy_from_slice(&session.to_be_bytes());
    h[12..20].copy_from_slice(&key.to_be_bytes());
    h
}

/// The IPv4-mapped [`Addr`] of an IPv4 address given as one native-endian word.
#[inline(always)]
pub(crate) fn v4_mapped_word(word: u32) -> Addr {
    let mut a = v4_mapped([0; 4]);
    a[3] = word;
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ethernet + IPv4 + UDP to port 7000 carrying `payload`, with the UDP length `udp_len`.
    fn udp4(payload: &[u8], udp_len: u16) -> [u8; 128] {
        let mut f = [0u8; 128];
        f[12..14].copy_from_slice(&ETH_P_IPV4.to_be_bytes());
        f[14] = 0x45;
        let total = (IPV4_HLEN + UDP_HLEN + payload.len()) as u16;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f[23] = IPPROTO_UDP;
        f[36..38].copy_from_slice(&7000u16.to_be_bytes());
        f[38..40].copy_from_slice(&udp_len.to_be_bytes());
        f[42..42 + payload.len()].copy_from_slice(payload);
        f
    }

    #[test]
    fn shardline_header_is_bounded_by_the_udp_length() {
        let header = encode_header(42, 7);
        let whole = udp4(&header, (UDP_HLEN + HEADER_LEN) as u16);
        let l3 = parse_l3(&whole[..]).unwrap();
        let l4 = parse_l4(&whole[..], &l3).unwrap();
        assert_eq!((l4.dport, l4.payload_off, l4.payload_end), (7000, 42, 62));
        assert_eq!(
            parse_header(&whole[..], l4.payload_off, l4.payload_end)
                .unwrap()
                .session,
            42
        );

        // The IP packet still holds the header, but the datagram ends before it.
        let empty = udp4(&header, UDP_HLEN as u16);
        let l3 = parse_l3(&empty[..]).unwrap();
        let l4 = parse_l4(&empty[..], &l3).unwrap();
        assert_eq!(l4.payload_end, l4.payload_off);
        assert_eq!(
            parse_header(&empty[..], l4.payload_off, l4.payload_end),
            Err(HeaderError::Short)
        );
    }
}
