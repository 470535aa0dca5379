//! Who the client is: the connection's peer, or what a trusted proxy in front of this process
//! says. The per-address limits (the door's entries and gateway, member-api's logins) and the
//! gateway's `X-Forwarded-*` headers all ask here.
//!
//! A forwarded header is a list each proxy appends its peer to, so only its right end is
//! written by proxies; the left end is whatever the client sent. The client is therefore the
//! rightmost entry that is not one of this deployment's proxies, and the header counts only
//! when the connection itself comes from one of them.

use std::net::{IpAddr, SocketAddr};

use anyhow::Context;
use axum::http::{HeaderMap, HeaderName};

/// Settings: which header carries the client's address and which peers may set it.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ClientAddressArgs {
    /// Header the trusted proxies append the client's address to (e.g. `x-forwarded-for`);
    /// unset = the connection's peer address is the client.
    #[arg(long, env = "CLIENT_ADDRESS_HEADER")]
    pub client_address_header: Option<String>,
    /// Addresses or CIDR ranges of the proxies in front (e.g. `127.0.0.1,10.0.0.0/8`), the only
    /// peers whose `CLIENT_ADDRESS_HEADER` counts. Required with it.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,
}

/// How this process tells clients apart.
#[derive(Debug, Clone)]
pub struct ClientAddress {
    /// `None` when clients reach this process directly.
    header: Option<HeaderName>,
    proxies: Vec<Range>,
}

impl ClientAddress {
    /// From the settings.
    ///
    /// # Errors
    /// When the header is not a header name, a proxy is not an address or range, or a header
    /// is set with no proxy to trust it from.
    pub fn from_args(args: &ClientAddressArgs) -> anyhow::Result<Self> {
        let header = args
            .client_address_header
            .as_deref()
            .map(HeaderName::try_from)
            .transpose()
            .context("CLIENT_ADDRESS_HEADER is not a header name")?;
        let proxies = args
            .trusted_proxies
            .iter()
            .filter(|p| !p.trim().is_empty())
            .map(|p| Range::parse(p.trim()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        anyhow::ensure!(
            header.is_none() || !proxies.is_empty(),
            "CLIENT_ADDRESS_HEADER is set but TRUSTED_PROXIES is empty: name the proxies whose \
             header may be believed (anyone else could claim any address)"
        );
        Ok(Self { header, proxies })
    }

    /// The client's address: the rightmost untrusted entry of the configured header when the
    /// peer is a trusted proxy, else the peer.
    pub fn of(&self, headers: &HeaderMap, peer: SocketAddr) -> IpAddr {
        let peer = peer.ip();
        let Some(name) = self.header.as_ref().filter(|_| self.trusts(peer)) else {
            return peer;
        };
        // Right to left, across header lines and within each. An entry no proxy of ours could
        // have written ends the trusted part of the chain; the nearest hop we can vouch for
        // then stands in for the client.
        let mut nearest = peer;
        for line in headers.get_all(name).iter().rev() {
            let Ok(line) = line.to_str() else {
                return nearest;
            };
            for entry in line.rsplit(',') {
                let Ok(address) = entry.trim().parse::<IpAddr>() else {
                    return nearest;
                };
                if !self.trusts(address) {
                    return address;
                }
                nearest = address;
            }
        }
        nearest
    }

    /// Whether `peer` is one of the trusted proxies, so the `X-Forwarded-*` headers it sends
    /// were written by it rather than made up by a client.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.proxies.iter().any(|range| range.contains(peer))
    }
}

/// An address range: an address and how many leading bits must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    base: IpAddr,
    prefix: u8,
}

impl Range {
    /// `a.b.c.d`, `a.b.c.d/n`, or the same for IPv6.
    fn parse(text: &str) -> anyhow::Result<Self> {
        let invalid = || format!("TRUSTED_PROXIES: {text:?} is not an address or CIDR range");
        let (address, prefix) = text
            .split_once('/')
            .map_or((text, None), |(a, p)| (a, Some(p)));
        let base: IpAddr = address.parse().with_context(invalid)?;
        let bits = if base.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .with_context(invalid)?,
        };
        Ok(Self { base, prefix })
    }

    fn contains(self, address: IpAddr) -> bool {
        // An IPv4 peer may arrive as an IPv4-mapped IPv6 address on a dual-stack socket.
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            v4 @ IpAddr::V4(_) => v4,
        };
        match (self.base, address) {
            (IpAddr::V4(base), IpAddr::V4(address)) => same_prefix(
                u128::from(base.to_bits()),
                u128::from(address.to_bits()),
                self.prefix,
                32,
            ),
            (IpAddr::V6(base), IpAddr::V6(address)) => {
                same_prefix(base.to_bits(), address.to_bits(), self.prefix, 128)
            }
            _ => false,
        }
    }
}

/// Whether the first `prefix` of `bits` bits of `a` and `b` agree.
fn same_prefix(a: u128, b: u128, prefix: u8, bits: u8) -> bool {
    let shift = u32::from(bits - prefix);
    shift >= u32::from(bits) || (a >> shift) == (b >> shift)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn behind(proxies: &[&str]) -> ClientAddress {
        ClientAddress::from_args(&ClientAddressArgs {
            client_address_header: Some("x-forwarded-for".into()),
            trusted_proxies: proxies.iter().map(|p| (*p).to_owned()).collect(),
        })
        .unwrap()
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn peer(address: &str) -> SocketAddr {
        SocketAddr::new(address.parse().unwrap(), 4321)
    }

    fn ip(address: &str) -> IpAddr {
        address.parse().unwrap()
    }

    #[test]
    fn the_client_is_the_rightmost_entry_no_trusted_proxy_wrote() {
        let door = behind(&["127.0.0.1", "10.0.0.0/8"]);
        // The client claimed 6.6.6.6; the balancer appended the real peer, then the door its.
        let headers = forwarded(&["6.6.6.6, 203.0.113.7, 10.1.2.3"]);
        assert_eq!(door.of(&headers, peer("127.0.0.1")), ip("203.0.113.7"));
        // Split across header lines, the order is the same.
        let headers = forwarded(&["6.6.6.6", "203.0.113.7, 10.1.2.3"]);
        assert_eq!(door.of(&headers, peer("127.0.0.1")), ip("203.0.113.7"));
    }

    #[test]
    fn a_header_from_an_untrusted_peer_or_no_header_counts_for_nothing() {
        let door = behind(&["127.0.0.1"]);
        let headers = forwarded(&["203.0.113.7"]);
        assert_eq!(door.of(&headers, peer("127.0.1.9")), ip("127.0.1.9"));
        assert_eq!(
            door.of(&HeaderMap::new(), peer("127.0.0.1")),
            ip("127.0.0.1")
        );
        let direct = ClientAddress::from_args(&ClientAddressArgs::default()).unwrap();
        assert_eq!(direct.of(&headers, peer("127.0.0.1")), ip("127.0.0.1"));
        assert!(!direct.trusts(ip("127.0.0.1")));
    }

    #[test]
    fn an_all_trusted_or_garbled_chain_stops_at_the_nearest_hop_vouched_for() {
        let door = behind(&["10.0.0.0/8"]);
        let headers = forwarded(&["10.0.0.5, 10.0.0.6"]);
        assert_eq!(door.of(&headers, peer("10.0.0.1")), ip("10.0.0.5"));
        let headers = forwarded(&["203.0.113.7, nonsense, 10.0.0.6"]);
        assert_eq!(door.of(&headers, peer("10.0.0.1")), ip("10.0.0.6"));
    }

    #[test]
    fn ranges_match_by_prefix_and_mapped_v4_peers_match_v4_ranges() {
        let range = Range::parse("10.1.0.0/16").unwrap();
        assert!(range.contains(ip("10.1.255.3")));
        assert!(!range.contains(ip("10.2.0.1")));
        assert!(range.contains(ip("::ffff:10.1.0.9")));
        assert!(Range::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Range::parse("::1").unwrap().contains(ip("::1")));
        assert!(!Range::parse("::1").unwrap().contains(ip("127.0.0.1")));
        for bad in ["10.0.0.0/33", "10.0.0", "::1/129", "10.0.0.0/x", ""] {
            assert!(Range::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_header_without_trusted_proxies_is_refused_at_start() {
        let err = ClientAddress::from_args(&ClientAddressArgs {
            client_address_header: Some("x-forwarded-for".into()),
            trusted_proxies: vec![],
        })
        .unwrap_err();
        assert!(err.to_string().contains("TRUSTED_PROXIES"));
    }
}
