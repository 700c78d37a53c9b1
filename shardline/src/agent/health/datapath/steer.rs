//! Steering data-path `http` probes to one backend, as Katran's healthcheck forwarding does: the
//! probe's TCP socket carries a mark ([`shardline_common::probe`]) that names the backend, and
//! the aux object's tc egress program ([`PROBE_ENCAP_PROGRAM`]) encapsulates every packet with
//! that mark to it. This module loads and attaches the program once per process, on each
//! interface a probe leaves by, and keeps the mark → backend map.
//!
//! The marks are allocated here, one per backend address, and never reused while the daemon
//! runs: a mark's entry is rewritten (not removed) when its backend's MAC changes, so a probe in
//! flight never finds its mark pointing at another backend.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv6Addr},
    sync::Mutex,
};

use aya::{
    maps::{HashMap as BpfHashMap, MapError},
    programs::{tc, ProgramError, SchedClassifier, TcAttachType},
    Ebpf,
};
use shardline_common::probe::{
    ProbeTarget, MAX_PROBE_TARGETS, PROBE_FAMILY_V4, PROBE_FAMILY_V6, PROBE_MARK_BASE,
};
use tracing::info;

use crate::loader::{self, LoaderError};

/// Name of the tc egress program in the aux object.
pub const PROBE_ENCAP_PROGRAM: &str = "shardline_probe_encap";
/// Name of its map: probe mark → [`ProbeTarget`].
const PROBE_TARGETS_MAP: &str = "PROBE_TARGETS";

/// Errors steering a probe.
#[derive(Debug, thiserror::Error)]
pub enum SteerError {
    /// The aux object could not be loaded.
    #[error("loading the probe encapsulator: {0}")]
    Load(#[from] LoaderError),
    /// The object lacks the program or its map (a stale build).
    #[error("the aux object has no {0}: rebuild shardline")]
    Missing(&'static str),
    /// The program was refused, or could not be attached to `interface`.
    #[error("{what} (needs CAP_BPF and CAP_NET_ADMIN): {source}")]
    Program {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: ProgramError,
    },
    /// The mark could not be written into the map.
    #[error("writing probe mark {mark:#x}: {source}")]
    Map {
        /// The mark.
        mark: u32,
        /// The cause.
        #[source]
        source: MapError,
    },
    /// Every mark is taken.
    #[error("{MAX_PROBE_TARGETS} backends already have a probe mark")]
    Full,
}

/// Backend address → probe mark, allocated in order from [`PROBE_MARK_BASE`] + 1.
#[derive(Debug, Default)]
pub struct Marks(HashMap<IpAddr, u32>);

impl Marks {
    /// The mark of `backend`, allocated on first use.
    pub fn of(&mut self, backend: IpAddr) -> Result<u32, SteerError> {
        if let Some(&mark) = self.0.get(&backend) {
            return Ok(mark);
        }
        let n = self.0.len() as u32;
        if n >= MAX_PROBE_TARGETS {
            return Err(SteerError::Full);
        }
        let mark = PROBE_MARK_BASE | (n + 1);
        self.0.insert(backend, mark);
        Ok(mark)
    }
}

/// The map value that sends a marked packet to `backend` through the next hop `mac`, from
/// `source6` (this node's IPv6 address towards an IPv6 backend, the outer source of an IPv4
/// VIP's probe to it; `None`: such probes are dropped).
pub fn target(backend: IpAddr, mac: [u8; 6], source6: Option<Ipv6Addr>) -> ProbeTarget {
    let mut addr = [0u8; 16];
    let family = match backend {
        IpAddr::V4(a) => {
            addr[..4].copy_from_slice(&a.octets());
            PROBE_FAMILY_V4
        }
        IpAddr::V6(a) => {
            addr = a.octets();
            PROBE_FAMILY_V6
        }
    };
    ProbeTarget {
        addr,
        mac,
        family,
        _pad: 0,
        source6: source6.map_or([0; 16], |a| a.octets()),
    }
}

/// The loaded program, where it is attached, and the marks handed out.
struct Steer {
    ebpf: Ebpf,
    attached: HashSet<String>,
    marks: Marks,
}

/// One per process: the program is attached once per interface and its links live as long as
/// the daemon (closed by the kernel when the process exits, so none is left behind).
static STEER: Mutex<Option<Steer>> = Mutex::new(None);

/// Makes sure the program encapsulates on `interface`, writes `backend`'s entry (next hop
/// `mac`, IPv4-in-IPv6 outer source `source6`, see [`target`]) and returns the mark a probe
/// socket must carry to reach it. Blocking (bpf and netlink calls): run it off the async
/// threads.
pub fn prepare(
    interface: &str,
    backend: IpAddr,
    mac: [u8; 6],
    source6: Option<Ipv6Addr>,
) -> Result<u32, SteerError> {
    let mut guard = STEER.lock().unwrap_or_else(|p| p.into_inner());
    if guard.is_none() {
        let mut ebpf = loader::load_aux()?;
        program(&mut ebpf)?
            .load()
            .map_err(|source| SteerError::Program {
                what: format!("loading {PROBE_ENCAP_PROGRAM}"),
                source,
            })?;
        *guard = Some(Steer {
            ebpf,
            attached: HashSet::new(),
            marks: Marks::default(),
        });
    }
    let steer = guard.as_mut().expect("set above");
    if !steer.attached.contains(interface) {
        // Kernels before 6.6 attach through the clsact qdisc (TCX needs none); it may exist.
        let _ = tc::qdisc_add_clsact(interface);
        program(&mut steer.ebpf)?
            .attach(interface, TcAttachType::Egress)
            .map_err(|source| SteerError::Program {
                what: format!("attaching {PROBE_ENCAP_PROGRAM} to {interface} egress"),
                source,
            })?;
        info!("data-path http probes: {PROBE_ENCAP_PROGRAM} on {interface} egress");
        steer.attached.insert(interface.to_owned());
    }
    let mark = steer.marks.of(backend)?;
    let map = steer
        .ebpf
        .map_mut(PROBE_TARGETS_MAP)
        .ok_or(SteerError::Missing(PROBE_TARGETS_MAP))?;
    let mut map: BpfHashMap<_, u32, ProbeTarget> =
        BpfHashMap::try_from(map).map_err(|source| SteerError::Map { mark, source })?;
    map.insert(mark, target(backend, mac, source6), 0)
        .map_err(|source| SteerError::Map { mark, source })?;
    Ok(mark)
}

fn program(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, SteerError> {
    ebpf.program_mut(PROBE_ENCAP_PROGRAM)
        .ok_or(SteerError::Missing(PROBE_ENCAP_PROGRAM))?
        .try_into()
        .map_err(|source| SteerError::Program {
            what: format!("{PROBE_ENCAP_PROGRAM} is not a tc classifier"),
            source,
        })
}

#[cfg(test)]
mod tests {
    use shardline_common::probe::is_probe_mark;

    use super::*;

    #[test]
    fn each_backend_keeps_one_mark_and_no_two_share_one() {
        let mut marks = Marks::default();
        let a: IpAddr = "10.77.0.11".parse().unwrap();
        let b: IpAddr = "fd77::11".parse().unwrap();
        let ma = marks.of(a).unwrap();
        let mb = marks.of(b).unwrap();
        assert_ne!(ma, mb);
        assert_eq!(marks.of(a).unwrap(), ma, "stable");
        assert!(is_probe_mark(ma) && is_probe_mark(mb));
        assert_ne!(ma, PROBE_MARK_BASE, "the bare base is no backend's");
    }

    #[test]
    fn marks_run_out_with_an_error_not_a_wrap() {
        let mut marks = Marks::default();
        for i in 0..MAX_PROBE_TARGETS {
            let ip = IpAddr::from([10, 0, (i >> 8) as u8, i as u8]);
            let mark = marks.of(ip).unwrap();
            assert!(is_probe_mark(mark), "{mark:#x}");
        }
        let e = marks.of("10.1.0.0".parse().unwrap()).unwrap_err();
        assert!(matches!(e, SteerError::Full), "{e}");
    }

    #[test]
    fn the_target_carries_the_backend_of_its_family_and_the_next_hop() {
        let mac = [2, 0x77, 0, 0, 0, 0x12];
        let t4 = target("10.77.0.12".parse().unwrap(), mac, None);
        assert_eq!(t4.family, PROBE_FAMILY_V4);
        assert_eq!(&t4.addr[..4], &[10, 77, 0, 12]);
        assert_eq!(&t4.addr[4..], &[0; 12]);
        assert_eq!(t4.mac, mac);
        assert_eq!(t4.source6, [0; 16]);
        let source: Ipv6Addr = "fd77::2".parse().unwrap();
        let t6 = target("fd77::12".parse().unwrap(), mac, Some(source));
        assert_eq!(t6.family, PROBE_FAMILY_V6);
        assert_eq!(t6.addr[15], 0x12);
        assert_eq!(t6.addr[0], 0xfd);
        assert_eq!(
            t6.source6,
            source.octets(),
            "an IPv4 VIP's probe leaves from it"
        );
    }
}
