//! Request signing: `X-Hub-Signature-256: sha256=<lowercase hex HMAC-SHA256(secret, body)>`.
//!
//! The signature covers the exact body bytes that are sent. `X-Timestamp` is the send time and
//! is produced fresh for every attempt (a retry is re-stamped, the body is not re-serialised).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// `sha256=` followed by the lowercase hex HMAC-SHA256 of `body` under `secret`.
pub fn signature_header(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Constant-time check of a `sha256=…` header against `body` (the sandbox uses it).
pub fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        return false;
    };
    if hex_sig.bytes().any(|b| b.is_ascii_uppercase()) {
        return false;
    }
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// The send time for `X-Timestamp`: RFC 3339 UTC with `Z`, whole seconds.
pub fn send_timestamp() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_rfc4231_test_case_2() {
        // RFC 4231, test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            signature_header(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn verify_accepts_only_the_exact_body() {
        let h = signature_header(b"whs_k", b"{\"a\":1}");
        assert!(verify(b"whs_k", b"{\"a\":1}", &h));
        assert!(!verify(b"whs_k", b"{\"a\": 1}", &h));
        assert!(!verify(b"whs_other", b"{\"a\":1}", &h));
        assert!(!verify(b"whs_k", b"{\"a\":1}", &h.to_uppercase()));
    }

    #[test]
    fn send_timestamp_is_utc_z() {
        let t = send_timestamp();
        assert!(t.ends_with('Z') && t.len() == 20, "{t}");
    }
}
