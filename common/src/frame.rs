//! What an XDP program sees of a frame: the linear part its loads reach, and for a multi-buffer
//! frame (`xdp.frags`) the fragments after it, which only count towards the whole length. The
//! replay reads a frame through [`XdpView`], so it decides on exactly what the kernel decides
//! on: headers from the linear part, lengths from the whole frame.

use crate::packet::PacketBytes;

/// `PAGE_SIZE` on the architectures the dataplane runs on (x86_64, arm64 with 4 KiB pages).
pub const PAGE_SIZE: usize = 4096;

/// `XDP_PACKET_HEADROOM`: the room the kernel keeps before a frame's data.
pub const XDP_HEADROOM: usize = 256;

/// `SKB_DATA_ALIGN(sizeof(struct skb_shared_info))` on x86_64 (read from the kernel's BTF):
/// the fragment list kept at the end of a frame's first page.
pub const SHARED_INFO_LEN: usize = 320;

/// The longest linear part of a frame under `BPF_PROG_TEST_RUN`: one page less the headroom
/// and the shared info (the kernel's `max_data_sz`). The rest of a longer frame goes into page
/// fragments, which a program loaded with `BPF_F_XDP_HAS_FRAGS` counts with
/// `bpf_xdp_get_buff_len`. veth's multi-buffer receive path lays a frame out the same way.
pub const LINEAR_MAX: usize = PAGE_SIZE - XDP_HEADROOM - SHARED_INFO_LEN;

/// A frame as an XDP program sees it: loads reach the first `linear` bytes, the whole length
/// counts every byte.
#[derive(Clone, Copy, Debug)]
pub struct XdpView<'a> {
    bytes: &'a [u8],
    linear: usize,
}

impl<'a> XdpView<'a> {
    /// `bytes` with a linear part of at most `linear_max` bytes.
    pub fn new(bytes: &'a [u8], linear_max: usize) -> Self {
        let linear = if bytes.len() < linear_max {
            bytes.len()
        } else {
            linear_max
        };
        Self { bytes, linear }
    }

    /// `bytes` as `BPF_PROG_TEST_RUN` hands them to a program ([`LINEAR_MAX`]).
    pub fn test_run(bytes: &'a [u8]) -> Self {
        Self::new(bytes, LINEAR_MAX)
    }

    /// Whether the frame has fragments after its linear part.
    pub fn has_frags(&self) -> bool {
        self.linear < self.bytes.len()
    }

    /// The bytes loads can reach.
    pub fn linear(&self) -> &'a [u8] {
        &self.bytes[..self.linear]
    }
}

impl PacketBytes for XdpView<'_> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.linear
    }

    #[inline(always)]
    fn whole_len(&self) -> usize {
        self.bytes.len()
    }

    #[inline(always)]
    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        self.linear().load(off)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        consts::{ETH_P_IPV4, IPPROTO_UDP},
        packet::{parse_l3, parse_l4, L3Error},
    };

    /// An untagged IPv4 UDP frame of `len` bytes whose headers claim all of it.
    fn udp4(len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len];
        f[12..14].copy_from_slice(&ETH_P_IPV4.to_be_bytes());
        f[14] = 0x45;
        f[16..18].copy_from_slice(&((len - 14) as u16).to_be_bytes());
        f[23] = IPPROTO_UDP;
        f[38..40].copy_from_slice(&((len - 34) as u16).to_be_bytes());
        f
    }

    #[test]
    fn lengths_come_from_the_whole_frame_and_headers_from_the_linear_part() {
        let f = udp4(9014);
        let view = XdpView::test_run(&f);
        assert!(view.has_frags());
        assert_eq!((view.len(), view.whole_len()), (LINEAR_MAX, 9014));
        let l3 = parse_l3(&view).expect("a jumbo frame is whole");
        assert_eq!(l3.end, 9014);
        assert_eq!(parse_l4(&view, &l3).unwrap().payload_end, 9014);
        assert!(view.load::<1>(LINEAR_MAX).is_none(), "past the linear part");

        // Truncated: the IP length claims more than the whole frame.
        let cut = XdpView::test_run(&f[..9000]);
        assert!(matches!(parse_l3(&cut), Err(L3Error::Malformed(Some(_)))));

        // A frame that fits a page has no fragments.
        let small = udp4(1514);
        assert!(!XdpView::test_run(&small).has_frags());
    }
}
