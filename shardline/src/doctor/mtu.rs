//! The interface MTU against the outer header: a client packet that fits the link when it
//! arrives no longer does once IPIP (20 octets) or IP6IP6 (40) is added, and the balancer sends
//! encapsulated packets out of the interface they came in on. The numbers come from
//! [`shardline_common::mtu`], the rule the dataplane itself applies.

use shardline_common::mtu::next_hop_mtu;

use super::{check, Check, Status, MAX_SINGLE_BUFFER_MTU};
use crate::config::{Config, ForwardMode};

/// Drivers whose native XDP takes multi-buffer frames (`BPF_F_XDP_HAS_FRAGS`, mainline 5.18 to
/// 6.4): with an MTU over a page, native mode attaches on these only.
const MULTI_BUFFER_DRIVERS: &[&str] = &[
    "veth",
    "mvneta",
    "bnxt_en",
    "i40e",
    "ice",
    "mlx5_core",
    "virtio_net",
];

/// Warns when the MTU leaves no room for the outer header of an encapsulating service (with no
/// configuration, assume one), saying what clients then get. An MTU over a page (jumbo frames)
/// is fine for the programs, which are multi-buffer aware, but warns on a driver (`driver`, when
/// known) without multi-buffer XDP, which refuses native mode there.
pub(super) fn mtu_check(
    iface: &str,
    mtu: u32,
    driver: Option<&str>,
    config: Option<&Config>,
) -> Check {
    let encaps = config.is_none_or(|c| c.services.iter().any(|s| s.forward == ForwardMode::Encap));
    let jumbo = mtu > MAX_SINGLE_BUFFER_MTU;
    if jumbo && !driver.is_some_and(|d| MULTI_BUFFER_DRIVERS.contains(&d)) {
        return check(
            "mtu",
            Status::Warn,
            format!(
                "{iface}: MTU {mtu} is over {MAX_SINGLE_BUFFER_MTU}, so frames arrive in several \
                 buffers; driver {} is not known to take multi-buffer XDP in native mode",
                driver.unwrap_or("unknown")
            ),
            "use generic mode (xdp_mode = \"generic\"), a driver with multi-buffer XDP (veth, \
             mlx5, ice, i40e, bnxt, virtio_net; kernel 6.4 or later), or an MTU of at most \
             3498",
        );
    }
    let frags = if jumbo {
        " (jumbo: frames arrive in several buffers, which the programs take)"
    } else {
        ""
    };
    if !encaps {
        return check(
            "mtu",
            Status::Pass,
            format!("{iface}: MTU {mtu}{frags}; l2dsr adds no header"),
            "",
        );
    }
    let (v4, v6) = (next_hop_mtu(mtu, false), next_hop_mtu(mtu, true));
    let answered = config.is_none_or(|c| c.icmp.too_big_reply);
    let outcome = if answered {
        format!(
            "the balancer answers larger ones with ICMP fragmentation needed (MTU {v4}) / \
             ICMPv6 packet too big (MTU {v6}): TCP re-segments, UDP applications see EMSGSIZE"
        )
    } else {
        "with icmp.too_big_reply = false larger ones are forwarded and lost on the wire".into()
    };
    check(
        "mtu",
        Status::Warn,
        format!(
            "{iface}: MTU {mtu}{frags} leaves no room for the outer header: once encapsulated, a client \
             packet over {v4} octets (IPv4, IPIP) or {v6} (IPv6, IP6IP6) does not fit; a client \
             sending {mtu}-octet packets over a {mtu}-octet path cannot be carried as they are; \
             {outcome}"
        ),
        "raise the MTU of this interface and of the links to the backends by 40 octets (or \
         more) over the clients' path MTU, or clamp the clients' MSS / advertise a lower MTU on \
         the VIP",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(forward: &str, extra: &str) -> Config {
        let text = format!(
            r#"
interface = "eth0"
[encap]
source_v4 = "10.0.0.2"
{extra}
[[services]]
name = "web"
vip = "10.100.0.1"
port = 8080
protocol = "tcp"
mode = "flow"
forward = "{forward}"

[[backends]]
id = 1
ipv4 = "10.0.0.11"
mac = "02:00:00:00:00:11"
"#
        );
        Config::parse(&text, "test").expect("valid test config")
    }

    #[test]
    fn an_mtu_without_room_for_the_outer_header_warns_with_what_clients_get() {
        let on = mtu_check("eth0", 1500, Some("veth"), Some(&config("encap", "")));
        assert_eq!(on.status, Status::Warn, "{on:?}");
        assert!(on.detail.contains("over 1480 octets (IPv4"), "{on:?}");
        assert!(on.detail.contains("1460 (IPv6"), "{on:?}");
        assert!(
            on.detail.contains("fragmentation needed (MTU 1480)"),
            "{on:?}"
        );
        assert!(on.fix.contains("40 octets"), "{on:?}");

        let off = config("encap", "[icmp]\ntoo_big_reply = false\n");
        let off = mtu_check("eth0", 1500, None, Some(&off));
        assert_eq!(off.status, Status::Warn);
        assert!(off.detail.contains("forwarded and lost"), "{off:?}");

        // No configuration: assume encapsulation, as the daemon's default forward mode.
        assert_eq!(mtu_check("eth0", 9000, None, None).status, Status::Warn);
        assert!(mtu_check("eth0", 1500, None, None).detail.contains("1480"));
    }

    #[test]
    fn l2dsr_alone_adds_no_header_and_passes() {
        let c = mtu_check("eth0", 1500, None, Some(&config("l2dsr", "")));
        assert_eq!(c.status, Status::Pass, "{c:?}");
        assert!(c.fix.is_empty());
    }

    #[test]
    fn a_jumbo_mtu_passes_on_a_multi_buffer_driver_and_warns_on_others() {
        let l2dsr = config("l2dsr", "");
        let veth = mtu_check("eth0", 9000, Some("veth"), Some(&l2dsr));
        assert_eq!(veth.status, Status::Pass, "{veth:?}");
        assert!(veth.detail.contains("several buffers"), "{veth:?}");
        // With encapsulation the outer-header warning still applies, at the jumbo MTU.
        let encap = mtu_check("eth0", 9000, Some("ice"), Some(&config("encap", "")));
        assert!(encap.detail.contains("over 8980 octets"), "{encap:?}");
        for driver in [Some("ixgbe"), None] {
            let c = mtu_check("eth0", 9000, driver, Some(&l2dsr));
            assert_eq!(c.status, Status::Warn, "{c:?}");
            assert!(c.detail.contains("not known to take multi-buffer"), "{c:?}");
            assert!(c.fix.contains("generic"), "{c:?}");
        }
    }
}
