//! The forward proxy the pushes go through, when `orceum.proxy` names one.
//!
//! Corporate egress usually allows only a proxy: an `https://` base_url is reached through it
//! with `CONNECT` (the TLS session is end to end, the proxy sees the host name only). Nothing
//! is taken from the environment unless `from_env: true` says so: a stray `HTTPS_PROXY` must
//! not route the webhook secrets through a host nobody chose.
//!
//! The plain-http rule of `base_url` holds for the proxy too: the request carries the secret,
//! and the proxy's own credentials are a secret, so neither crosses the network in clear
//! (an `http://` proxy off loopback takes no credentials and no `http://` base_url, unless
//! `orceum.allow_insecure_http: true`).

use secrecy::{ExposeSecret, SecretString};

/// A proxy resolved from the config (and, with `from_env`, the environment) by
/// `build::proxy`.
#[derive(Debug, Clone)]
pub struct Proxy {
    /// The proxy's URL, without credentials.
    pub url: reqwest::Url,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    /// `NO_PROXY`-style exceptions, comma-separated; `None`: every push uses the proxy.
    pub no_proxy: Option<String>,
    /// Where it came from: `orceum.proxy.url`, `HTTPS_PROXY`, ….
    pub origin: String,
}

impl Proxy {
    /// For the start summary: the URL and where it came from, never the credentials.
    pub fn describe(&self) -> String {
        format!(
            "{} ({}{})",
            self.url.as_str().trim_end_matches('/'),
            self.origin,
            if self.username.is_some() {
                ", with credentials"
            } else {
                ""
            }
        )
    }

    /// The reqwest proxy for every request (CONNECT for https targets).
    pub fn to_reqwest(&self) -> Result<reqwest::Proxy, String> {
        let mut proxy = reqwest::Proxy::all(self.url.clone())
            .map_err(|e| format!("orceum.proxy: {} is not usable: {e}", self.url))?;
        if let Some(user) = &self.username {
            let password = self
                .password
                .as_ref()
                .map(|p| p.expose_secret().to_string())
                .unwrap_or_default();
            proxy = proxy.basic_auth(user, &password);
        }
        Ok(proxy.no_proxy(
            self.no_proxy
                .as_deref()
                .and_then(reqwest::NoProxy::from_string),
        ))
    }
}

/// Whether `url`'s host is this machine (`localhost`, 127.0.0.0/8, ::1).
pub fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_names_the_proxy_and_never_its_password() {
        let p = Proxy {
            url: reqwest::Url::parse("http://127.0.0.1:3128").unwrap(),
            username: Some("bridge".into()),
            password: Some(SecretString::from("hunter2")),
            no_proxy: Some(".internal".into()),
            origin: "HTTPS_PROXY".into(),
        };
        assert_eq!(
            p.describe(),
            "http://127.0.0.1:3128 (HTTPS_PROXY, with credentials)"
        );
        assert!(!format!("{p:?}").contains("hunter2"));
        assert!(p.to_reqwest().is_ok());
        assert!(is_loopback(&p.url));
        assert!(!is_loopback(
            &reqwest::Url::parse("http://proxy.corp:3128").unwrap()
        ));
    }
}
