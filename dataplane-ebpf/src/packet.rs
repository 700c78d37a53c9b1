//! The XDP frame as `PacketBytes`: every load and store checks the frame's end first, in the
//! pointer-comparison form the verifier understands.
//!
//! The programs are multi-buffer aware (`xdp.frags`): a frame larger than a page (a jumbo frame)
//! arrives as a linear part, which loads reach, and page fragments after it. Headers are read
//! from the linear part; lengths come from the whole frame (`whole_len`), asked of the kernel
//! only when an IP length runs past the linear part, so ordinary frames pay no helper call.

use aya_ebpf::{helpers::bpf_xdp_get_buff_len, programs::XdpContext};
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

    /// The linear part plus the fragments: one helper call, made only for a frame whose IP
    /// length runs past its linear part (see `shardline_common::packet`'s `beyond_frame`).
    #[inline(always)]
    fn whole_len(&self) -> usize {
        // SAFETY: a plain helper call on the program's own context.
        unsafe { bpf_xdp_get_buff_len(self.0.ctx) as usize }
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

/// The bench programs' view of the frame: [`XdpPacket`] without the fragments, its whole length
/// its linear length. Their frames are a page or less, where the two are the same; without the
/// branch to the helper their verification stays within the verifier's million instructions.
#[allow(dead_code)] // the auxiliary object routes nothing
pub struct LinearPacket<'a>(pub XdpPacket<'a>);

impl PacketBytes for LinearPacket<'_> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.0.len()
    }

    #[inline(always)]
    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        self.0.load(off)
    }

    #[inline(always)]
    fn u8_at(&self, off: usize) -> Option<u8> {
        self.0.u8_at(off)
    }

    #[inline(always)]
    fn u16_at(&self, off: usize) -> Option<u16> {
        self.0.u16_at(off)
    }

    #[inline(always)]
    fn addr_at(&self, off: usize) -> Option<Addr> {
        self.0.addr_at(off)
    }

    #[inline(always)]
    fn word_at(&self, off: usize) -> Option<u32> {
        self.0.word_at(off)
    }

    #[inline(always)]
    fn u64_at(&self, off: usize) -> Option<u64> {
        self.0.u64_at(off)
    }
}

impl XdpPacket<'_> {
    /// The address of the `len` bytes at `off`, after one bounds check that covers all of them,
    /// so a header is read or written word by word instead of byte by byte (the eBPF backend
    /// splits `[u8; N]` copies into single-byte loads and stores). `len` must be a constant once
    /// inlined; accesses through the span must stay inside those bytes (the verifier checks
    /// every one against this comparison).
    #[inline(always)]
    pub fn span(&self, off: usize, len: usize) -> Option<Span> {
        let start = self.0.data();
        if start + off + len > self.end() {
            return None;
        }
        Some(Span(start + off))
    }
}

/// Bytes of the frame already bounds-checked by [`XdpPacket::span`]. Word accesses may be
/// misaligned: the kernel allows misaligned packet access on every architecture with efficient
/// unaligned access (x86_64, arm64), and the eBPF backend would split `read_unaligned` into
/// byte loads.
#[derive(Clone, Copy)]
pub struct Span(usize);

impl Span {
    /// The address of the byte at `at`, for a helper that reads packet memory (its length must
    /// stay inside the span's checked length).
    #[allow(dead_code)] // the auxiliary object has no too-big answer
    #[inline(always)]
    pub fn addr(self, at: usize) -> usize {
        self.0 + at
    }

    /// The native-endian `u64` at `at`.
    ///
    /// # Safety
    /// `at + 8` must not exceed the span's checked length.
    #[allow(dead_code)] // only the bench programs' restoring wrapper reads words of 8
    #[inline(always)]
    pub unsafe fn u64(self, at: usize) -> u64 {
        unsafe { ((self.0 + at) as *const u64).read() }
    }

    /// Writes the native-endian `u64` `v` at `at`.
    ///
    /// # Safety
    /// `at + 8` must not exceed the span's checked length.
    #[allow(dead_code)] // as `u64`
    #[inline(always)]
    pub unsafe fn set_u64(self, at: usize, v: u64) {
        unsafe { ((self.0 + at) as *mut u64).write(v) }
    }

    /// The native-endian `u32` at `at`.
    ///
    /// # Safety
    /// `at + 4` must not exceed the span's checked length.
    #[inline(always)]
    pub unsafe fn u32(self, at: usize) -> u32 {
        unsafe { ((self.0 + at) as *const u32).read() }
    }

    /// The native-endian `u16` at `at`.
    ///
    /// # Safety
    /// `at + 2` must not exceed the span's checked length.
    #[inline(always)]
    pub unsafe fn u16(self, at: usize) -> u16 {
        unsafe { ((self.0 + at) as *const u16).read() }
    }

    /// Writes the native-endian `u32` `v` at `at`.
    ///
    /// # Safety
    /// `at + 4` must not exceed the span's checked length.
    #[inline(always)]
    pub unsafe fn set_u32(self, at: usize, v: u32) {
        unsafe { ((self.0 + at) as *mut u32).write(v) }
    }

    /// Writes the native-endian `u16` `v` at `at`.
    ///
    /// # Safety
    /// `at + 2` must not exceed the span's checked length.
    #[inline(always)]
    pub unsafe fn set_u16(self, at: usize, v: u16) {
        unsafe { ((self.0 + at) as *mut u16).write(v) }
    }
}
