//! The next-hop stage's maps (`shardline_common::nexthop`): the `TX_PORTS` devmap the daemon
//! fills with the configured egress interfaces, and the `NEXTHOPS` counters read back.

use std::{ffi::CString, io, path::Path};

use aya::maps::{xdp::XdpMapError, DevMapHash, Map, MapData, MapError};
use shardline_common::nexthop::{NextHopOutcome, NEXTHOP_OUTCOMES};

use super::{op, DataplaneMaps, MapsError};

/// Errors filling `TX_PORTS`.
#[derive(Debug, thiserror::Error)]
pub enum TxPortsError {
    /// An egress interface does not exist in the daemon's network namespace.
    #[error("egress interface {name:?}: {source} (check `egress_interfaces`)")]
    Interface {
        /// The configured name.
        name: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The pinned devmap could not be opened or read.
    #[error("TX_PORTS devmap in {dir}: {source}")]
    Map {
        /// The pin directory.
        dir: String,
        /// The cause.
        #[source]
        source: MapError,
    },
    /// The kernel refused an interface (a device that cannot receive redirected frames).
    #[error("adding egress interface {name:?} (ifindex {ifindex}) to TX_PORTS: {source}")]
    Insert {
        /// The configured name.
        name: String,
        /// Its index.
        ifindex: u32,
        /// The cause.
        #[source]
        source: XdpMapError,
    },
}

/// The index of interface `name` in this process's network namespace.
pub fn ifindex(name: &str) -> io::Result<u32> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        index => Ok(index),
    }
}

/// Makes the `TX_PORTS` devmap pinned in `pin_dir` hold exactly `interfaces` (each keyed by its
/// ifindex, as the FIB names egress interfaces): the ones a FIB answer may redirect to. Returns
/// each interface with its index. Interfaces left from an earlier configuration are removed
/// after the new ones are in, so a restart with the same list never drops a port.
pub fn fill_tx_ports(
    pin_dir: &Path,
    interfaces: &[String],
) -> Result<Vec<(String, u32)>, TxPortsError> {
    let map_err = |source| TxPortsError::Map {
        dir: pin_dir.display().to_string(),
        source,
    };
    let data = MapData::from_pin(pin_dir.join("TX_PORTS")).map_err(map_err)?;
    let mut ports: DevMapHash<MapData> = Map::DevMapHash(data).try_into().map_err(map_err)?;
    let mut wanted = Vec::with_capacity(interfaces.len());
    for name in interfaces {
        let index = ifindex(name).map_err(|source| TxPortsError::Interface {
            name: name.clone(),
            source,
        })?;
        ports
            .insert(index, index, None, 0)
            .map_err(|source| TxPortsError::Insert {
                name: name.clone(),
                ifindex: index,
                source,
            })?;
        wanted.push((name.clone(), index));
    }
    let stale: Vec<u32> = ports
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !wanted.iter().any(|(_, i)| i == k))
        .collect();
    for key in stale {
        ports.remove(key).map_err(map_err)?;
    }
    Ok(wanted)
}

impl DataplaneMaps {
    /// Packets of FIB-routed backends per next-hop outcome, summed over CPUs; `None` for pins
    /// made before the next-hop stage existed.
    pub fn nexthop_counts(&self) -> Result<Option<Vec<(NextHopOutcome, u64)>>, MapsError> {
        let Some(map) = &self.nexthops else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(NEXTHOP_OUTCOMES as usize);
        for outcome in NextHopOutcome::ALL {
            let per_cpu = map
                .get(&(outcome as u32), 0)
                .map_err(op("read", "NEXTHOPS"))?;
            out.push((outcome, per_cpu.iter().sum()));
        }
        Ok(Some(out))
    }
}
