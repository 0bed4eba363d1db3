//! Which proxy, if any, a registry is reached through: HTTP_PROXY, HTTPS_PROXY and NO_PROXY (or
//! their lower-case spellings) from lockstepd's environment, read as Go programs (CRI-O,
//! containerd) read them, so a systemd drop-in written for CRI-O works unchanged. A registry on
//! loopback is never proxied.

use std::net::IpAddr;

/// The proxy settings of the environment lockstepd started in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyRules {
    http: Option<String>,
    https: Option<String>,
    no_proxy: Vec<String>,
}

impl ProxyRules {
    /// The rules of lockstepd's own environment.
    pub fn from_env() -> ProxyRules {
        ProxyRules::from_vars(|name| std::env::var(name).ok())
    }

    /// The rules of an environment given by `get` (upper case wins over lower case).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> ProxyRules {
        let any = |upper: &str, lower: &str| get(upper).or_else(|| get(lower)).filter(|v| !v.trim().is_empty());
        let no_proxy = any("NO_PROXY", "no_proxy")
            .map(|v| v.split(',').map(|e| e.trim().to_ascii_lowercase()).filter(|e| !e.is_empty()).collect())
            .unwrap_or_default();
        ProxyRules { http: any("HTTP_PROXY", "http_proxy"), https: any("HTTPS_PROXY", "https_proxy"), no_proxy }
    }

    /// The proxy URL (with `http://` added when it names no scheme) for `https` or plain HTTP
    /// requests to `host` (`name[:port]`), or None when the host is reached directly.
    pub fn proxy_for(&self, host: &str, https: bool) -> Option<String> {
        let proxy = if https { self.https.as_ref() } else { self.http.as_ref() }?;
        if self.bypasses(host) {
            return None;
        }
        Some(if proxy.contains("://") { proxy.clone() } else { format!("http://{proxy}") })
    }

    /// Whether `host` (`name[:port]`, `[v6]:port`) is reached directly: loopback always, and
    /// whatever NO_PROXY names — `*`, an IP, a CIDR, a domain (its subdomains too; a leading `.`
    /// or `*.` is the same), each optionally with `:port`.
    pub fn bypasses(&self, host: &str) -> bool {
        let (name, port) = split_host(host);
        let name = name.to_ascii_lowercase();
        let ip = name.parse::<IpAddr>().ok();
        if name == "localhost" || name.ends_with(".localhost") || ip.is_some_and(|ip| ip.is_loopback()) {
            return true;
        }
        self.no_proxy.iter().any(|entry| {
            if entry == "*" {
                return true;
            }
            if let Some((net, bits)) = entry.split_once('/') {
                return cidr_contains(net, bits, ip);
            }
            let (entry_name, entry_port) = split_host(entry);
            if entry_port.is_some() && entry_port != port {
                return false;
            }
            if let (Ok(entry_ip), Some(ip)) = (entry_name.parse::<IpAddr>(), ip) {
                return entry_ip == ip;
            }
            let domain = entry_name.trim_start_matches("*.").trim_start_matches('.');
            !domain.is_empty() && (name == domain || name.ends_with(&format!(".{domain}")))
        })
    }
}

/// `name[:port]` or `[v6][:port]` into its name (without brackets) and port.
fn split_host(host: &str) -> (&str, Option<&str>) {
    if let Some(rest) = host.strip_prefix('[') {
        let (name, after) = rest.split_once(']').unwrap_or((rest, ""));
        return (name, after.strip_prefix(':'));
    }
    match host.rsplit_once(':') {
        // A bare IPv6 address has several colons and no port.
        Some((name, port)) if !name.contains(':') => (name, Some(port)),
        _ => (host, None),
    }
}

fn cidr_contains(net: &str, bits: &str, ip: Option<IpAddr>) -> bool {
    let (Ok(net), Ok(bits), Some(ip)) = (net.parse::<IpAddr>(), bits.parse::<u32>(), ip) else { return false };
    match (net, ip) {
        (IpAddr::V4(net), IpAddr::V4(ip)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(net) & mask == u32::from(ip) & mask
        }
        (IpAddr::V6(net), IpAddr::V6(ip)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(net) & mask == u128::from(ip) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(vars: &[(&str, &str)]) -> ProxyRules {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ProxyRules::from_vars(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn each_scheme_takes_its_own_variable_and_upper_case_wins() {
        let r = rules(&[("HTTPS_PROXY", "proxy:3128"), ("https_proxy", "ignored:1"), ("http_proxy", "http://p:80")]);
        assert_eq!(r.proxy_for("quay.io", true).as_deref(), Some("http://proxy:3128"));
        assert_eq!(r.proxy_for("quay.io", false).as_deref(), Some("http://p:80"));
        assert_eq!(rules(&[]).proxy_for("quay.io", true), None);
    }

    #[test]
    fn loopback_and_no_proxy_entries_are_reached_directly() {
        let r = rules(&[
            ("HTTPS_PROXY", "http://proxy:3128"),
            ("NO_PROXY", "internal.example, .corp, 10.0.0.0/8, 192.168.1.7, mirror:5000, [fd00::1]"),
        ]);
        for direct in [
            "localhost:5000",
            "127.0.0.1:5000",
            "[::1]:5000",
            "internal.example",
            "registry.internal.example:443",
            "a.corp",
            "10.2.3.4:5000",
            "192.168.1.7",
            "mirror:5000",
            "[fd00::1]:5000",
        ] {
            assert!(r.bypasses(direct), "{direct} is direct");
        }
        for proxied in ["quay.io", "notinternal.example", "corp.io", "11.0.0.1", "192.168.1.8", "mirror:5001"] {
            assert!(!r.bypasses(proxied), "{proxied} goes through the proxy");
        }
        assert!(rules(&[("no_proxy", "*")]).bypasses("quay.io"));
    }
}
