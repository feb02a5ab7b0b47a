//! The SSRF guard: targets may not reach loopback, private, link-local, CGNAT,
//! multicast, metadata or otherwise special addresses, unless the operator's
//! allow-list (`--allow-targets`) permits the address.
//!
//! The check runs on the addresses a name resolves to, at connection time, so a name
//! that resolves to 127.0.0.1 (or starts to, after the target was created: DNS
//! rebinding) is refused just like the literal address.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;
use ipnet::IpNet;

/// Decides which addresses deliveries may connect to.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    allowed: Vec<IpNet>,
}

/// A connection the guard refused.
#[derive(Debug, thiserror::Error)]
#[error(
    "refused by the SSRF guard: {host} resolves only to non-public addresses ({addresses}); allow them with --allow-targets"
)]
pub struct Refused {
    host: String,
    addresses: String,
}

impl Guard {
    /// A guard that also permits the `allowed` networks.
    pub fn new(allowed: Vec<IpNet>) -> Self {
        Self { allowed }
    }

    /// Whether a delivery may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        self.allowed.iter().any(|net| net.contains(&ip)) || is_public(ip)
    }

    /// The permitted addresses among `addresses`, or why none is.
    pub fn filter(
        &self,
        host: &str,
        addresses: Vec<SocketAddr>,
    ) -> Result<Vec<SocketAddr>, Refused> {
        let permitted: Vec<SocketAddr> = addresses
            .iter()
            .copied()
            .filter(|a| self.permits(a.ip()))
            .collect();
        if permitted.is_empty() {
            let listed: Vec<String> = addresses.iter().map(|a| a.ip().to_string()).collect();
            return Err(Refused {
                host: host.to_owned(),
                addresses: listed.join(", "),
            });
        }
        Ok(permitted)
    }
}

/// Whether `ip` is an ordinary public unicast address.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // includes 169.254.169.254, the cloud metadata address
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64.0.0/10
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    let first = segments[0];
    if let Some(v4) = embedded_v4(ip) {
        return is_public_v4(v4);
    }
    !(ip.is_unspecified()
        || (first & 0xffc0) == 0xfec0 // site-local fec0::/10
        || segments[..4] == [0x0100, 0, 0, 0] // discard-only 100::/64
        || (first == 0x2001 && segments[1] == 0) // Teredo 2001::/32
        || segments[..6] == [0, 0, 0, 0, 0xffff, 0] // SIIT ::ffff:0:0:0/96
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
        || first == 0x2001 && ip.segments()[1] == 0x0db8 // documentation
        || ip.segments()[..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible and other ::/96
}

/// The IPv4 address carried by a NAT64 (`64:ff9b::/96`, `64:ff9b:1::/48`) or 6to4
/// (`2002::/16`) address: such addresses reach that IPv4 host, so it is what is judged.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let from = |high: u16, low: u16| Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || (s[..2] == [0x64, 0xff9b] && s[2] == 1) {
        return Some(from(s[6], s[7]));
    }
    (s[0] == 0x2002).then(|| from(s[1], s[2]))
}

/// A DNS resolver for the delivery client that drops every address the guard refuses.
#[derive(Clone)]
pub struct GuardedResolver {
    guard: Arc<Guard>,
}

impl GuardedResolver {
    /// Resolves with the system resolver, then applies `guard`.
    pub fn new(guard: Arc<Guard>) -> Self {
        Self { guard }
    }
}

/// Why a name gave no address to connect to.
type ResolveError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = ResolveError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ResolveError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ResolveError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let guard = Arc::clone(&self.guard);
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let permitted = guard.filter(&host, resolved)?;
            Ok(permitted.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("valid address")
    }

    #[test]
    fn special_addresses_are_refused() {
        let guard = Guard::default();
        for refused in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:5",
            "64:ff9b:1::7f00:1",
            "2002:a00:1::1",
            "fec0::1",
            "2001::1",
            "100::1",
            "::",
        ] {
            assert!(!guard.permits(ip(refused)), "{refused} must be refused");
        }
        for allowed in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "100.128.0.1"] {
            assert!(guard.permits(ip(allowed)), "{allowed} is public");
        }
    }

    #[test]
    fn the_allow_list_opens_exactly_its_networks() {
        let guard = Guard::new(vec!["127.0.0.0/8".parse().expect("net")]);
        assert!(guard.permits(ip("127.0.0.1")));
        assert!(guard.permits(ip("127.5.5.5")));
        assert!(!guard.permits(ip("10.0.0.1")));
        assert!(!guard.permits(ip("::1")));
    }
}
