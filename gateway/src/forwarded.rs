//! The forwarding headers the gateway sends upstream: `X-Forwarded-For`,
//! `X-Forwarded-Host` and `X-Forwarded-Proto` are set by the gateway itself from what it
//! saw. What a client claims in `X-Forwarded-*`, `Forwarded` or `X-Real-IP` is dropped,
//! unless the client is one of the configured `trusted_proxies` (a load balancer in front
//! of the gateway), whose headers are kept and extended.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Deserializer};

/// An address or a network (`10.0.0.0/8`, `fd00::/8`, `192.0.2.7`) whose requests may
/// carry forwarding headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedProxy {
    net: IpAddr,
    prefix: u8,
}

impl TrustedProxy {
    /// Parses `ADDR` or `ADDR/PREFIX`.
    ///
    /// # Errors
    ///
    /// A message naming the text when it is not an address or network.
    pub fn parse(text: &str) -> Result<TrustedProxy, String> {
        let bad =
            || format!("trusted_proxies: {text:?} is not an address or a network like 10.0.0.0/8");
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| bad())?)),
            None => (text.trim(), None),
        };
        let net: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(TrustedProxy { net, prefix })
    }

    /// Whether `ip` is in this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |ip: IpAddr| -> (u128, u32) {
            match ip.to_canonical() {
                IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
                IpAddr::V6(v6) => (u128::from(v6), 128),
            }
        };
        let (net, width) = bits(self.net);
        let (ip, ip_width) = bits(ip);
        if width != ip_width {
            return false;
        }
        let host_bits = width - u32::from(self.prefix.min(width as u8));
        let mask = if host_bits >= 128 {
            0
        } else {
            u128::MAX << host_bits
        };
        net & mask == ip & mask
    }
}

impl fmt::Display for TrustedProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

impl<'de> Deserialize<'de> for TrustedProxy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TrustedProxy, D::Error> {
        let text = String::deserialize(d)?;
        TrustedProxy::parse(&text).map_err(serde::de::Error::custom)
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Rewrites the forwarding headers of a request from `peer` that named `host` (its
/// `Host` header as sent, port included).
pub fn rewrite(
    headers: &mut HeaderMap,
    peer: Option<SocketAddr>,
    host: Option<&HeaderValue>,
    trusted: &[TrustedProxy],
) {
    let from_trusted = peer.is_some_and(|p| trusted.iter().any(|t| t.contains(p.ip())));
    if !from_trusted {
        let claimed: Vec<HeaderName> = headers
            .keys()
            .filter(|name| {
                name.as_str().starts_with("x-forwarded-")
                    || *name == header::FORWARDED
                    || name.as_str() == "x-real-ip"
            })
            .cloned()
            .collect();
        for name in claimed {
            headers.remove(name);
        }
    }
    if let Some(peer) = peer {
        let ip = peer.ip().to_canonical().to_string();
        let value = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prior) => format!("{prior}, {ip}"),
            None => ip,
        };
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(X_FORWARDED_FOR, v);
        }
    }
    // From a trusted proxy its own values stand; otherwise none are left by now.
    headers
        .entry(X_FORWARDED_PROTO)
        .or_insert(HeaderValue::from_static("http"));
    if let Some(h) = host {
        headers.entry(X_FORWARDED_HOST).or_insert(h.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-prefix", "/admin"),
            ("forwarded", "for=6.6.6.6;host=evil.example"),
            ("x-real-ip", "6.6.6.6"),
            ("x-kept", "1"),
        ] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn networks_contain_their_addresses() {
        let net = TrustedProxy::parse("10.0.0.0/8").expect("net");
        assert!(net.contains("10.2.3.4".parse().expect("ip")));
        assert!(net.contains("::ffff:10.2.3.4".parse().expect("ip")));
        assert!(!net.contains("11.0.0.1".parse().expect("ip")));
        let one = TrustedProxy::parse("::1").expect("ip");
        assert!(one.contains("::1".parse().expect("ip")));
        assert!(!one.contains("127.0.0.1".parse().expect("ip")));
        assert!(
            TrustedProxy::parse("0.0.0.0/0")
                .expect("all")
                .contains("8.8.8.8".parse().expect("ip"))
        );
        for bad in ["10.0.0.0/33", "ten", "10.0.0.0/x", ""] {
            assert!(TrustedProxy::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_untrusted_client_cannot_claim_forwarding_headers() {
        let mut h = claims();
        let host = HeaderValue::from_static("shop.example:8080");
        rewrite(
            &mut h,
            Some("192.0.2.1:5000".parse().expect("peer")),
            Some(&host),
            &[],
        );
        assert_eq!(h["x-forwarded-for"], "192.0.2.1");
        assert_eq!(h["x-forwarded-host"], "shop.example:8080");
        assert_eq!(h["x-forwarded-proto"], "http");
        for gone in ["forwarded", "x-real-ip", "x-forwarded-prefix"] {
            assert!(!h.contains_key(gone), "{gone}");
        }
        assert_eq!(h["x-kept"], "1");
    }

    #[test]
    fn a_trusted_proxy_keeps_its_headers_and_gets_appended() {
        let mut h = claims();
        let host = HeaderValue::from_static("gw.internal");
        let trusted = [TrustedProxy::parse("192.0.2.0/24").expect("net")];
        rewrite(
            &mut h,
            Some("192.0.2.1:5000".parse().expect("peer")),
            Some(&host),
            &trusted,
        );
        assert_eq!(h["x-forwarded-for"], "6.6.6.6, 192.0.2.1");
        assert_eq!(h["x-forwarded-host"], "evil.example");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert!(h.contains_key("forwarded") && h.contains_key("x-real-ip"));
    }
}
