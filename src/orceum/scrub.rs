//! Secrets out of text that came from outside: an Orceum (or proxy) answer that echoes the
//! request's headers would otherwise carry `X-Orceum-Webhook-Secret: whs_…` into an ERROR log
//! line and the `orceum.response` dead-letter header.
//!
//! Every app secret is `whs_` followed by visible ASCII (`orceum::app` refuses anything else),
//! so replacing each `whs_` and the visible-ASCII run after it covers every configured secret,
//! and any other app's: what is cut may be a little more than the secret (a closing quote, say),
//! never less.

use std::borrow::Cow;

/// What a secret becomes.
pub const REDACTED: &str = "whs_[redacted]";

/// `text` with every `whs_…` run replaced by [`REDACTED`]; borrowed when there is none.
pub fn scrub_secrets(text: &str) -> Cow<'_, str> {
    if !text.contains("whs_") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("whs_") {
        out.push_str(&rest[..at]);
        out.push_str(REDACTED);
        let after = &rest[at + 4..];
        let run = after.bytes().take_while(|b| b.is_ascii_graphic()).count();
        rest = &after[run..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_echoed_secret_header_is_redacted_and_the_rest_kept() {
        let body = "{\"error\":\"bad\",\"echo\":{\"x-orceum-webhook-secret\":\"whs_live_AbC123\"}}\nX-Orceum-Webhook-Secret: whs_other\r\nok";
        let out = scrub_secrets(body);
        assert!(!out.contains("whs_live"), "{out}");
        assert!(!out.contains("whs_other"), "{out}");
        assert!(out.contains("\"error\":\"bad\""), "{out}");
        assert!(out.ends_with("\r\nok"), "{out}");
        assert!(matches!(scrub_secrets("no secret here"), Cow::Borrowed(_)));
    }

    proptest! {
        /// Any secret the config accepts (`whs_` + visible ASCII), anywhere in any text, never
        /// survives; text without `whs_` is returned unchanged.
        #[test]
        fn no_secret_survives_anywhere_in_any_text(
            before in ".{0,200}",
            after in ".{0,200}",
            secret in "[!-~]{1,64}",
        ) {
            let secret = format!("whs_{secret}");
            let text = format!("{before}{secret}{after}");
            let out = scrub_secrets(&text);
            // The marker itself may look like a short secret (`whs_[`): look outside it.
            prop_assert!(!out.replace(REDACTED, "").contains(&secret), "{out:?}");
            prop_assert!(out.contains(REDACTED), "{out:?}");
        }

        #[test]
        fn text_without_the_prefix_is_unchanged(text in ".{0,300}") {
            prop_assume!(!text.contains("whs_"));
            let out = scrub_secrets(&text);
            prop_assert_eq!(out.as_ref(), text.as_str());
        }
    }
}
