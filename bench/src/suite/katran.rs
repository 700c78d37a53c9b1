//! Katran's balancer measured beside shardline's in the same run (issue 19: "faster than
//! Katran per packet in the same run").
//!
//! `build.rs` compiles Katran's `balancer.bpf.c` (vendored unmodified in `bench/katran/`, at
//! the commit its README names) inside a restoring wrapper of the same shape as shardline's
//! (`bench/katran/katran_bench.c`), so both run under `BPF_PROG_TEST_RUN` in repeat mode the
//! same way, and each wrapper's cost is measured on the `XDP_TX` forwarder inside it and
//! subtracted. [`load`] fills Katran's maps as its userspace would: three VIPs on shardline's
//! bench VIP address (UDP with `F_LRU_BYPASS`, plain UDP, TCP), three IPv4 reals, each VIP's
//! Maglev ring, the next hop's MAC, and one connection-table LRU per CPU in `lru_mapping`.
//!
//! The paths, as the issue compares them:
//! - `katran_udp_ring_v4`: the LRU bypassed, a ring lookup every packet (beside
//!   `header_hit_v4`);
//! - `katran_lru_hit_v4`: a UDP flow found in the per-CPU LRU (beside `flow_hit_v4`);
//! - `katran_tcp_syn_v4`: a TCP SYN, which skips the LRU lookup, takes the ring and writes
//!   the LRU (one 5-tuple repeated, so no eviction; beside `flow_miss_v4`, as the issue pairs
//!   them);
//! - `katran_udp_new_flow_v4`: a UDP flow of a new client every repeat (the source address
//!   moves on by one, as in `flow_miss_v4`): an LRU miss, the ring, and an LRU insert under
//!   Katran's new-connection rate limit (`MAX_CONN_RATE`, 125,000 a second per CPU, the same
//!   as shardline's default), evicting once the table is full (beside `flow_miss_v4`: the
//!   same work).
//!
//! Every run is checked through Katran's own counters (`stats`): every repeat sent with
//! `XDP_TX`, and the LRU missed on every repeat or on none, as the path claims.

use std::path::PathBuf;

use aya::{
    maps::{Array, ArrayOfMaps, HashMap, Map, MapData, PerCpuArray},
    programs::{TestRun, TestRunOptions},
    Ebpf, EbpfLoader, Pod,
};
use aya_obj::generated::bpf_map_type;
use shardline::loader::xdp_program;

use super::{map_err, program_err, BenchError};

/// Katran's balancer inside the restoring wrapper.
pub const BENCH: &str = "katran_bench";
/// The same, and then the frame's source address moves on by one: a new flow every repeat.
pub const NEW_FLOW: &str = "katran_bench_new_flow";
/// The `XDP_TX` forwarder inside Katran's wrapper: its cost minus the bare forwarder's is the
/// wrapper's.
pub const TX_RESTORING: &str = "katran_tx_baseline_restoring";
const PLAIN: &str = "katran_plain";

/// Katran's compile-time sizes (`balancer_consts.h`).
const MAX_VIPS: u32 = 512;
const RING_SIZE: u32 = 65_537;
const XDP_TX_CNTR: u32 = MAX_VIPS + 17;
const LRU_CNTRS: u32 = MAX_VIPS;
const LRU_MISS_CNTR: u32 = MAX_VIPS + 1;
const F_LRU_BYPASS: u32 = 1 << 1;

/// Entries of each CPU's connection table: the size of shardline's `FLOWS` (`MAX_FLOWS`).
pub const LRU_ENTRIES: u32 = 262_144;

/// The VIP address (shardline's bench VIP) and the three services on it.
pub const VIP4: [u8; 4] = [10, 100, 0, 1];
/// UDP, `F_LRU_BYPASS`: ring lookup on every packet (VIP number 0).
pub const PORT_RING: u16 = 9001;
/// UDP through the connection table (VIP number 1).
pub const PORT_LRU: u16 = 9002;
/// TCP through the connection table (VIP number 2).
pub const PORT_TCP: u16 = 9003;
/// The reals' IPv4 addresses (indices 1 to 3; Katran keeps index 0 unused).
pub const REALS: [[u8; 4]; 3] = [[10, 0, 0, 11], [10, 0, 0, 12], [10, 0, 0, 13]];
/// The next hop's MAC (`ctl_array[0]`).
pub const NEXT_HOP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x03];

/// `struct vip_definition`.
#[repr(C)]
#[derive(Clone, Copy)]
struct VipDefinition {
    addr: [u32; 4],
    port: u16,
    proto: u8,
    _pad: u8,
}
// SAFETY: plain integers, no padding bytes of their own (the explicit `_pad` is zeroed).
unsafe impl Pod for VipDefinition {}

/// `struct vip_meta`.
#[repr(C)]
#[derive(Clone, Copy)]
struct VipMeta {
    flags: u32,
    vip_num: u32,
}
// SAFETY: plain integers, no padding.
unsafe impl Pod for VipMeta {}

/// `struct real_definition`.
#[repr(C)]
#[derive(Clone, Copy)]
struct RealDefinition {
    addr: [u32; 4],
    flags: u8,
    _pad: [u8; 3],
}
// SAFETY: plain integers, explicit zeroed padding.
unsafe impl Pod for RealDefinition {}

/// `struct lb_stats`: packets (`v1`) and a second count whose meaning depends on the index.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct LbStats {
    /// Packets, for most indices.
    pub v1: u64,
    /// Bytes, or LRU misses at `LRU_CNTRS`, or non-SYN misses at `LRU_MISS_CNTR`.
    pub v2: u64,
}
// SAFETY: plain integers, no padding.
unsafe impl Pod for LbStats {}

/// `struct flow_key`: a connection table's key.
#[repr(C)]
#[derive(Clone, Copy)]
struct FlowKey {
    src: [u32; 4],
    dst: [u32; 4],
    ports: [u16; 2],
    proto: u8,
    _pad: [u8; 3],
}
// SAFETY: plain integers, explicit zeroed padding.
unsafe impl Pod for FlowKey {}

/// `struct real_pos_lru`: a connection table's value.
#[repr(C)]
#[derive(Clone, Copy)]
struct RealPosLru {
    pos: u32,
    _pad: u32,
    atime: u64,
}
// SAFETY: plain integers, explicit zeroed padding.
unsafe impl Pod for RealPosLru {}

/// A per-CPU connection table as this module opens it.
type ConnectionTable = HashMap<MapData, FlowKey, RealPosLru>;

/// Katran's loaded programs and filled maps, and the per-CPU connection tables it reaches
/// through `lru_mapping` (kept open for the object's life).
pub struct Katran {
    /// The loaded object.
    pub ebpf: Ebpf,
    _lru: Vec<ConnectionTable>,
}

/// The counters a Katran path is checked by, read before and after a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Packets Katran sent with `XDP_TX`.
    pub tx: u64,
    /// Packets that reached the connection-table stage, and those routed by the ring there.
    pub lru: LbStats,
    /// TCP SYNs that missed the table (`v1`), other TCP packets that missed it (`v2`).
    pub tcp_miss: LbStats,
}

/// A Katran path measured: the program, the frame and what its counters must show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// The LRU bypassed: every repeat routed by the ring.
    UdpRing,
    /// Every repeat but the first run's first found in the connection table.
    LruHit,
    /// Every repeat a SYN routed by the ring.
    TcpSyn,
    /// Every repeat a new flow: the connection table missed, the ring taken.
    NewFlow,
}

fn be32(a: [u8; 4]) -> u32 {
    u32::from_ne_bytes(a)
}

/// The compiled object's path: `SHARDLINE_KATRAN_OBJECT` at run time, else the one `build.rs`
/// wrote; an error saying why when it was not built.
pub fn object_path() -> Result<PathBuf, BenchError> {
    if let Some(path) = std::env::var_os("SHARDLINE_KATRAN_OBJECT") {
        return Ok(path.into());
    }
    match env!("SHARDLINE_KATRAN_OBJECT") {
        "" => Err(BenchError::Check(format!(
            "Katran's object was not built: {}",
            env!("SHARDLINE_KATRAN_MISSING")
        ))),
        path => Ok(path.into()),
    }
}

/// Loads Katran's object and its four programs, and fills its maps (see the module docs).
pub fn load() -> Result<Katran, BenchError> {
    let path = object_path()?;
    let bytes = std::fs::read(&path).map_err(super::io(format!("reading {}", path.display())))?;
    let mut ebpf = EbpfLoader::new()
        .load(&bytes)
        .map_err(|e| BenchError::Check(format!("loading Katran's object: {e}")))?;
    for name in [BENCH, NEW_FLOW, TX_RESTORING, PLAIN] {
        xdp_program(&mut ebpf, name)?
            .load()
            .map_err(program_err(name))?;
    }
    fill_vips(&mut ebpf)?;
    let lru = fill_lru(&mut ebpf)?;
    let mut ctl: Array<_, u64> = Array::try_from(
        ebpf.map_mut("ctl_array")
            .ok_or_else(|| missing("ctl_array"))?,
    )
    .map_err(map_err("opening ctl_array"))?;
    let mut mac = [0u8; 8];
    mac[..6].copy_from_slice(&NEXT_HOP_MAC);
    ctl.set(0, u64::from_ne_bytes(mac), 0)
        .map_err(map_err("writing the next hop's MAC"))?;
    Ok(Katran { ebpf, _lru: lru })
}

fn missing(map: &str) -> BenchError {
    BenchError::Check(format!("Katran's object has no {map} map"))
}

/// The three VIPs, the reals and each VIP's ring (real `1 + slot % 3`).
fn fill_vips(ebpf: &mut Ebpf) -> Result<(), BenchError> {
    let mut vips: HashMap<_, VipDefinition, VipMeta> =
        HashMap::try_from(ebpf.map_mut("vip_map").ok_or_else(|| missing("vip_map"))?)
            .map_err(map_err("opening vip_map"))?;
    let services = [
        (PORT_RING, 17u8, F_LRU_BYPASS),
        (PORT_LRU, 17, 0),
        (PORT_TCP, 6, 0),
    ];
    for (vip_num, (port, proto, flags)) in services.into_iter().enumerate() {
        let key = VipDefinition {
            addr: [be32(VIP4), 0, 0, 0],
            port: port.to_be(),
            proto,
            _pad: 0,
        };
        let meta = VipMeta {
            flags,
            vip_num: vip_num as u32,
        };
        vips.insert(key, meta, 0)
            .map_err(map_err("writing vip_map"))?;
    }
    let mut reals: Array<_, RealDefinition> =
        Array::try_from(ebpf.map_mut("reals").ok_or_else(|| missing("reals"))?)
            .map_err(map_err("opening reals"))?;
    for (i, addr) in REALS.iter().enumerate() {
        let real = RealDefinition {
            addr: [be32(*addr), 0, 0, 0],
            flags: 0,
            _pad: [0; 3],
        };
        reals
            .set(i as u32 + 1, real, 0)
            .map_err(map_err("writing reals"))?;
    }
    let mut rings: Array<_, u32> = Array::try_from(
        ebpf.map_mut("ch_rings")
            .ok_or_else(|| missing("ch_rings"))?,
    )
    .map_err(map_err("opening ch_rings"))?;
    for vip_num in 0..services.len() as u32 {
        for slot in 0..RING_SIZE {
            rings
                .set(vip_num * RING_SIZE + slot, 1 + slot % 3, 0)
                .map_err(map_err("writing ch_rings"))?;
        }
    }
    Ok(())
}

/// One LRU hash per possible CPU ([`LRU_ENTRIES`] flows each), set in `lru_mapping` as
/// Katran's userspace does, and filled with [`LRU_ENTRIES`] flows of other clients (source
/// addresses from 172.16.0.0 on): a new flow then misses a full table and its insert evicts,
/// as in shardline's `flow_miss_v4`, whose flow table the cases before it have filled.
fn fill_lru(ebpf: &mut Ebpf) -> Result<Vec<ConnectionTable>, BenchError> {
    let cpus =
        aya::util::nr_cpus().map_err(|(what, e)| BenchError::Check(format!("{what}: {e}")))?;
    let mut outer: ArrayOfMaps<&mut MapData, ConnectionTable> = ArrayOfMaps::try_from(
        ebpf.map_mut("lru_mapping")
            .ok_or_else(|| missing("lru_mapping"))?,
    )
    .map_err(map_err("opening lru_mapping"))?;
    let mut tables = Vec::with_capacity(cpus);
    for cpu in 0..cpus as u32 {
        // `struct flow_key` (40 bytes) → `struct real_pos_lru` (16).
        let def = aya_obj::Map::new_from_params(
            bpf_map_type::BPF_MAP_TYPE_LRU_HASH as u32,
            40,
            16,
            LRU_ENTRIES,
            0,
        );
        let data = MapData::create(def, "katran_lru", None)
            .map_err(map_err("creating a per-CPU connection table"))?;
        let mut table: ConnectionTable = Map::from_map_data(data)
            .and_then(TryInto::try_into)
            .map_err(map_err("opening a per-CPU connection table"))?;
        let first = u32::from_be_bytes([172, 16, 0, 0]);
        for i in 0..LRU_ENTRIES {
            let key = FlowKey {
                src: [(first + i).to_be(), 0, 0, 0],
                dst: [be32(VIP4), 0, 0, 0],
                ports: [40_000u16.to_be(), PORT_LRU.to_be()],
                proto: 17,
                _pad: [0; 3],
            };
            let value = RealPosLru {
                pos: 1 + i % 3,
                _pad: 0,
                atime: 0,
            };
            table
                .insert(key, value, 0)
                .map_err(map_err("filling a per-CPU connection table"))?;
        }
        outer
            .set(cpu, &table, 0)
            .map_err(map_err("setting a connection table in lru_mapping"))?;
        tables.push(table);
    }
    Ok(tables)
}

/// Katran's counters for [`Path`] checks, summed over CPUs.
pub fn counts(k: &Katran) -> Result<Counts, BenchError> {
    let stats: PerCpuArray<_, LbStats> =
        PerCpuArray::try_from(k.ebpf.map("stats").ok_or_else(|| missing("stats"))?)
            .map_err(map_err("opening stats"))?;
    let sum = |index: u32| -> Result<LbStats, BenchError> {
        let values = stats.get(&index, 0).map_err(map_err("reading stats"))?;
        Ok(values.iter().fold(LbStats::default(), |a, v| LbStats {
            v1: a.v1 + v.v1,
            v2: a.v2 + v.v2,
        }))
    };
    Ok(Counts {
        tx: sum(XDP_TX_CNTR)?.v1,
        lru: sum(LRU_CNTRS)?,
        tcp_miss: sum(LRU_MISS_CNTR)?,
    })
}

/// Fails unless a run of `repeat` packets on `path` went as it claims: every packet sent, and
/// the connection table missed on every packet (ring, SYN) or on at most the first (hit).
pub fn check(path: Path, repeat: u32, before: Counts, after: Counts) -> Result<(), BenchError> {
    let n = u64::from(repeat);
    let tx = after.tx - before.tx;
    let reached = after.lru.v1 - before.lru.v1;
    let by_ring = after.lru.v2 - before.lru.v2;
    let syn_misses = after.tcp_miss.v1 - before.tcp_miss.v1;
    let ok = tx == n
        && reached == n
        && match path {
            Path::UdpRing | Path::NewFlow => by_ring == n,
            Path::LruHit => by_ring <= 1,
            Path::TcpSyn => by_ring == n && syn_misses == n,
        };
    if ok {
        Ok(())
    } else {
        Err(BenchError::Check(format!(
            "Katran {path:?}: {n} repeats, counters say {tx} sent, {reached} at the connection \
             table, {by_ring} routed by the ring, {syn_misses} SYN misses; the measurement would \
             not be of the path it names"
        )))
    }
}

/// Runs `frame` once through Katran's balancer without the wrapper and returns the output
/// frame: what the bench checks is an IPIP packet to a real.
pub fn forward_once(k: &mut Katran, frame: &[u8]) -> Result<Vec<u8>, BenchError> {
    let mut out = vec![0u8; frame.len() + 64];
    let program = xdp_program(&mut k.ebpf, PLAIN)?;
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat: 1,
            ..TestRunOptions::new()
        })
        .map_err(program_err(PLAIN))?;
    out.truncate(result.data_size_out as usize);
    Ok(out)
}
