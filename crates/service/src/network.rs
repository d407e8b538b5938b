//! Who a client is, as far as budgets go: its network, never its address.

use std::net::IpAddr;

/// What every budget per client is keyed by: the client's network, as far as one subscriber's share of addresses
/// goes. An IPv4 address is its own network; an IPv6 address counts by its /64, since a home line or a phone is
/// given a whole /64 and may take any address in it (budgets per full IPv6 address would give one machine 2^64
/// shares); an IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, a dual-stack socket's view of an IPv4 client) is that
/// IPv4 address. Its `Debug` withholds the address: a witness's address is their whereabouts.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientNetwork(Network);

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Network {
    V4(std::net::Ipv4Addr),
    /// The first 64 bits of the address.
    V6Prefix(u64),
}

impl ClientNetwork {
    /// The network `address` belongs to.
    pub fn of(address: IpAddr) -> Self {
        match address {
            IpAddr::V4(v4) => Self(Network::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(Network::V4(v4)),
                None => Self(Network::V6Prefix((v6.to_bits() >> 64) as u64)),
            },
        }
    }

    /// The wider network this one belongs to: for IPv6 the /56 (a household's or a small site's whole
    /// allocation, often), an IPv4 address its own.
    pub fn wider(&self) -> Self {
        match self.0 {
            Network::V4(_) => *self,
            Network::V6Prefix(prefix) => Self(Network::V6Prefix(prefix & !0xff)),
        }
    }

    /// The key of this network in a [`crate::budget::Budget`]: `192.0.2.1`, or `2001:db8:1:2::/64`.
    pub fn key(&self) -> String {
        match self.0 {
            Network::V4(v4) => v4.to_string(),
            Network::V6Prefix(prefix) => format!("{}/64", std::net::Ipv6Addr::from_bits(u128::from(prefix) << 64)),
        }
    }
}

impl std::fmt::Debug for ClientNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientNetwork(withheld)")
    }
}
