//! The lab's segment wired by XDP instead of the bridge ([`Topology::wire_by_xdp`]), so every
//! interface of the lab is fed as a NIC feeds its driver. Through the bridge, a frame reaches
//! the load balancer's veth as an skb the sender's stack allocated; native XDP on veth copies
//! every such skb into a page with headroom before its program runs (`skb_head_is_locked`, a
//! veth artifact no NIC has). Wired by XDP, the switch's ports run the `shardline_wire` L2
//! forwarder (`dataplane-ebpf/src/wire.rs`), which redirects each frame into the port of its
//! destination MAC: the far end receives an `xdp_frame` (a page with headroom) and runs its
//! XDP program on it without a copy, or, without a program, builds an skb around the page as a
//! NIC driver does. The copy of a sender's skb now happens on the switch port it enters: the
//! wire's work, not the receiver's.

use std::{ffi::CString, sync::Mutex};

use aya::{
    maps::{DevMap, HashMap},
    programs::XdpMode,
    Ebpf,
};
use serde_json::Value;
use shardline::loader::{load_aux, xdp_program};

use super::{backend_mac, Topology, CLIENT_MAC, LB_MAC};
use crate::netns::{Netns, NetnsError};

/// The forwarder program in the auxiliary object.
pub const WIRE_PROGRAM: &str = "shardline_wire";

/// Errors wiring the segment by XDP.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// A command on the lab's namespaces failed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// Loading, attaching or filling the forwarder failed.
    #[error("wiring the lab by XDP: {what}: {detail}")]
    Xdp {
        /// What was being done.
        what: String,
        /// The cause.
        detail: String,
    },
}

fn xdp_err(what: impl Into<String>) -> impl FnOnce(String) -> WireError {
    let what = what.into();
    move |detail| WireError::Xdp { what, detail }
}

/// The forwarder attached to the switch's ports; dropping it detaches it.
pub struct XdpWire {
    /// Holds the program's links and maps (behind a lock only so a topology can be shared
    /// between threads; nothing touches it after attaching).
    _ebpf: Mutex<Ebpf>,
}

impl std::fmt::Debug for XdpWire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("XdpWire")
    }
}

/// A port of the switch: its name there, and the MAC and namespace of its far end.
struct Port<'a> {
    name: String,
    mac: String,
    far: &'a Netns,
}

impl Topology {
    /// Takes the switch's ports (client, load balancer, backends) off the bridge and wires them
    /// by XDP ([`WIRE_PROGRAM`], native mode): frames go port to port by destination MAC,
    /// broadcast and multicast to every other port. Every far end (`eth0` of each namespace)
    /// gets transmit checksums computed in software (a redirected frame has lost the skb's
    /// offload state) and, unless an XDP program already runs on it, GRO on, which enables the
    /// veth's NAPI ring that `xdp_frame`s are delivered to. Any XDP program already on a switch
    /// port must be gone first. One way: the lab stays wired by XDP until it is dropped. The
    /// one-arm lab only (an error for the two-arm lab).
    pub fn wire_by_xdp(&self) -> Result<(), WireError> {
        if self.wired_by_xdp() {
            return Ok(());
        }
        // The two-arm lab's backends sit on a second bridge, a segment of their own.
        if self.switch.ip(&["link", "show", "br1"]).is_ok() {
            return Err(xdp_err("the two-arm lab")(
                "only the one-arm segment (br0) can be wired by XDP".into(),
            ));
        }
        let mut ports = vec![
            Port {
                name: "p-client".into(),
                mac: CLIENT_MAC.into(),
                far: &self.client,
            },
            Port {
                name: "p-lb".into(),
                mac: LB_MAC.into(),
                far: &self.lb,
            },
        ];
        for (i, ns) in self.backends.iter().enumerate() {
            let id = i as u32 + 1;
            ports.push(Port {
                name: format!("p-b{id}"),
                mac: backend_mac(id),
                far: ns,
            });
        }
        for p in &ports {
            self.switch.ip(&["link", "set", &p.name, "nomaster"])?;
            p.far.exec("ethtool", &["-K", "eth0", "tx", "off"])?;
            if xdp_prog_id(p.far, "eth0").is_none() {
                p.far.exec("ethtool", &["-K", "eth0", "gro", "on"])?;
            }
        }
        let table: Vec<(String, [u8; 8])> = ports
            .iter()
            .map(|p| Ok((p.name.clone(), mac_key(&p.mac)?)))
            .collect::<Result<_, WireError>>()?;
        let switch = &self.switch;
        let ebpf = std::thread::scope(|s| {
            s.spawn(|| attach(switch, &table))
                .join()
                .unwrap_or_else(|_| Err(xdp_err("attaching")("the thread panicked".into())))
        })?;
        // Set once: a second attach to the same ports fails before reaching here.
        let _ = self.wire.set(XdpWire {
            _ebpf: Mutex::new(ebpf),
        });
        Ok(())
    }

    /// Whether the segment is wired by XDP ([`Self::wire_by_xdp`]) rather than the bridge.
    pub fn wired_by_xdp(&self) -> bool {
        self.wire.get().is_some()
    }
}

/// In a thread of its own that enters `switch` (interface names and indexes are the
/// namespace's): loads the forwarder, attaches it to every port and fills its maps.
fn attach(switch: &Netns, ports: &[(String, [u8; 8])]) -> Result<Ebpf, WireError> {
    switch.enter_current_thread()?;
    let mut ebpf =
        load_aux().map_err(|e| xdp_err("loading the auxiliary object")(e.to_string()))?;
    {
        let mut slots: DevMap<_> = ebpf
            .map_mut("WIRE_PORTS")
            .ok_or_else(|| xdp_err("WIRE_PORTS")("map missing from the object".into()))
            .and_then(|m| DevMap::try_from(m).map_err(|e| xdp_err("WIRE_PORTS")(e.to_string())))?;
        for (slot, (name, _)) in ports.iter().enumerate() {
            let ifindex = ifindex(name)?;
            slots
                .set(slot as u32, ifindex, None, 0)
                .map_err(|e| xdp_err(format!("WIRE_PORTS slot for {name}"))(e.to_string()))?;
        }
    }
    {
        let mut macs: HashMap<_, [u8; 8], u32> = ebpf
            .map_mut("WIRE_MACS")
            .ok_or_else(|| xdp_err("WIRE_MACS")("map missing from the object".into()))
            .and_then(|m| HashMap::try_from(m).map_err(|e| xdp_err("WIRE_MACS")(e.to_string())))?;
        for (slot, (name, mac)) in ports.iter().enumerate() {
            macs.insert(mac, slot as u32, 0)
                .map_err(|e| xdp_err(format!("WIRE_MACS entry for {name}"))(e.to_string()))?;
        }
    }
    let program =
        xdp_program(&mut ebpf, WIRE_PROGRAM).map_err(|e| xdp_err(WIRE_PROGRAM)(e.to_string()))?;
    program
        .load()
        .map_err(|e| xdp_err(format!("loading {WIRE_PROGRAM}"))(e.to_string()))?;
    for (name, _) in ports {
        program
            .attach(name, XdpMode::Driver)
            .map_err(|e| xdp_err(format!("attaching {WIRE_PROGRAM} to {name}"))(e.to_string()))?;
    }
    Ok(ebpf)
}

/// The index of interface `name` in the calling thread's namespace.
fn ifindex(name: &str) -> Result<u32, WireError> {
    let c = CString::new(name).map_err(|e| xdp_err(format!("interface {name}"))(e.to_string()))?;
    // SAFETY: a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(xdp_err(format!("interface {name}"))(
            std::io::Error::last_os_error().to_string(),
        ));
    }
    Ok(index)
}

/// The forwarder's key of `mac` (`aa:bb:cc:dd:ee:ff`): its six octets and two zero octets.
pub fn mac_key(mac: &str) -> Result<[u8; 8], WireError> {
    let bad = || xdp_err(format!("MAC {mac}"))("not six hexadecimal octets".into());
    let mut key = [0u8; 8];
    let mut octets = mac.split(':');
    for k in key.iter_mut().take(6) {
        let o = octets.next().ok_or_else(bad)?;
        *k = u8::from_str_radix(o, 16).map_err(|_| bad())?;
    }
    if octets.next().is_some() {
        return Err(bad());
    }
    Ok(key)
}

/// The id of the XDP program attached to `dev` in `ns`, from `ip -j link show`.
pub fn xdp_prog_id(ns: &Netns, dev: &str) -> Option<u32> {
    let out = ns.ip(&["-j", "link", "show", dev]).ok()?;
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v[0]["xdp"]["prog"]["id"].as_u64().map(|id| id as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_keys_are_six_octets_and_padding() {
        assert_eq!(
            mac_key("02:77:00:00:00:1a").unwrap(),
            [0x02, 0x77, 0, 0, 0, 0x1a, 0, 0]
        );
        assert!(mac_key("02:77:00:00:00").is_err());
        assert!(mac_key("02:77:00:00:00:01:02").is_err());
        assert!(mac_key("02:77:00:00:00:zz").is_err());
    }
}
