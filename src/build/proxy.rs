//! `orceum.proxy` → the [`Proxy`] the client uses: the URL (or, with `from_env: true`,
//! `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY`), its credentials read from their secret
//! reference, and the plain-http rule checked (docs: src/orceum/proxy.rs).

use crate::config::secret::read_plain;
use crate::config::{ConfigError, ProxyConfig};
use crate::orceum::proxy::{is_loopback, Proxy};
#[cfg(test)]
use secrecy::ExposeSecret;
use secrecy::SecretString;

/// The first of `names` set (not empty) in the environment, with its name.
fn first_set(names: &[&str], env: &dyn Fn(&str) -> Option<String>) -> Option<(String, String)> {
    names.iter().find_map(|n| {
        env(n)
            .filter(|v| !v.trim().is_empty())
            .map(|v| (n.to_string(), v.trim().to_string()))
    })
}

/// Resolves `orceum.proxy` for `base_url`; every problem is pushed with its config path.
/// `Ok(None)`: no proxy (none configured, or `from_env` with none in the environment).
pub fn resolve(
    cfg: &ProxyConfig,
    base_url: &str,
    allow_insecure_http: bool,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) -> Option<Proxy> {
    let target_is_http = base_url.starts_with("http://");
    let (raw, origin, env_no_proxy) = match (&cfg.url, cfg.from_env) {
        (Some(_), true) => {
            errors.push(ConfigError::new(
                "orceum.proxy",
                "give url or from_env: true, not both",
            ));
            return None;
        }
        (None, false) => {
            errors.push(ConfigError::new(
                "orceum.proxy",
                "give url (http://HOST:PORT) or from_env: true (take HTTPS_PROXY / NO_PROXY)",
            ));
            return None;
        }
        (Some(url), false) => (url.clone(), "orceum.proxy.url".to_string(), None),
        (None, true) => {
            let names: &[&str] = if target_is_http {
                &["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
            } else {
                &["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
            };
            let no_proxy = first_set(&["NO_PROXY", "no_proxy"], env).map(|(_, v)| v);
            match first_set(names, env) {
                Some((name, value)) => (value, name, no_proxy),
                None => {
                    tracing::info!(
                        "orceum.proxy.from_env: none of {} is set; pushing straight to {base_url}",
                        names.join(", ")
                    );
                    return None;
                }
            }
        }
    };
    let path = if cfg.from_env {
        format!("orceum.proxy.from_env ({origin})")
    } else {
        "orceum.proxy.url".to_string()
    };
    let mut url = match reqwest::Url::parse(&raw) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => u,
        Ok(u) => {
            errors.push(ConfigError::new(
                path,
                format!(
                    "scheme {:?} is not a proxy this bridge speaks; use http://HOST:PORT or https://HOST:PORT",
                    u.scheme()
                ),
            ));
            return None;
        }
        // Not echoed: a proxy URL may carry a password.
        Err(e) => {
            errors.push(ConfigError::new(
                path,
                format!("not a URL ({e}); use http://HOST:PORT"),
            ));
            return None;
        }
    };
    // Credentials in the URL (what HTTPS_PROXY=http://user:pass@host carries) move out of it,
    // so the URL can be shown.
    let mut username = cfg.username.clone();
    let mut password = None;
    if !url.username().is_empty() {
        let decode = |s: &str| percent_decode(s).unwrap_or_else(|| s.to_string());
        username = username.or_else(|| Some(decode(url.username())));
        password = url.password().map(|p| SecretString::from(decode(p)));
        let _ = url.set_username("");
        let _ = url.set_password(None);
    }
    if let Some(source) = &cfg.password {
        if username.is_none() {
            errors.push(ConfigError::new(
                "orceum.proxy.password",
                "a password needs orceum.proxy.username",
            ));
        }
        match read_plain(source, env) {
            Ok(p) => password = Some(p),
            Err(e) => errors.push(ConfigError::new("orceum.proxy.password", e.to_string())),
        }
    }
    if url.scheme() == "http" && !is_loopback(&url) && !allow_insecure_http {
        if username.is_some() {
            errors.push(ConfigError::new(
                path.clone(),
                "the proxy's credentials would cross the network in clear to an http:// proxy off loopback; use an https:// proxy URL, or set orceum.allow_insecure_http: true",
            ));
        }
        if target_is_http {
            errors.push(ConfigError::new(
                path.clone(),
                "an http:// base_url through an http:// proxy off loopback would send the webhook secret in clear; use https:// for base_url (reached with CONNECT), or set orceum.allow_insecure_http: true",
            ));
        }
    }
    let mut no_proxy: Vec<String> = cfg.no_proxy.clone();
    no_proxy.extend(env_no_proxy);
    Some(Proxy {
        url,
        username,
        password,
        no_proxy: (!no_proxy.is_empty()).then(|| no_proxy.join(",")),
        origin,
    })
}

/// `%XX` decoded (userinfo in a proxy URL); `None` when it is not valid UTF-8 after decoding.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |n| {
            pairs
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
        }
    }

    fn cfg(url: Option<&str>, from_env: bool) -> ProxyConfig {
        ProxyConfig {
            url: url.map(String::from),
            from_env,
            ..ProxyConfig::default()
        }
    }

    #[test]
    fn a_configured_proxy_is_used_and_described_without_credentials() {
        let mut errors = Vec::new();
        let mut c = cfg(Some("https://proxy.corp:3128"), false);
        c.username = Some("bridge".into());
        c.password = Some(crate::config::SecretSource::Env("PROXY_PASSWORD".into()));
        c.no_proxy = vec![".internal".into()];
        let p = resolve(
            &c,
            "https://api.orceum.com/v1",
            false,
            &env(&[("PROXY_PASSWORD", "hunter2")]),
            &mut errors,
        )
        .unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            p.describe(),
            "https://proxy.corp:3128 (orceum.proxy.url, with credentials)"
        );
        assert_eq!(
            p.password.as_ref().map(|s| s.expose_secret()),
            Some("hunter2")
        );
        assert_eq!(p.no_proxy.as_deref(), Some(".internal"));
        assert!(
            !format!("{p:?}").contains("hunter2"),
            "Debug redacts the password"
        );
        assert!(p.to_reqwest().is_ok());
    }

    #[test]
    fn from_env_takes_https_proxy_on_purpose_and_moves_its_credentials_out() {
        let mut errors = Vec::new();
        let vars = env(&[
            ("HTTPS_PROXY", "http://user:p%40ss@127.0.0.1:3128"),
            ("NO_PROXY", "localhost,.svc"),
            ("HTTP_PROXY", "http://other:1"),
        ]);
        let p = resolve(
            &cfg(None, true),
            "https://api.orceum.com/v1",
            false,
            &vars,
            &mut errors,
        )
        .unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(p.url.as_str(), "http://127.0.0.1:3128/");
        assert_eq!(p.username.as_deref(), Some("user"));
        assert_eq!(p.password.as_ref().map(|s| s.expose_secret()), Some("p@ss"));
        assert_eq!(p.no_proxy.as_deref(), Some("localhost,.svc"));
        assert_eq!(p.origin, "HTTPS_PROXY");
        assert!(!p.describe().contains("p@ss") && !p.describe().contains("user:"));
        // None set: straight to base_url.
        assert!(resolve(
            &cfg(None, true),
            "https://x/v1",
            false,
            &env(&[]),
            &mut errors
        )
        .is_none());
        assert!(errors.is_empty());
    }

    #[test]
    fn plain_http_to_a_proxy_off_loopback_takes_no_secret() {
        let mut errors = Vec::new();
        let mut c = cfg(Some("http://proxy.corp:3128"), false);
        c.username = Some("bridge".into());
        c.password = Some(crate::config::SecretSource::Env("P".into()));
        resolve(
            &c,
            "http://127.0.0.1:8080/v1",
            false,
            &env(&[("P", "x")]),
            &mut errors,
        );
        let said: Vec<String> = errors
            .iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect();
        assert_eq!(said.len(), 2, "{said:#?}");
        assert!(said[0].contains("credentials would cross the network in clear"));
        assert!(said[1].contains("webhook secret in clear"));
        // No credentials, an https base_url (CONNECT): fine.
        let mut errors = Vec::new();
        assert!(resolve(
            &cfg(Some("http://proxy.corp:3128"), false),
            "https://api.orceum.com/v1",
            false,
            &env(&[]),
            &mut errors
        )
        .is_some());
        assert!(errors.is_empty(), "{errors:?}");
        // A loopback proxy (a local sidecar) may take both.
        c.url = Some("http://127.0.0.1:3128".into());
        assert!(resolve(
            &c,
            "http://127.0.0.1:8080/v1",
            false,
            &env(&[("P", "x")]),
            &mut errors
        )
        .is_some());
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn a_bad_proxy_url_is_an_error_that_does_not_echo_it() {
        let mut errors = Vec::new();
        resolve(
            &cfg(Some("socks5://u:secretpw@h:1"), false),
            "https://x/v1",
            false,
            &env(&[]),
            &mut errors,
        );
        resolve(
            &cfg(Some("::not a url secretpw"), false),
            "https://x/v1",
            false,
            &env(&[]),
            &mut errors,
        );
        resolve(
            &cfg(None, false),
            "https://x/v1",
            false,
            &env(&[]),
            &mut errors,
        );
        resolve(
            &cfg(Some("http://h:1"), true),
            "https://x/v1",
            false,
            &env(&[]),
            &mut errors,
        );
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(
            errors.iter().all(|e| !e.message.contains("secretpw")),
            "{errors:?}"
        );
    }
}
