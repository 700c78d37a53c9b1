//! The internet checksum (RFC 1071) of an IPv4 header, as the kernel and the tests compute it,
//! and its incremental update (RFC 1624) for a rewrite that changes a few words in place.

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

/// The internet checksum `check` after one 16-bit word it covers changed from `old` to `new`:
/// RFC 1624 eqn. 3, `HC' = ~(~HC + ~m + m')`, which keeps the sum of the covered words (checksum
/// included) exactly as it was, so a valid checksum stays valid and an invalid one stays
/// invalid. The three values may be in either byte order, as long as it is the same for all
/// three and the result is stored in it (RFC 1071, section 2): the eBPF program passes words
/// as they lie in the packet.
#[inline(always)]
pub const fn checksum_replace16(check: u16, old: u16, new: u16) -> u16 {
    let mut sum = (!check) as u32 + (!old) as u32 + new as u32;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// The folded ones' complement sum (RFC 1071) of `bytes` as big-endian 16-bit words, an odd
/// last byte padded with zero. Over a header with a valid checksum it is `0xffff`. Userspace
/// only (the eBPF program sums fixed-size headers with [`ipv4_header_checksum_words`]).
pub fn ones_complement_sum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in bytes.chunks(2) {
        sum += u32::from(u16::from_be_bytes([
            pair[0],
            pair.get(1).copied().unwrap_or(0),
        ]));
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The internet checksum (RFC 1071) of `bytes`: the complement of [`ones_complement_sum`].
/// Computed over data whose checksum field is zero, it is the value to write there; over data
/// with a valid checksum in place, it is zero.
pub fn internet_checksum(bytes: &[u8]) -> u16 {
    !ones_complement_sum(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The folded ones' complement sum of big-endian words (checksum field included).
    fn folded_sum(words: &[u16]) -> u16 {
        let mut sum: u32 = words.iter().map(|w| u32::from(*w)).sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    #[test]
    fn an_incremental_update_matches_a_full_recompute_and_keeps_the_sum() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..20_000 {
            // Words 1.. are data; word 0 is the checksum.
            let mut words: Vec<u16> = (0..12).map(|_| next() as u16).collect();
            if round % 5 == 0 {
                words[3] = 0xffff;
            }
            words[0] = !folded_sum(&words[1..]);
            assert_eq!(folded_sum(&words), 0xffff, "valid to start with");
            let at = 1 + (next() as usize % 11);
            let new = match round % 4 {
                0 => 0,
                1 => 0xffff,
                _ => next() as u16,
            };
            let updated = checksum_replace16(words[0], words[at], new);
            words[at] = new;
            let full = !folded_sum(&words[1..]);
            // Ones' complement has two zeros: both checksums verify.
            assert!(
                updated == full || (updated, full) == (0xffff, 0) || (updated, full) == (0, 0xffff),
                "round {round}: incremental {updated:#06x}, full {full:#06x}"
            );
            words[0] = updated;
            assert_eq!(folded_sum(&words), 0xffff, "round {round}: still valid");
            // Byte order independence: the same update on byte-swapped words.
            let swapped = checksum_replace16(
                full.swap_bytes(),
                0x1234u16.swap_bytes(),
                0xfedcu16.swap_bytes(),
            );
            assert_eq!(
                swapped.swap_bytes(),
                checksum_replace16(full, 0x1234, 0xfedc)
            );
        }
    }

    #[test]
    fn an_invalid_checksum_stays_as_invalid() {
        let words = [0x1111u16, 0x0800, 0x4242, 0x0001];
        let before = folded_sum(&words);
        let updated = checksum_replace16(words[0], words[1], 0x0000);
        assert_eq!(folded_sum(&[updated, 0x0000, 0x4242, 0x0001]), before);
    }

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

    #[test]
    fn the_slice_form_matches_the_header_form_and_verifies_to_zero() {
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(internet_checksum(&h), 0xb861);
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(internet_checksum(&h), 0);
        assert_eq!(ones_complement_sum(&h), 0xffff);
        // An odd length pads the last byte with zero.
        assert_eq!(ones_complement_sum(&[0x12, 0x34, 0x56]), 0x6834);
    }
}
