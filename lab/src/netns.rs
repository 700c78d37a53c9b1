//! Network namespaces for the lab and the tests: creation and guaranteed removal, running
//! commands and spawning processes inside one, and moving the calling thread into one.
//!
//! Processes are started with `nsenter --net=…`, not `ip netns exec`: the latter remounts /sys
//! and hides bpffs, so nothing could be pinned from inside it.

use std::{
    fs::File,
    io,
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
};

use nix::sched::{setns, CloneFlags};

/// Errors managing namespaces or running commands.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// A command could not be started.
    #[error("cannot run `{command}`: {source} (is iproute2 / util-linux installed? `cargo xtask setup`)")]
    Spawn {
        /// The command line.
        command: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A command exited unsuccessfully.
    #[error("`{command}` failed: {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// Entering a namespace failed.
    #[error("cannot enter network namespace {name}: {source}")]
    Enter {
        /// The namespace.
        name: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Runs `program args…`, failing with its stderr if it exits unsuccessfully.
pub fn run(program: &str, args: &[&str]) -> Result<Output, NetnsError> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| NetnsError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(NetnsError::Failed {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(out)
}

/// A network namespace that is deleted (with every interface in it) when dropped.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `name` (replacing a stale one left by a crashed run) with loopback up.
    pub fn create(name: &str) -> Result<Self, NetnsError> {
        if Self::path_of(name).exists() {
            let _ = run("ip", &["netns", "del", name]);
        }
        run("ip", &["netns", "add", name])?;
        let ns = Self {
            name: name.to_owned(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A handle on an existing namespace `name` (made by another process). Dropping it deletes
    /// the namespace like any other; `std::mem::forget` it to leave the namespace alone.
    pub fn adopt(name: &str) -> Self {
        Self {
            name: name.to_owned(),
        }
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn path_of(name: &str) -> PathBuf {
        PathBuf::from("/var/run/netns").join(name)
    }

    /// Runs `ip -n NAME args…`.
    pub fn ip(&self, args: &[&str]) -> Result<Output, NetnsError> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Runs `program args…` inside the namespace and waits for it.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output, NetnsError> {
        exec_in(&self.name, program, args)
    }

    /// A command that runs `program` inside the namespace, for the caller to configure and spawn.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", Self::path_of(&self.name).display()))
            .arg("--")
            .arg(program);
        cmd
    }

    /// Spawns `program args…` inside the namespace.
    pub fn spawn(&self, program: &str, args: &[&str]) -> Result<Child, NetnsError> {
        self.command(program)
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|source| NetnsError::Spawn {
                command: format!("{program} {}", args.join(" ")),
                source,
            })
    }

    /// Moves the calling thread into the namespace (sockets it opens afterwards live there).
    pub fn enter_current_thread(&self) -> Result<(), NetnsError> {
        let enter = |source| NetnsError::Enter {
            name: self.name.clone(),
            source,
        };
        let file = File::open(Self::path_of(&self.name)).map_err(enter)?;
        setns(file, CloneFlags::CLONE_NEWNET).map_err(|e| enter(io::Error::from(e)))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

/// A namespace's UDP drop counters (`/proc/net/snmp`): where datagrams were lost inside a host
/// (no socket on the port, a full receive or send buffer, a bad checksum).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpDrops {
    /// Datagrams to a port nothing listens on.
    pub no_ports: u64,
    /// Datagrams dropped on receipt for any reason (buffers included).
    pub in_errors: u64,
    /// Datagrams dropped because the socket's receive buffer was full.
    pub rcvbuf_errors: u64,
    /// Datagrams dropped because the socket's send buffer was full.
    pub sndbuf_errors: u64,
}

impl UdpDrops {
    /// Whether nothing was dropped.
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }

    /// Parses the two `Udp:` lines of `/proc/net/snmp` (names, then values).
    pub fn parse(snmp: &str) -> Option<Self> {
        let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
        let names: Vec<&str> = lines.next()?.split_whitespace().collect();
        let values: Vec<&str> = lines.next()?.split_whitespace().collect();
        let field = |name: &str| -> Option<u64> {
            let i = names.iter().position(|n| *n == name)?;
            values.get(i)?.parse().ok()
        };
        Some(Self {
            no_ports: field("NoPorts")?,
            in_errors: field("InErrors")?,
            rcvbuf_errors: field("RcvbufErrors")?,
            sndbuf_errors: field("SndbufErrors")?,
        })
    }
}

/// Runs `program args…` inside namespace `name` (which this call neither creates nor removes)
/// and waits for it.
fn exec_in(name: &str, program: &str, args: &[&str]) -> Result<Output, NetnsError> {
    let net = format!("--net={}", Netns::path_of(name).display());
    let mut all = vec![net.as_str(), "--", program];
    all.extend_from_slice(args);
    run("nsenter", &all)
}

/// The UDP drop counters of namespace `name` (which this call neither creates nor removes).
pub fn udp_drops(name: &str) -> Result<UdpDrops, NetnsError> {
    let out = exec_in(name, "cat", &["/proc/net/snmp"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    UdpDrops::parse(&text).ok_or_else(|| NetnsError::Failed {
        command: format!("cat /proc/net/snmp in {name}"),
        stderr: "no Udp counters in its output".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_drops_are_read_by_name_not_position() {
        let snmp = "Ip: Forwarding\nIp: 1\n\
            Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors\n\
            Udp: 318527 4 7 318596 5 1 0\n";
        let drops = UdpDrops::parse(snmp).expect("parsed");
        assert_eq!(
            drops,
            UdpDrops {
                no_ports: 4,
                in_errors: 7,
                rcvbuf_errors: 5,
                sndbuf_errors: 1
            }
        );
        assert!(!drops.is_zero());
        assert_eq!(UdpDrops::parse("Ip: 1\n"), None);
    }
}
