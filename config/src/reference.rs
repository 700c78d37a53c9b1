//! The configuration reference: every key of the TOML file, its default and its range, as one
//! table ([`KEYS`]) that renders `docs/config.md` ([`render`]). Defaults are not typed here:
//! they are read from the config types themselves ([`sample`] parsed with serde's defaults), so
//! the reference cannot state a default the code does not have. The tests beside it fail when a
//! key of the types is missing here, when a key here is not in the types, when an integer
//! range here is not the one `validate` enforces, and when `docs/config.md` is stale
//! (`SHARDLINE_UPDATE_DOCS=1 cargo test -p shardline-config` rewrites it).
//!
//! To add a key: add it to the config type (with its serde default and its `validate` rule),
//! then one [`Key`] line to [`KEYS`] in its section's place, then regenerate the docs. A key
//! whose type is `Option<_>` with `skip_serializing_if` must also be set in [`SAMPLE`], or the
//! test cannot see it.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::Config;

/// One key of the reference.
#[derive(Clone, Copy, Debug)]
pub struct Key {
    /// Dotted path, `[]` for an element of an array of tables, e.g. `services[].port`.
    pub key: &'static str,
    /// Where its default comes from.
    pub default: Source,
    /// The values `validate` accepts.
    pub range: Range,
    /// What it does, one or two sentences.
    pub doc: &'static str,
}

/// Where a key's default comes from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Source {
    /// serde's default, read from the types (an unset `Option` renders as "unset"); the
    /// test checks [`SAMPLE`] does not set it.
    Code,
    /// Optional and unset by default, but set in [`SAMPLE`] so the test sees the key.
    Unset,
    /// The key must be given.
    Required,
    /// A default that depends on other keys, described in words.
    Derived(&'static str),
}

/// A key's valid values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Range {
    /// An integer range, both ends inclusive; the test checks both ends and one past each
    /// against `validate`.
    Int(i64, i64),
    /// Anything else, in words (floats, enums, addresses).
    Text(&'static str),
}

use Range::{Int, Text};
use Source::{Code, Derived, Required, Unset};

const fn key(key: &'static str, default: Source, range: Range, doc: &'static str) -> Key {
    Key {
        key,
        default,
        range,
        doc,
    }
}

/// Every key, in the order of the file's sections. One line per key, so a key is added (or a
/// merge resolved) one line at a time.
#[rustfmt::skip]
pub const KEYS: &[Key] = &[
    key("interface", Required, Text("an interface name"), "Interface the XDP program attaches to."),
    key("egress_interfaces", Code, Text("interface names, at most 64"), "Interfaces besides `interface` that packets to `nexthop = \"fib\"` backends may leave by: when the FIB's next hop is out of one of them the packet is redirected there (`XDP_REDIRECT` through the `TX_PORTS` devmap); a next hop out of any other interface falls back to the static MAC. Read at start. See docs/nexthop.md."),
    key("xdp_mode", Code, Text("`auto`, `native` or `generic`"), "`auto` tries native (driver) XDP and falls back to generic with a warning."),
    key("pin_dir", Code, Text("a directory on bpffs"), "Where the maps and the program link are pinned; they survive daemon restarts."),
    key("flow_idle_secs", Code, Text("0 to 4294967295 (0: no stickiness)"), "Seconds a flow-mode connection keeps its backend after its last packet, across table changes."),
    key("handoff_window_secs", Code, Int(0, 3600), "Seconds the previous owners of a re-placed session stay published (`GET …/owners`) so the new owner can pull moved keys from them (docs/handoff.md); 0 publishes none. A reload applies it to later moves."),
    key("encap.source_v4", Unset, Text("an IPv4 address"), "Outer source of IPIP packets; required when a service encapsulates to an IPv4 backend, unless `encap.source_v4_prefix` is set."),
    key("encap.source_v6", Code, Text("an IPv6 address"), "Outer source of IP6IP6 packets, and of IPv4-in-IPv6 ones (an IPv4 service's packets to a backend with only `ipv6`); required when an IPv4 service encapsulates to such a backend."),
    key("encap.source_v4_prefix", Unset, Text("`a.b.c.d/len`, len 8 to 31, host bits zero"), "IPIP outer sources as a prefix (Katran's `IPIP_V4_PREFIX`): each packet leaves from the address whose host bits are its hash (session and request key: one flow, one source), so a backend's RSS spreads tunnelled flows over its queues; replaces `encap.source_v4` for IPIP. Backends must accept IPIP from the whole prefix."),
    key("icmp.echo_reply", Code, Text("`true` or `false`"), "Answer ICMP / ICMPv6 echo requests (ping) to a VIP in the dataplane, as Katran does; `false` passes them to the host's stack."),
    key("icmp.too_big_reply", Code, Text("`true` or `false`"), "Answer a client packet that would exceed the interface MTU once the IPIP / IP6IP6 header is added with ICMP \"fragmentation needed\" / ICMPv6 \"packet too big\" carrying the usable MTU (the interface MTU less 20 or 40), sent back from the VIP, as Katran does; the MTU is read from the interface at attach. `false` forwards such packets as they are."),
    key("services[].name", Required, Text("a unique name"), "The service's name, which sessions refer to."),
    key("services[].vip", Required, Text("an IP address"), "Virtual IP."),
    key("services[].port", Required, Int(1, 65535), "Port."),
    key("services[].protocol", Required, Text("`udp` or `tcp`"), "Transport protocol."),
    key("services[].mode", Required, Text("`header` (udp), `flow` or `quic` (udp)"), "How a packet names its session."),
    key("services[].forward", Code, Text("`encap` or `l2dsr`"), "Encapsulate to the backend, or rewrite the MAC only (direct server return on one L2)."),
    key("services[].server_id_len", Derived("2 in `quic` mode"), Text("1 to 4, `quic` mode only"), "Octets of the server id in QUIC connection ids."),
    key("services[].cid_generation", Derived("0 in `quic` mode"), Text("`quic` mode only"), "QUIC-LB config generation; bump it when changing `server_id_len`."),
    key("services[].backends", Unset, Text("backend ids or `{ id, weight }` tables"), "The service's pool: only these backends serve it, through a Maglev ring of its own (weight default: the backend's own). Unset: every backend, through the default table."),
    key("services[].ring_size", Derived("the smallest of 251, 509, 1021, … 65537 with 100 slots per pool member"), Text("a prime up to 65537, with `backends`"), "Slots of the pool's ring; memory is 16 bytes per slot (two halves of 8-byte array entries)."),
    key("services[].probe", Derived("not probed"), Text("`tcp`, `udp` or `http`"), "Health probe of the service on each backend, besides the agent's `/health`: a TCP handshake, a UDP request answered, or an HTTP GET answered with the expected status."),
    key("services[].probe_path", Derived("auto"), Text("`auto`, `datapath` or `direct`"), "Which way the probe travels: `datapath` encapsulates it to the backend with the VIP as inner destination (IPIP, IPv6-in-IPv6 or IPv4-in-IPv6, as the balancer forwards; encapsulating services only; tcp and udp through raw sockets, needing CAP_NET_RAW; http through a marked TCP connection a tc egress program encapsulates, needing CAP_NET_ADMIN, CAP_BPF and a route to the VIP, see [health](health.md)), `direct` sends it to the backend's address and the service port; `auto` takes the data path for tcp and udp probes of encapsulating services, and sends http direct."),
    key("services[].probe_http_path", Derived("/"), Text("an absolute path, visible ASCII, `http` probes only"), "What an `http` probe GETs (query string included)."),
    key("services[].probe_http_status", Derived("any 2xx or 3xx"), Text("100 to 599, `http` probes only"), "The one status an `http` probe passes on."),
    key("backends[].id", Required, Text("0 to 4095, unique"), "Unique backend id."),
    key("backends[].ipv4", Unset, Text("an IPv4 address"), "IPIP destination. A backend without it gets IPv4 clients' packets IPv4-in-IPv6 to `ipv6`."),
    key("backends[].ipv6", Code, Text("an IPv6 address"), "IP6IP6 destination, and IPv4-in-IPv6 destination when `ipv4` is unset."),
    key("backends[].mac", Derived("required unless `nexthop = \"fib\"`"), Text("`aa:bb:cc:dd:ee:ff`"), "MAC of the next hop towards the backend; with `nexthop = \"fib\"` the fallback used when the FIB has no answer (left out, such packets are dropped, counted `no_next_hop`)."),
    key("backends[].nexthop", Code, Text("`static` or `fib`"), "Where the next hop's MAC comes from: `static` uses `mac`; `fib` looks the backend's address up in the kernel's FIB per packet (`bpf_fib_lookup`: routes and neighbours, so a backend behind a router needs no hand-written MAC), sends out of the receiving interface or redirects to one of `egress_interfaces`, and falls back to `mac` when the FIB has no answer (counted in `shardline_dataplane_nexthop_packets`). Needs forwarding enabled on `interface` (`net.ipv4.conf.IFACE.forwarding=1`, and the IPv6 one for IPv6 backends). See docs/nexthop.md."),
    key("backends[].weight", Code, Text("0 to 4294967295 (0 drains it)"), "Relative weight in the default table."),
    key("backends[].agent", Unset, Text("`host:port`"), "Its agent's `/health` address, probed by the health checker."),
    key("backends[].capacity", Unset, Text("> 0, packets per second"), "Load it can carry; overrides what its agent reports."),
    key("sessions[].service", Required, Text("a service's name"), "The session's service."),
    key("sessions[].session", Required, Text("a number (header) or a client address (flow, quic)"), "The session."),
    key("sessions[].backends", Required, Text("1 to 16 distinct backend ids"), "The shard set it is placed on."),
    key("control.controller", Code, Text("`predictive` or `reactive`"), "How shard counts are decided: the forecast (default) or the HPA rule on the observed rate (see docs/replay.md)."),
    key("control.tick_ms", Code, Int(10, 3_600_000), "Tick length of the predictive loop, ms."),
    key("control.horizon", Code, Int(1, 3600), "Forecast horizon of shard decisions, ticks."),
    key("control.period", Code, Int(0, 2016), "Season length in ticks for the seasonal models: `\"auto\"` detects it on each session's history (redone as it grows), a number fixes it (0: none)."),
    key("control.per_shard_capacity", Code, Text("> 0"), "Load (packets per second) one shard carries at full use."),
    key("control.per_shard_bytes", Code, Text("> 0, bytes per second"), "Bytes per second one shard carries at full use; set, a session gets the larger of the shard counts its packets and its bytes need. Unset: packets alone."),
    key(
        "control.headroom",
        Code,
        Text("0 to < 1"),
        "Spare capacity on the session's expected load (its forecast or measured rate, whichever is higher), added to the upper bound over the lead window: `ceil((upper + headroom × level) / per_shard_capacity)` shards.",
    ),
    key("control.hysteresis", Code, Text("0 to < 1"), "Extra margin a scale-in must leave."),
    key("control.min_dwell_secs", Code, Text(">= 0"), "Least seconds after a change before a scale-in (scale-out never waits)."),
    key("control.scale_in_delay_secs", Code, Text(">= 0"), "Seconds the forecast must stay low before a scale-in."),
    key("control.scale_in_lookahead_secs", Code, Text(">= 0"), "Seconds a session with a detected season looks ahead on a scale-in instead of waiting `scale_in_delay_secs`: it scales in at once to what the bound, raised by the rise its season's shape forecasts within the window, needs. 0 (default): off (see docs/replay.md)."),
    key("control.core", Derived("the last core"), Text("a CPU number"), "Core the loop's thread is pinned to (see docs/deploy.md)."),
    key("control.listen", Code, Text("`host:port`"), "Address of the agents' endpoint (`/v1/agents`); unset: no endpoint."),
    key("control.agent_token_dir", Code, Text("a directory"), "Agents' bearer tokens, one file per backend (`ID.token`, one token a line for rotation); read per request. See docs/security.md."),
    key("control.insecure_agents", Code, Text("`true` or `false`"), "Accept agents without tokens; with neither this nor `agent_token_dir` the agents' endpoint refuses every request."),
    key("control.health_interval_ms", Code, Int(10, i64::MAX), "Health-check interval, ms: a dead backend is down within it (probes run every interval / `health_fall`)."),
    key("control.health_fall", Code, Int(1, 10), "Failed probes in a row that take a healthy backend down."),
    key("control.health_rise", Code, Int(1, 10), "Passing probes in a row that bring a down backend back."),
    key("control.drain_timeout_secs", Code, Text(">= 0"), "Seconds a drained backend keeps its placed sessions and established flows; then it leaves every shard set and its flows are re-decided."),
    key("control.forget_after_secs", Code, Text(">= 0"), "Seconds without traffic after which a session leaves the control loop's memory; its placement stays, and traffic brings it back. 0 never forgets."),
    key("control.history_path", Code, Text("a file path"), "History file (redb); unset keeps no history."),
    key("control.history_tiers[].step_secs", Code, Text(">= 1"), "Bucket width of a downsampling tier, seconds (1 to 4 tiers, finest first)."),
    key("control.history_tiers[].keep_secs", Code, Text(">= step_secs"), "Age after which a tier's buckets are deleted, seconds."),
    key("control.history_on_corrupt", Code, Text("`recover` or `refuse`"), "What to do with a history file that cannot be read."),
    key("control.hook.command", Code, Text("a program and its arguments"), "Autoscale hook: gets the shortfall JSON on stdin. Exactly one of `command` and `webhook`."),
    key("control.hook.webhook", Unset, Text("an `http://` URL"), "Autoscale hook: gets the shortfall JSON by POST."),
    key("control.hook.lead_secs", Code, Text(">= 0"), "How far ahead the fleet's load is forecast for the hook, seconds."),
    key("control.hook.cooldown_secs", Code, Text(">= 0"), "Least seconds between two hook calls."),
    key("control.classes.<name>.rate", Code, Text(">= 0"), "A class's expected load before any sample, packets per second."),
    key("control.classes.<name>.shards", Code, Int(1, 16), "Shards a new session of the class starts with."),
    key("cluster.node_id", Code, Text(">= 1, unique"), "This node's Raft id."),
    key("cluster.listen", Unset, Text("`host:port`"), "Address the peer endpoint binds (Raft RPCs, forwarded writes)."),
    key("cluster.advertise", Derived("`cluster.listen`"), Text("`host:port`"), "Address peers reach this node at."),
    key("cluster.data_dir", Derived("a directory derived from `pin_dir`"), Text("a directory"), "Where the Raft log, vote and snapshots are kept."),
    key("cluster.members[].id", Required, Text(">= 1"), "An initial voter's node id."),
    key("cluster.members[].addr", Required, Text("`host:port`"), "An initial voter's peer endpoint."),
    key("cluster.join", Code, Text("`true` or `false`"), "Start empty and wait to be added by the leader instead of bootstrapping."),
    key("cluster.heartbeat_ms", Code, Text(">= 1, at most half the election minimum"), "Heartbeat period, ms."),
    key("cluster.election_timeout_ms", Code, Text("[min, max], 100 <= min < max"), "A follower that hears no leader for a random time in this range starts an election, ms."),
    key("cluster.secret_file", Unset, Text("a file path"), "The cluster secret every peer request carries (same file on every node; one secret a line: the first is sent, any accepted). Required when `listen` is set, unless `insecure`."),
    key("cluster.insecure", Code, Text("`true` or `false`"), "Run the peer endpoint without a secret: only on a peer network no one else reaches."),
    key("cluster.snapshot_logs", Code, Text(">= 1"), "Log entries after which a snapshot is taken."),
    key("api.listen", Code, Text("`host:port`"), "Address of the HTTP API and `/metrics`; keep it on a management network."),
    key("api.token_file", Code, Text("a file path"), "File holding the bearer token; `SHARDLINE_API_TOKEN` overrides it. Neither: read-only API."),
    key("api.body_limit", Code, Int(1024, 16_777_216), "Largest request body accepted, bytes."),
    key("api.metrics_top_sessions", Code, Int(0, 100_000), "Sessions that keep their own per-session metric series (top K by load); the rest are aggregated into `session=\"_other\"`."),
];

/// A configuration that sets every section and one element of every array, and otherwise only
/// what is required: parsed, it holds serde's default of every other key. Keys the types skip
/// when unset (`skip_serializing_if`) are set here so the test sees them.
pub const SAMPLE: &str = r#"
interface = "eth0"
[encap]
source_v4 = "10.0.0.2"
source_v4_prefix = "172.16.0.0/16"
[icmp]
[[services]]
name = "kv"
vip = "10.100.0.1"
port = 7000
protocol = "udp"
mode = "header"
backends = [1]
ring_size = 251
probe = "udp"
probe_path = "datapath"
[[services]]
name = "web"
vip = "10.100.0.1"
port = 80
protocol = "tcp"
mode = "flow"
probe = "http"
probe_path = "datapath"
probe_http_path = "/healthz"
probe_http_status = 200
[[backends]]
id = 1
ipv4 = "10.0.0.11"
mac = "02:00:00:00:00:11"
agent = "10.0.0.11:7070"
capacity = 1000.0
[[sessions]]
service = "kv"
session = 42
backends = [1]
[control]
[control.hook]
webhook = "http://127.0.0.1:9000/scale"
[control.classes."<name>"]
[cluster]
listen = "127.0.0.1:7946"
secret_file = "/etc/shardline/cluster.secret"
[[cluster.members]]
id = 1
addr = "127.0.0.1:7946"
[api]
"#;

/// [`SAMPLE`], parsed.
pub fn sample() -> Config {
    Config::parse(SAMPLE, "reference sample").expect("the reference sample is valid")
}

/// Every key of `config` as the types serialize it (JSON, so an unset `Option` is `null`, not
/// left out): dotted paths, `[]` for an array of tables, each with its value.
pub fn keys_of(config: &Config) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let value = serde_json::to_value(config).expect("a config serializes");
    flatten("", &value, &mut out);
    out
}

fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&path, v, out);
            }
        }
        Value::Array(items) if items.first().is_some_and(Value::is_object) => {
            for item in items {
                flatten(&format!("{prefix}[]"), item, out);
            }
        }
        _ => {
            out.entry(prefix.to_owned())
                .or_insert_with(|| value.clone());
        }
    }
}

/// `docs/config.md`.
pub fn render() -> String {
    let values = keys_of(&sample());
    let mut out = String::from(
        "# Configuration reference\n\n\
         Generated from the config types by `config/src/reference.rs`; do not edit by hand \
         (`SHARDLINE_UPDATE_DOCS=1 cargo test -p shardline-config reference` rewrites it). \
         The daemon reads one TOML file (`shardline daemon --config FILE`); \
         `shardline.example.toml` is a commented example. Unknown keys are errors, and an \
         invalid value is refused with the key's name.\n",
    );
    let mut section = None;
    for k in KEYS {
        let head = k.key.split(['.', '[']).next().unwrap_or(k.key);
        let head = if k.key.contains(['.', '[']) { head } else { "" };
        if section != Some(head) {
            section = Some(head);
            let title = match head {
                "" => "Top level".to_owned(),
                "services" | "backends" | "sessions" => format!("`[[{head}]]`"),
                _ => format!("`[{head}]`"),
            };
            out += &format!(
                "\n## {title}\n\n| key | default | range | meaning |\n|---|---|---|---|\n"
            );
        }
        let default = match k.default {
            Required => "required".to_owned(),
            Unset => "unset".to_owned(),
            Derived(text) => text.to_owned(),
            Code => match values.get(k.key) {
                Some(Value::Null) | None => "unset".to_owned(),
                Some(v) => format!("`{v}`"),
            },
        };
        let range = match k.range {
            Int(lo, i64::MAX) => format!("≥ {lo}"),
            Int(lo, hi) => format!("{lo} to {hi}"),
            Text(text) => text.to_owned(),
        };
        out += &format!(
            "| `{}` | {} | {} | {} |\n",
            k.key,
            default.replace('|', "\\|"),
            range.replace('|', "\\|"),
            k.doc.replace('|', "\\|")
        );
    }
    out
}

#[cfg(test)]
mod tests;
