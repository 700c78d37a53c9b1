//! Loading the embedded eBPF objects, attaching XDP, and adopting what an earlier daemon left
//! pinned: the maps (by name, through aya's pinning) and the program's link, so a restarted
//! daemon swaps its program in atomically and the dataplane never stops routing.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
};

use aya::{
    maps::{MapError, ProgramArray},
    programs::{
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
        ProgramError, Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};
use shardline_common::nexthop::NEXTHOP_SLOT;
use tracing::{info, warn};

use crate::{config::XdpAttachMode, objects};

/// Errors loading or attaching programs.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// The pin directory could not be created.
    #[error("cannot create pin directory {path}: {source} (is bpffs mounted at /sys/fs/bpf? `mount -t bpf bpf /sys/fs/bpf`)")]
    PinDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The object could not be loaded (maps created or adopted).
    #[error("cannot load the eBPF object: {0} (root and a BPF-enabled kernel are required)")]
    Load(#[from] aya::EbpfError),
    /// The program was rejected or could not be attached.
    #[error("{what}: {source}")]
    Program {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: ProgramError,
    },
    /// A tail-called program (next hop, QUIC) could not be put in its program array.
    #[error("cannot put {program} in the {map} program array: {source}")]
    TailCall {
        /// The program.
        program: &'static str,
        /// The program array.
        map: &'static str,
        /// The cause.
        #[source]
        source: MapError,
    },
    /// The link could not be pinned or unpinned.
    #[error("cannot pin the XDP link at {path}: {source}")]
    Pin {
        /// The pin path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn prog_err(what: impl Into<String>) -> impl FnOnce(ProgramError) -> LoaderError {
    let what = what.into();
    move |source| LoaderError::Program { what, source }
}

/// Name of the XDP program in the load-balancer object.
pub const LB_PROGRAM: &str = "shardline";

/// Name of the next-hop program in the load-balancer object: never attached, reached by the
/// balancer's tail call for FIB-routed backends (`docs/nexthop.md`).
pub const NEXTHOP_PROGRAM: &str = "shardline_nexthop";

/// Name of the QUIC program in the load-balancer object: never attached, reached by the
/// balancer's tail call for a QUIC service's packet (`QUIC_PROGRAM`).
pub const QUIC_PROGRAM: &str = "shardline_quic";

/// Name of the program array the balancer tail-calls through.
const TAIL_CALLS_MAP: &str = "TAIL_CALLS";

/// Name of the program array holding the QUIC program.
const QUIC_PROGRAM_MAP: &str = "QUIC_PROGRAM";

/// Loads the load-balancer object with its maps pinned in (or adopted from) `pin_dir`, and
/// loads its program into the kernel (not attached), with the next-hop program loaded and put
/// in its `TAIL_CALLS` slot and the QUIC program in `QUIC_PROGRAM`.
pub fn load_balancer(pin_dir: &Path) -> Result<Ebpf, LoaderError> {
    load_balancer_sized(pin_dir, &[])
}

/// [`load_balancer`] with some maps created smaller or larger than the object declares
/// (`(map name, max_entries)`): tests fill a map to capacity without a million entries. Only
/// for a fresh pin directory: a map already pinned there keeps its size.
pub fn load_balancer_sized(pin_dir: &Path, sizes: &[(&str, u32)]) -> Result<Ebpf, LoaderError> {
    std::fs::create_dir_all(pin_dir).map_err(|source| LoaderError::PinDir {
        path: pin_dir.to_owned(),
        source,
    })?;
    let mut loader = EbpfLoader::new();
    loader.default_map_pin_directory(pin_dir);
    for (name, max_entries) in sizes {
        loader.map_max_entries(name, *max_entries);
    }
    let mut ebpf = loader.load(objects::LB_OBJECT)?;
    xdp_program(&mut ebpf, LB_PROGRAM)?
        .load()
        .map_err(prog_err("verifier rejected the program"))?;
    fill_tail_calls(&mut ebpf)?;
    // Pins of maps an earlier version used and this one does not: the old program keeps its
    // maps until it is replaced, the pin would only keep them after.
    for stale in RETIRED_PINS {
        let _ = std::fs::remove_file(pin_dir.join(stale));
    }
    Ok(ebpf)
}

/// Maps earlier versions pinned that this one no longer has (`HANDOFFS`: the handoffs by
/// session, now `HANDOFF_SLOTS`).
const RETIRED_PINS: &[&str] = &["HANDOFFS"];

/// Loads the next-hop program and puts it in the (pinned) `TAIL_CALLS` slot, replacing what an
/// earlier daemon left there, and the QUIC program in `QUIC_PROGRAM`. Done before the balancer
/// is attached: the balancer already attached by that daemon may then jump to the new next-hop
/// program, which reads the same pinned hand-over slot, so a FIB-routed packet is never
/// without a next hop during a restart (that balancer decides QUIC itself and never jumps to
/// the QUIC program; the new one finds it in place).
fn fill_tail_calls(ebpf: &mut Ebpf) -> Result<(), LoaderError> {
    set_next_hop_program(ebpf, NEXTHOP_PROGRAM)?;
    set_program_slot(ebpf, QUIC_PROGRAM, QUIC_PROGRAM_MAP, 0)
}

/// Loads the XDP program `name` of `ebpf` and puts it in the `TAIL_CALLS` slot the balancer
/// jumps to for FIB-routed backends: [`NEXTHOP_PROGRAM`] everywhere but in the bench, which
/// puts its restoring variant there.
pub fn set_next_hop_program(ebpf: &mut Ebpf, name: &'static str) -> Result<(), LoaderError> {
    set_program_slot(ebpf, name, TAIL_CALLS_MAP, NEXTHOP_SLOT)
}

/// Loads the XDP program `name` of `ebpf` and puts it in slot `slot` of the program array
/// `map`.
fn set_program_slot(
    ebpf: &mut Ebpf,
    name: &'static str,
    map: &'static str,
    slot: u32,
) -> Result<(), LoaderError> {
    let program = xdp_program(ebpf, name)?;
    program
        .load()
        .map_err(prog_err(format!("verifier rejected {name}")))?;
    let fd = program
        .fd()
        .and_then(|fd| {
            fd.try_clone().map_err(|io_error| {
                ProgramError::SyscallError(aya::sys::SyscallError {
                    call: "dup",
                    io_error,
                })
            })
        })
        .map_err(prog_err(format!("the descriptor of {name}")))?;
    let tail_call = |source| LoaderError::TailCall {
        program: name,
        map,
        source,
    };
    let slots = ebpf
        .map_mut(map)
        .ok_or_else(|| tail_call(MapError::InvalidName { name: map.into() }))?;
    ProgramArray::try_from(slots)
        .and_then(|mut slots| slots.set(slot, &fd, 0))
        .map_err(tail_call)
}

/// Loads the auxiliary object (decap and pass programs), no pinning.
pub fn load_aux() -> Result<Ebpf, LoaderError> {
    Ok(EbpfLoader::new().load(objects::AUX_OBJECT)?)
}

/// The XDP program `name` of `ebpf`.
pub fn xdp_program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp, LoaderError> {
    let program = ebpf.program_mut(name).ok_or_else(|| LoaderError::Program {
        what: format!("program {name} missing from the object"),
        source: ProgramError::NotLoaded,
    })?;
    program
        .try_into()
        .map_err(prog_err(format!("program {name} is not XDP")))
}

/// Where the load balancer's link on `interface` is pinned.
pub fn link_pin_path(pin_dir: &Path, interface: &str) -> PathBuf {
    pin_dir.join(format!("link_{interface}"))
}

/// How the program ended up attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attached {
    /// A pinned link existed; the new program replaced the old one atomically on it.
    Adopted,
    /// Attached fresh in native (driver) mode.
    Native,
    /// Attached fresh in generic (SKB) mode.
    Generic,
}

/// Attaches the loaded load-balancer program to `interface` and pins its link, or adopts the
/// link an earlier daemon pinned (program replaced atomically, no gap in routing).
pub fn attach_balancer(
    ebpf: &mut Ebpf,
    interface: &str,
    mode: XdpAttachMode,
    pin_dir: &Path,
) -> Result<Attached, LoaderError> {
    let pin = link_pin_path(pin_dir, interface);
    let program = xdp_program(ebpf, LB_PROGRAM)?;
    if pin.exists() {
        let adopted = PinnedLink::from_pin(&pin)
            .map_err(|e| LoaderError::Pin {
                path: pin.clone(),
                source: Box::new(e),
            })
            .and_then(|pinned| {
                let link =
                    XdpLink::try_from(FdLink::from(pinned)).map_err(|e| LoaderError::Pin {
                        path: pin.clone(),
                        source: Box::new(e),
                    })?;
                program
                    .attach_to_link(link)
                    .map_err(prog_err("replacing the program on the pinned link"))
            });
        match adopted {
            Ok(_) => {
                info!(interface, pin = %pin.display(), "adopted the pinned XDP link");
                return Ok(Attached::Adopted);
            }
            Err(e) => {
                warn!(error = %e, "pinned XDP link unusable; removing it and attaching fresh");
                let _ = std::fs::remove_file(&pin);
            }
        }
    }
    let (id, how) = match mode {
        XdpAttachMode::Native => (
            attach(program, interface, XdpMode::Driver)?,
            Attached::Native,
        ),
        XdpAttachMode::Generic => (attach(program, interface, XdpMode::Skb)?, Attached::Generic),
        XdpAttachMode::Auto => match attach(program, interface, XdpMode::Driver) {
            Ok(id) => (id, Attached::Native),
            Err(e) => {
                warn!(interface, error = %e, "native XDP unavailable, falling back to generic mode");
                (attach(program, interface, XdpMode::Skb)?, Attached::Generic)
            }
        },
    };
    let link = program
        .take_link(id)
        .map_err(prog_err("taking the XDP link"))?;
    let fd_link = FdLink::try_from(link).map_err(|e| LoaderError::Pin {
        path: pin.clone(),
        source: Box::new(e),
    })?;
    fd_link.pin(&pin).map_err(|e| LoaderError::Pin {
        path: pin.clone(),
        source: Box::new(e),
    })?;
    info!(interface, mode = ?how, pin = %pin.display(), "attached XDP program and pinned its link");
    Ok(how)
}

fn attach(
    program: &mut Xdp,
    interface: &str,
    mode: XdpMode,
) -> Result<aya::programs::xdp::XdpLinkId, LoaderError> {
    program
        .attach(interface, mode)
        .map_err(prog_err(format!("attaching XDP to {interface} ({mode:?})")))
}

/// The MTU of `interface` in this process's network namespace (`SIOCGIFMTU`; `/sys` may show
/// another namespace's devices), which the dataplane's too-big check compares packets with
/// ([`shardline_common::mtu`]).
pub fn interface_mtu(interface: &str) -> io::Result<u32> {
    let name = interface.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{interface:?} is not an interface name"),
        ));
    }
    // SAFETY: plain socket(2); the descriptor is owned (and closed) by `OwnedFd` below.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: `ifreq` is plain old data; all zeroes is a valid (empty) request.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (to, from) in request.ifr_name.iter_mut().zip(name) {
        *to = *from as libc::c_char;
    }
    // SAFETY: SIOCGIFMTU reads the NUL-terminated name and writes `ifru_mtu` of `request`.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFMTU, &mut request) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel filled the MTU member of the union.
    let mtu = unsafe { request.ifr_ifru.ifru_mtu };
    Ok(u32::try_from(mtu).unwrap_or(0))
}

/// Detaches the load balancer from `interface` by removing its pinned link, and removes the
/// pinned maps: the dataplane stops routing. Missing pins are not an error.
pub fn teardown(pin_dir: &Path, interface: Option<&str>) -> io::Result<()> {
    if let Some(interface) = interface {
        remove_if_present(&link_pin_path(pin_dir, interface))?;
    }
    if pin_dir.exists() {
        for entry in std::fs::read_dir(pin_dir)? {
            remove_if_present(&entry?.path())?;
        }
        std::fs::remove_dir(pin_dir)?;
    }
    Ok(())
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loopback_mtu_is_read_and_bad_names_are_refused() {
        let lo = interface_mtu("lo").expect("every namespace has lo");
        let sys = std::fs::read_to_string("/sys/class/net/lo/mtu").expect("sysfs");
        assert_eq!(lo.to_string(), sys.trim());
        assert!(interface_mtu("").is_err());
        assert!(interface_mtu("no-such-if0").is_err());
        assert!(interface_mtu("a-name-far-too-long-for-ifnamsiz").is_err());
    }
}
