//! `a.b.c.d/len` IPv4 prefixes, read and written as that string (`encap.source_v4_prefix`).

use std::{fmt, net::Ipv4Addr, str::FromStr};

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// Shortest prefix accepted: a shorter one would send IPIP packets from most of the address
/// space.
pub const MIN_PREFIX_LEN: u8 = 8;
/// Longest prefix accepted: a /32 leaves no bit to the hash (use `encap.source_v4`).
pub const MAX_PREFIX_LEN: u8 = 31;

/// An IPv4 prefix whose host bits are zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Prefix {
    /// The network address (host bits zero).
    pub addr: Ipv4Addr,
    /// Prefix length, [`MIN_PREFIX_LEN`] to [`MAX_PREFIX_LEN`].
    pub len: u8,
}

impl Ipv4Prefix {
    /// The host part's bits as address bytes: `0.0.255.255` for a /16.
    pub fn host_mask(&self) -> [u8; 4] {
        (u32::MAX >> self.len).to_be_bytes()
    }
}

/// Why a prefix string was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// Not `address/length`.
    #[error("{0:?} is not `a.b.c.d/len`")]
    Syntax(String),
    /// The length is out of range.
    #[error("prefix length {0} is not {MIN_PREFIX_LEN} to {MAX_PREFIX_LEN}")]
    Length(u8),
    /// The address has host bits set.
    #[error("{addr}/{len} has host bits set; the network is {network}/{len}")]
    HostBits {
        /// The address as written.
        addr: Ipv4Addr,
        /// The prefix length.
        len: u8,
        /// The address with its host bits cleared.
        network: Ipv4Addr,
    },
}

impl FromStr for Ipv4Prefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<Self, PrefixError> {
        let syntax = || PrefixError::Syntax(s.to_owned());
        let (addr, len) = s.split_once('/').ok_or_else(syntax)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| syntax())?;
        let len: u8 = len.parse().map_err(|_| syntax())?;
        if !(MIN_PREFIX_LEN..=MAX_PREFIX_LEN).contains(&len) {
            return Err(PrefixError::Length(len));
        }
        let network = Ipv4Addr::from(u32::from(addr) & !(u32::MAX >> len));
        if network != addr {
            return Err(PrefixError::HostBits { addr, len, network });
        }
        Ok(Self { addr, len })
    }
}

impl fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl Serialize for Ipv4Prefix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Prefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_print_and_refuse_what_they_cannot_use() {
        let p: Ipv4Prefix = "172.16.0.0/16".parse().unwrap();
        assert_eq!(p.host_mask(), [0, 0, 255, 255]);
        assert_eq!(p.to_string(), "172.16.0.0/16");
        let p: Ipv4Prefix = "10.1.2.0/23".parse().unwrap();
        assert_eq!(p.host_mask(), [0, 0, 1, 255]);
        assert!(matches!(
            "10.1.3.0/23".parse::<Ipv4Prefix>(),
            Err(PrefixError::HostBits { .. })
        ));
        assert_eq!(
            "10.0.0.0/32".parse::<Ipv4Prefix>(),
            Err(PrefixError::Length(32))
        );
        assert_eq!(
            "10.0.0.0/4".parse::<Ipv4Prefix>(),
            Err(PrefixError::Length(4))
        );
        for bad in ["10.0.0.0", "10.0.0/16", "10.0.0.0/x", "fd00::/16"] {
            assert!(
                matches!(bad.parse::<Ipv4Prefix>(), Err(PrefixError::Syntax(_))),
                "{bad}"
            );
        }
    }
}
