//! The internet checksum (RFC 1071) of an IPv4 header, as the kernel and the tests compute it.

/// Checksum of a 20-byte IPv4 header whose checksum field is zero (or any value: the result
/// verifies to zero when written back). Fixed length, so the eBPF verifier sees no loop bound.
#[inline(always)]
pub fn ipv4_header_checksum(header: &[u8; 20]) -> u16 {
    let mut sum: u32 = 0;
    let mut i = 0;
    while i < 20 {
        if i != 10 {
            sum += u32::from(u16::from_be_bytes([header[i], header[i + 1]]));
        }
        i += 2;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// [`ipv4_header_checksum`] of a header given as its five 32-bit words in memory order (each
/// word read with native endianness), returned in memory order too: store it with native
/// endianness. The internet checksum is byte-order independent (RFC 1071, section 2), so the
/// eBPF program sums words as they lie in the packet instead of assembling big-endian halves.
/// The checksum field (the high half of word 2 in memory order) is skipped.
#[inline(always)]
pub fn ipv4_header_checksum_words(words: [u32; 5]) -> u16 {
    let field = u32::from_ne_bytes([0, 0, 0xff, 0xff]);
    let w2 = words[2] & !field;
    let mut sum: u64 = 0;
    let mut i = 0;
    while i < 5 {
        let w = if i == 2 { w2 } else { words[i] };
        sum += u64::from(w & 0xffff) + u64::from(w >> 16);
        i += 1;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_form_matches_the_byte_form() {
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..2000 {
            let words: [u32; 5] = core::array::from_fn(|i| {
                u32::from_ne_bytes([h[4 * i], h[4 * i + 1], h[4 * i + 2], h[4 * i + 3]])
            });
            let want = ipv4_header_checksum(&h);
            assert_eq!(
                ipv4_header_checksum_words(words).to_ne_bytes(),
                want.to_be_bytes(),
                "round {round}: {h:02x?}"
            );
            // Next header: pseudo-random bytes, including all-ones words (carry folding).
            for b in h.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = if round % 7 == 0 { 0xff } else { seed as u8 };
            }
        }
    }

    #[test]
    fn known_header() {
        // Example from RFC 1071 discussions: 45 00 00 73 00 00 40 00 40 11 [b8 61] c0 a8 00 01 c0 a8 00 c7
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_header_checksum(&h), 0xb861);
    }
}
