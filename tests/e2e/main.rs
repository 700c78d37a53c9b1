//! shardline's end-to-end tests, one module per feature, linked once. Every test that needs
//! root, bpffs or network namespaces fails loudly without them (see [`support::require_root`]);
//! none is skipped.
//!
//! - [`dataplane`]: the XDP program under `BPF_PROG_TEST_RUN`: fixtures and kernel/replay
//!   agreement on random packets.
//! - [`hostile`]: malformed and adversarial packets (proptest).
//! - [`flow_table`]: flow-mode stickiness across table changes.
//! - [`maps_full`]: full maps are counted, never errors.
//! - [`session_counters`]: per-session counters in slots.
//! - [`quic`]: QUIC-LB connection-id routing, fixtures and a quinn connection through the lab.
//! - [`trace`]: `shardline trace` on captures.
//! - [`netns`]: real traffic through the attached program in network namespaces.
//! - [`path_mtu`]: a full-size datagram over a full-size link learns the usable MTU.
//! - [`four_in_six`]: IPv4 clients answered by backends with only IPv6 (IPv4-in-IPv6, decap).
//! - [`jumbo`]: datagrams in 9000-octet frames through a jumbo lab.
//! - [`reshard`]: live re-shards under traffic, zero misrouted.
//! - [`package`]: the Debian package, unpacked with `dpkg -x`; its binary runs.
//! - [`pools`]: per-service pools and rings in the kernel; one pool's change moves no other.
//! - [`probes`]: service probes on the data path in the lab.
//! - [`predict`]: the predictive loop in the lab.
//! - [`lab_run`]: the lab's default run loses no request without a reported reason.
//! - [`tick`]: the control tick's allocation-free path.
//! - [`forecast_eval`]: `shardline forecast-eval` on real series.
//! - [`replay`]: `shardline replay`, the loop against reactive, static and oracle controllers.
//! - [`api`]: the HTTP API and the operator CLI against a lab daemon.
//! - [`cluster`]: the Raft cluster of daemons in namespaces.
//! - [`cluster_batch`]: group commit: concurrent writers, failing writes, a leader kill.
//! - [`cluster_faults`]: faults under traffic in a 3-node XDP cluster behind an ECMP route.
//! - [`cluster_rates`]: the leader forecasts a session's load summed over the nodes it hits.
//! - [`cluster_learners`]: 3 voters and 20 learners in one process on loopback.
//! - [`two_arm`]: backends behind the balancer's second interface, found through the FIB and
//!   reached by `XDP_REDIRECT`.

mod api;
mod cluster;
mod cluster_batch;
mod cluster_faults;
mod cluster_learners;
mod cluster_rates;
mod dataplane;
mod flow_table;
mod forecast_eval;
mod four_in_six;
mod handoff;
mod hostile;
mod jumbo;
mod lab_run;
mod maps_full;
mod netns;
mod package;
mod path_mtu;
mod pools;
mod predict;
mod probes;
mod quic;
mod replay;
mod reshard;
mod session_counters;
mod session_filter;
mod support;
mod tick;
mod trace;
mod two_arm;
