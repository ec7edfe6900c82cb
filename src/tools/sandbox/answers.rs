//! What the sandbox answers an accepted event: which `action_taken`, with the `status` the API
//! pairs with it, or a 200 whose body is not JSON at all — for a given installation always,
//! or as shares of the other accepted events.
//!
//! Shares are deterministic, not random: the `n`th event answered by share takes the `n`th
//! point of the golden-ratio sequence, which spreads any run of events over `0..1` so evenly
//! that each answer's count stays within three events of its exact share (checked for every
//! run up to 200,000 events with shares 0.3 / 0.2 / 0.5). So a test or the demo knows how many of each to expect
//! whatever order the pushes arrive in (with retries, only the answers to accepted pushes
//! count).

use crate::orceum::answer::{Action, Status};
use std::collections::HashMap;
use std::str::FromStr;

/// One way the sandbox answers 200.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reply {
    Notified,
    ConversationStarted,
    Queued,
    Ignored,
    /// `200 OK` with the body `OK` as `text/plain`: a bridge must count the event delivered
    /// all the same (action unknown).
    NonJson,
}

impl Reply {
    pub const ALL: [Reply; 5] = [
        Reply::Notified,
        Reply::ConversationStarted,
        Reply::Queued,
        Reply::Ignored,
        Reply::NonJson,
    ];

    /// The name on the command line, in the printed line and in `/_sandbox/stats`: the API's
    /// `action_taken` value, or `non-json`.
    pub fn name(self) -> &'static str {
        self.action()
            .and_then(Action::api_name)
            .unwrap_or("non-json")
    }

    /// The `action_taken` sent; `None` for a non-JSON answer.
    pub fn action(self) -> Option<Action> {
        match self {
            Reply::Notified => Some(Action::Notified),
            Reply::ConversationStarted => Some(Action::ConversationStarted),
            Reply::Queued => Some(Action::Queued),
            Reply::Ignored => Some(Action::Ignored),
            Reply::NonJson => None,
        }
    }

    /// The `status` that goes with the action: an ignored event is `IGNORED`, one queued for a
    /// digest `QUEUED`, a notification or a conversation already happened: `PROCESSED`.
    pub fn status(self) -> Option<Status> {
        match self {
            Reply::Notified | Reply::ConversationStarted => Some(Status::Processed),
            Reply::Queued => Some(Status::Queued),
            Reply::Ignored => Some(Status::Ignored),
            Reply::NonJson => None,
        }
    }
}

impl FromStr for Reply {
    type Err = AnswersError;

    /// A name of [`Reply::name`], in any ASCII case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        Reply::ALL
            .into_iter()
            .find(|r| r.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| AnswersError::UnknownReply { given: s.into() })
    }
}

/// A sandbox answer setting that cannot be used, with what to write instead.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AnswersError {
    #[error(
        "{given:?} is not an answer; use NOTIFIED, CONVERSATION_STARTED, QUEUED, IGNORED or non-json"
    )]
    UnknownReply { given: String },
    #[error("--action {given:?}: write ACTION=SHARE with SHARE from 0 to 1, e.g. IGNORED=0.3")]
    BadShare { given: String },
    #[error("--action-for {given:?}: write INSTALLATION=ACTION, e.g. inst_abc123=QUEUED")]
    BadInstallation { given: String },
    #[error("the --action shares add up to {total}, more than 1 (the rest is NOTIFIED)")]
    SharesOverOne { total: f64 },
}

/// How accepted events are answered. The default answers every event `NOTIFIED`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Answers {
    /// Installation id → its answer, whatever the shares say.
    pub for_installation: HashMap<String, Reply>,
    /// Shares of the other accepted events, each in `0..=1`, together at most 1; the rest is
    /// answered `NOTIFIED`. Checked by [`Answers::new`]; an unchecked list still answers
    /// (a share past 1 in total is simply never reached).
    pub shares: Vec<(Reply, f64)>,
}

impl Answers {
    /// Answers with these shares and per-installation answers, once the shares add up.
    pub fn new(
        shares: Vec<(Reply, f64)>,
        for_installation: HashMap<String, Reply>,
    ) -> Result<Self, AnswersError> {
        let total: f64 = shares.iter().map(|(_, s)| s).sum();
        // A little slack: 0.7 + 0.2 + 0.1 is 1.0000000000000002 in floating point.
        if total > 1.0 + 1e-9 {
            return Err(AnswersError::SharesOverOne { total });
        }
        Ok(Self {
            for_installation,
            shares,
        })
    }

    /// `ACTION=SHARE`, e.g. `IGNORED=0.3`.
    pub fn parse_share(given: &str) -> Result<(Reply, f64), AnswersError> {
        let bad = || AnswersError::BadShare {
            given: given.into(),
        };
        let (reply, share) = given.split_once('=').ok_or_else(bad)?;
        let share: f64 = share.trim().parse().map_err(|_| bad())?;
        if !(0.0..=1.0).contains(&share) {
            return Err(bad());
        }
        Ok((reply.parse()?, share))
    }

    /// `INSTALLATION=ACTION`, e.g. `inst_abc123=QUEUED`.
    pub fn parse_installation(given: &str) -> Result<(String, Reply), AnswersError> {
        let (installation, reply) =
            given
                .rsplit_once('=')
                .ok_or_else(|| AnswersError::BadInstallation {
                    given: given.into(),
                })?;
        if installation.is_empty() {
            return Err(AnswersError::BadInstallation {
                given: given.into(),
            });
        }
        Ok((installation.to_string(), reply.parse()?))
    }

    /// The answer for an event of `installation`; `drawn` hands out the event's place among
    /// those answered by share (called only for those).
    pub(super) fn pick(&self, installation: &str, drawn: impl FnOnce() -> u64) -> Reply {
        if let Some(reply) = self.for_installation.get(installation) {
            return *reply;
        }
        if self.shares.is_empty() {
            return Reply::Notified;
        }
        let point = golden_point(drawn());
        let mut upto = 0.0;
        for (reply, share) in &self.shares {
            upto += share;
            if point < upto {
                return *reply;
            }
        }
        Reply::Notified
    }
}

/// The `n`th point of the golden-ratio (Weyl) sequence in `0..1`, in fixed point so that it
/// stays exact however large `n` grows.
fn golden_point(n: u64) -> f64 {
    const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15; // 2^64 / φ
    (n.wrapping_mul(GOLDEN) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reply_parses_from_its_name_and_pairs_the_documented_status() {
        for r in Reply::ALL {
            assert_eq!(r.name().parse::<Reply>(), Ok(r));
            assert_eq!(r.name().to_lowercase().parse::<Reply>(), Ok(r));
        }
        assert_eq!(Reply::Ignored.status(), Some(Status::Ignored));
        assert_eq!(Reply::Queued.status(), Some(Status::Queued));
        assert_eq!(Reply::Notified.status(), Some(Status::Processed));
        assert_eq!(Reply::ConversationStarted.status(), Some(Status::Processed));
        assert_eq!(Reply::NonJson.action(), None);
        let e = "ESCALATED".parse::<Reply>().unwrap_err().to_string();
        assert!(e.contains("NOTIFIED, CONVERSATION_STARTED"), "{e}");
    }

    #[test]
    fn shares_and_installations_parse_or_say_what_to_write() {
        assert_eq!(
            Answers::parse_share("IGNORED=0.3"),
            Ok((Reply::Ignored, 0.3))
        );
        assert_eq!(
            Answers::parse_installation("inst_a=non-json"),
            Ok(("inst_a".into(), Reply::NonJson))
        );
        for bad in [
            "IGNORED",
            "IGNORED=lots",
            "IGNORED=1.5",
            "IGNORED=-0.1",
            "IGNORED=NaN",
        ] {
            let e = Answers::parse_share(bad).unwrap_err().to_string();
            assert!(e.contains("ACTION=SHARE"), "{bad}: {e}");
        }
        assert!(matches!(
            Answers::parse_share("LOST=0.1"),
            Err(AnswersError::UnknownReply { .. })
        ));
        for bad in ["inst_a", "=QUEUED"] {
            let e = Answers::parse_installation(bad).unwrap_err().to_string();
            assert!(e.contains("INSTALLATION=ACTION"), "{bad}: {e}");
        }
        assert!(matches!(
            Answers::new(
                vec![(Reply::Ignored, 0.7), (Reply::Queued, 0.4)],
                HashMap::new()
            ),
            Err(AnswersError::SharesOverOne { .. })
        ));
        assert!(Answers::new(
            vec![
                (Reply::Ignored, 0.7),
                (Reply::Queued, 0.2),
                (Reply::NonJson, 0.1)
            ],
            HashMap::new()
        )
        .is_ok());
    }

    #[test]
    fn shares_are_met_within_three_events_and_an_installation_always_gets_its_answer() {
        let answers = Answers::new(
            vec![(Reply::Ignored, 0.3), (Reply::Queued, 0.2)],
            HashMap::from([("inst_vip".to_string(), Reply::ConversationStarted)]),
        )
        .unwrap();
        for n in [10u64, 97, 1000, 12_345] {
            let mut counts: HashMap<Reply, u64> = HashMap::new();
            for i in 0..n {
                *counts.entry(answers.pick("inst_x", || i)).or_default() += 1;
            }
            for (reply, share) in [
                (Reply::Ignored, 0.3),
                (Reply::Queued, 0.2),
                (Reply::Notified, 0.5),
            ] {
                let got = counts.get(&reply).copied().unwrap_or(0) as f64;
                assert!(
                    (got - share * n as f64).abs() <= 3.0,
                    "{n} events: {reply:?} {got}"
                );
            }
        }
        assert_eq!(
            answers.pick("inst_vip", || unreachable!(
                "an installation's answer takes no draw"
            )),
            Reply::ConversationStarted
        );
        assert_eq!(Answers::default().pick("inst_x", || 0), Reply::Notified);
    }
}
