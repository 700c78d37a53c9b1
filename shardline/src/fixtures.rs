//! Configurations the unit tests share, so each test module does not carry its own copy.

use crate::config::Config;

/// One header-mode UDP service `kv` (VIP 10.0.0.1, port 7000) and backends `ids`: backend
/// `id` at 10.0.0.(10 + id), MAC 02:00:00:00:00:(10 + id), its agent at `agent` if given.
pub fn kv_config(ids: &[u32], agent: Option<&str>) -> Config {
    let mut text = String::from(
        r#"
interface = "eth0"
[encap]
source_v4 = "10.0.0.2"
[[services]]
name = "kv"
vip = "10.0.0.1"
port = 7000
protocol = "udp"
mode = "header"
"#,
    );
    for id in ids {
        let n = 10 + id;
        text += &format!(
            "[[backends]]\nid = {id}\nipv4 = \"10.0.0.{n}\"\nmac = \"02:00:00:00:00:{n}\"\n"
        );
        if let Some(agent) = agent {
            text += &format!("agent = \"{agent}\"\n");
        }
    }
    Config::parse(&text, "test").expect("a valid fixture")
}
