//! Where deliveries may go: no loopback, private, link-local (cloud metadata at
//! 169.254.169.254 among them), shared, multicast or unspecified address, unless the
//! configuration names the host (`[webhooks] allow_hosts`). A name is checked after
//! it is resolved, by the resolver the delivery client connects through, so a name
//! that resolves to an internal address is refused at connect time however it was
//! registered.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    allow_hosts: Vec<String>,
}

impl AddressPolicy {
    pub fn new(allow_hosts: &[String]) -> AddressPolicy {
        AddressPolicy {
            allow_hosts: allow_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
        }
    }

    fn allows_host(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.allow_hosts.iter().any(|allowed| allowed == host)
    }

    /// Whether a URL's host may be delivered to before resolving it: a name always
    /// (its addresses are checked when resolved) except `localhost`, an address only
    /// when public or allowed.
    pub fn allows_url_host(&self, host: &url::Host<&str>) -> bool {
        match host {
            url::Host::Domain(name) => {
                self.allows_host(name) || !name.eq_ignore_ascii_case("localhost")
            }
            url::Host::Ipv4(ip) => self.allows_address(&ip.to_string(), IpAddr::V4(*ip)),
            url::Host::Ipv6(ip) => self.allows_address(&ip.to_string(), IpAddr::V6(*ip)),
        }
    }

    fn allows_address(&self, host: &str, ip: IpAddr) -> bool {
        self.allows_host(host) || self.allows_host(&ip.to_string()) || is_public(ip)
    }

    /// The resolver deliveries connect through.
    pub fn resolver(&self) -> Arc<GuardedResolver> {
        Arc::new(GuardedResolver {
            policy: self.clone(),
        })
    }
}

/// Not an address inside a network or a machine.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public(IpAddr::V4(v4)),
            None => {
                let first = v6.segments()[0];
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || (first & 0xfe00) == 0xfc00
                    || (first & 0xffc0) == 0xfe80)
            }
        },
    }
}

/// Resolves with the system's resolver and keeps only the addresses the policy allows.
pub struct GuardedResolver {
    policy: AddressPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let allowed: Vec<SocketAddr> = resolved
                .filter(|addr| policy.allows_address(&host, addr.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(
                    format!("{host} resolves only to addresses deliveries may not reach").into(),
                );
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_refused_unless_allowed() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "224.0.0.1",
        ] {
            assert!(!is_public(internal.parse().unwrap()), "{internal}");
        }
        for public in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
        let policy = AddressPolicy::new(&["127.0.0.1".into()]);
        assert!(policy.allows_url_host(&url::Host::Ipv4("127.0.0.1".parse().unwrap())));
        assert!(!policy.allows_url_host(&url::Host::Ipv4("10.0.0.1".parse().unwrap())));
        assert!(!policy.allows_url_host(&url::Host::Domain("localhost")));
        assert!(policy.allows_url_host(&url::Host::Domain("hooks.example.com")));
    }
}
