// SPDX-License-Identifier: GPL-2.0
//
// Katran's balancer inside the same kind of restoring wrapper as shardline's bench programs
// (`dataplane-ebpf/src/restore.rs`), so `BPF_PROG_TEST_RUN` in repeat mode hands it the
// same input frame every time. Benchmark only: never attached to an interface.
//
// `balancer.bpf.c` is Katran's, unmodified (see README.md); `PROG_SEC_NAME` puts its entry
// point, `balancer_ingress`, in `.text`, where it is a global BPF subprogram the wrappers
// below call, as shardline's wrapper calls its balancer body.

#define PROG_SEC_NAME ".text"
#include "katran/lib/bpf/balancer.bpf.c"

// The frame's linear length, kept a plain number: without the barrier clang reassociates
// `(end₂ − data₂) − (end₁ − data₁)` into arithmetic on the packet pointers themselves, which
// the verifier refuses.
__attribute__((__always_inline__)) static inline __u64 frame_len(struct xdp_md* ctx) {
  __u64 len = (__u64)(long)ctx->data_end - (__u64)(long)ctx->data;
  asm volatile("" : "+r"(len));
  return len;
}

// The Ethernet header as the body found it, saved before it runs.
struct saved_eth {
  __u32 w0, w1, w2;
  __u16 proto;
};

__attribute__((__always_inline__)) static inline int save_eth(
    struct xdp_md* ctx,
    struct saved_eth* s) {
  void* data = (void*)(long)ctx->data;
  void* data_end = (void*)(long)ctx->data_end;
  if (data + 14 > data_end) {
    return 0;
  }
  s->w0 = *(__u32*)data;
  s->w1 = *(__u32*)(data + 4);
  s->w2 = *(__u32*)(data + 8);
  s->proto = *(__u16*)(data + 12);
  return 1;
}

// Removes what the body added at the front (`grown` bytes) and writes the Ethernet header
// back: the only input bytes an encapsulation overwrites.
__attribute__((__always_inline__)) static inline void restore(
    struct xdp_md* ctx,
    __u64 before,
    struct saved_eth* s) {
  __u64 after = frame_len(ctx);
  long grown = (long)after - (long)before;
  if (grown != 0) {
    bpf_xdp_adjust_head(ctx, (int)grown);
  }
  void* data = (void*)(long)ctx->data;
  void* data_end = (void*)(long)ctx->data_end;
  if (data + 14 > data_end) {
    return;
  }
  *(__u32*)data = s->w0;
  *(__u32*)(data + 4) = s->w1;
  *(__u32*)(data + 8) = s->w2;
  *(__u16*)(data + 12) = s->proto;
}

// Runs `body(ctx)` and evaluates to its action, the frame restored afterwards (a frame too
// short for an Ethernet header is left as the body made it).
#define RESTORING(ctx, body)        \
  ({                                \
    struct saved_eth s;             \
    __u64 before = frame_len(ctx);  \
    int saved = save_eth(ctx, &s);  \
    int action = body(ctx);         \
    if (saved) {                    \
      restore(ctx, before, &s);     \
    }                               \
    action;                         \
  })

// Katran's balancer, its frame restored after every repeat.
SEC("xdp")
int katran_bench(struct xdp_md* ctx) {
  return RESTORING(ctx, balancer_ingress);
}

// The trivial `XDP_TX` forwarder (swap the MACs) as a subprogram of its own, so the wrapper
// around it costs what it costs around Katran.
__attribute__((noinline)) int katran_tx_body(struct xdp_md* ctx) {
  void* data = (void*)(long)ctx->data;
  void* data_end = (void*)(long)ctx->data_end;
  if (data + 14 > data_end) {
    return XDP_DROP;
  }
  __u32 d0 = *(__u32*)data;
  __u16 d1 = *(__u16*)(data + 4);
  *(__u32*)data = *(__u32*)(data + 6);
  *(__u16*)(data + 4) = *(__u16*)(data + 10);
  *(__u32*)(data + 6) = d0;
  *(__u16*)(data + 10) = d1;
  return XDP_TX;
}

// That forwarder inside this wrapper: its cost minus the bare forwarder's is the wrapper's.
SEC("xdp")
int katran_tx_baseline_restoring(struct xdp_md* ctx) {
  return RESTORING(ctx, katran_tx_body);
}

// Katran's balancer alone, for one run whose output frame the bench checks (the wrappers
// above hand the input back).
SEC("xdp")
int katran_plain(struct xdp_md* ctx) {
  return balancer_ingress(ctx);
}

// Like katran_bench, and then the frame's IPv4 source address moves on by one, as
// shardline's `shardline_bench_new_flow` does: every repeat is a new flow of a new client.
SEC("xdp")
int katran_bench_new_flow(struct xdp_md* ctx) {
  int action = katran_bench(ctx);
  void* data = (void*)(long)ctx->data;
  void* data_end = (void*)(long)ctx->data_end;
  if (data + 14 + 16 <= data_end) {
    __u32* src = data + 14 + 12;
    *src = bpf_htonl(bpf_ntohl(*src) + 1);
  }
  return action;
}
