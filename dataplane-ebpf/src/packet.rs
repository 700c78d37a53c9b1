//! The XDP frame as `PacketBytes`: every load and store checks the frame's end first, in the
//! pointer-comparison form the verifier understands.

use aya_ebpf::programs::XdpContext;
use shardline_common::{maps::Addr, packet::PacketBytes};

/// A borrowed XDP frame.
pub struct XdpPacket<'a>(pub &'a XdpContext);

impl XdpPacket<'_> {
    /// The frame's end, read afresh for every access. A volatile read stops LLVM from proving a
    /// later bounds check redundant and dropping it: the verifier tracks ranges per pointer, so
    /// each access must be checked on the very pointer it dereferences.
    #[inline(always)]
    fn end(&self) -> usize {
        // SAFETY: `ctx` points at the kernel's xdp_md for the whole program run.
        unsafe { core::ptr::read_volatile(&(*self.0.ctx).data_end) as usize }
    }
}

impl PacketBytes for XdpPacket<'_> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.end() - self.0.data()
    }

    #[inline(always)]
    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        let start = self.0.data();
        if start + off + N > self.end() {
            return None;
        }
        // SAFETY: the N bytes at start + off lie inside the frame, checked just above.
        Some(unsafe { core::ptr::read_unaligned((start + off) as *const [u8; N]) })
    }

    #[inline(always)]
    fn u8_at(&self, off: usize) -> Option<u8> {
        let start = self.0.data();
        if start + off + 1 > self.end() {
            return None;
        }
        // SAFETY: in bounds, checked just above.
        Some(unsafe { *((start + off) as *const u8) })
    }

    #[inline(always)]
    fn u16_at(&self, off: usize) -> Option<u16> {
        let start = self.0.data();
        if start + off + 2 > self.end() {
            return None;
        }
        // SAFETY: in bounds, checked just above; misaligned access as for `addr_at`.
        Some(u16::from_be(unsafe {
            ((start + off) as *const u16).read()
        }))
    }

    #[inline(always)]
    fn addr_at(&self, off: usize) -> Option<Addr> {
        let start = self.0.data();
        if start + off + 16 > self.end() {
            return None;
        }
        let p = (start + off) as *const u32;
        // SAFETY: the 16 bytes lie inside the frame, checked just above. Word loads, not
        // `read_unaligned`: the eBPF backend would split those into byte loads (and spill the
        // bytes). The packet may be misaligned for u32; the kernel allows misaligned packet
        // access on every architecture with efficient unaligned access (x86_64, arm64).
        Some(unsafe { [p.read(), p.add(1).read(), p.add(2).read(), p.add(3).read()] })
    }

    #[inline(always)]
    fn word_at(&self, off: usize) -> Option<u32> {
        let start = self.0.data();
        if start + off + 4 > self.end() {
            return None;
        }
        // SAFETY: in bounds, checked just above; misaligned access as for `addr_at`.
        Some(unsafe { ((start + off) as *const u32).read() })
    }

    #[inline(always)]
    fn u64_at(&self, off: usize) -> Option<u64> {
        let start = self.0.data();
        if start + off + 8 > self.end() {
            return None;
        }
        // SAFETY: in bounds, checked just above; misaligned access as for `addr_at`.
        Some(u64::from_be(unsafe {
            ((start + off) as *const u64).read()
        }))
    }
}

impl XdpPacket<'_> {
    /// Writes `bytes` at `off`, or returns `None` if they would not fit in the frame.
    #[inline(always)]
    pub fn store<const N: usize>(&self, off: usize, bytes: &[u8; N]) -> Option<()> {
        let start = self.0.data();
        if start + off + N > self.end() {
            return None;
        }
        // SAFETY: the N bytes at start + off lie inside the frame, checked just above.
        unsafe { core::ptr::write_unaligned((start + off) as *mut [u8; N], *bytes) };
        Some(())
    }
}
