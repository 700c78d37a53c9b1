//! The encapsulation a forwarded packet leaves with, as `shardline trace` reports it: read from
//! the kernel's output bytes, or implied by the replay's decision, so the two can be compared
//! (an IPv4 packet to a backend with only IPv6 goes IPv4-in-IPv6, to any other IPIP).

use shardline_common::{
    consts::{IPPROTO_IPIP, IPV4_HLEN, IPV6_HLEN},
    encap::outer_v6,
    maps::{forward_mode, Backend},
    packet::parse_l2,
    route::Decision,
};

/// The kind of a frame the kernel forwarded, `input` turned into `output`: by the growth (none
/// for L2 DSR, an IPv4 or IPv6 header) and, for an IPv6 one, its next header.
pub fn of_output(input: &[u8], output: &[u8]) -> Option<&'static str> {
    let (l2, _) = parse_l2(input)?;
    match output.len().checked_sub(input.len())? {
        0 => Some("l2dsr"),
        IPV4_HLEN => Some("ipip"),
        IPV6_HLEN if output.get(l2 + 6) == Some(&IPPROTO_IPIP) => Some("4in6"),
        IPV6_HLEN => Some("ip6ip6"),
        _ => None,
    }
}

/// The kind the replay's decision `d` implies for its `backend`; `None` unless it forwards.
pub fn of_decision(d: &Decision, backend: Option<&Backend>) -> Option<&'static str> {
    if !d.reason.forwards() {
        return None;
    }
    let outer_v6 = outer_v6(d.v6, backend?.flags);
    Some(match (d.service.forward, d.v6, outer_v6) {
        (forward_mode::L2DSR, _, _) => "l2dsr",
        (_, false, false) => "ipip",
        (_, false, true) => "4in6",
        (_, true, _) => "ip6ip6",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_growth_and_the_next_header_name_the_kind() {
        let mut input = vec![0u8; 60];
        input[12..14].copy_from_slice(&[0x08, 0x00]);
        let grown = |by: usize, next: u8| {
            let mut out = vec![0u8; input.len() + by];
            out[14 + 6] = next;
            out
        };
        assert_eq!(of_output(&input, &input), Some("l2dsr"));
        assert_eq!(of_output(&input, &grown(20, 0)), Some("ipip"));
        assert_eq!(of_output(&input, &grown(40, 4)), Some("4in6"));
        assert_eq!(of_output(&input, &grown(40, 41)), Some("ip6ip6"));
        assert_eq!(of_output(&input, &grown(8, 0)), None);
    }
}
