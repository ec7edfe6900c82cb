//! An app's rate limit, shared by the replicas that run the same config: each replica takes
//! the share of `rate_limit` that matches the share of the app's work it owns, so the sum over
//! the replicas stays within the limit Orceum enforces for the app.
//!
//! - Kafka: the work is partitions. A replica that owns `k` of the `P` partitions of the topics
//!   feeding an app gets `k/P` of its rate and burst, re-applied after every rebalance (the
//!   consumer group decides who owns what; no store is shared between replicas).
//! - An app only NATS routes feed: `rate_limit.replicas` (default 1) divides it.
//!
//! [`AppRate`] is the limiter (a governor token bucket, rebuilt when the share changes);
//! [`RateShares`] is what the sources report their partitions to.

use crate::config::RateLimitConfig;
use crate::sync::lock;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// The rate and burst one replica may use: `owned/total` of the configured ones. A replica
/// that owns nothing feeding the app keeps one partition's worth (it has no events for the app
/// until it owns some; the limiter must not be empty meanwhile). Burst at least 1.
pub fn scaled(limit: &RateLimitConfig, owned: u32, total: u32) -> (f64, u32) {
    let burst = limit.burst.unwrap_or(limit.per_second).max(1);
    if total == 0 || owned >= total {
        return (f64::from(limit.per_second), burst);
    }
    let share = f64::from(owned.max(1)) / f64::from(total);
    let rate = f64::from(limit.per_second) * share;
    let burst = ((f64::from(burst) * share).floor() as u32).max(1);
    (rate, burst)
}

fn limiter(rate: f64, burst: u32) -> DefaultDirectRateLimiter {
    // `rate` > 0: per_second ≥ 1 (checked by the config) times a share > 0.
    let period = Duration::from_secs_f64(1.0 / rate.max(1e-6));
    let quota = Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
    RateLimiter::direct(quota)
}

/// One app's token bucket at this replica's share of its `rate_limit`.
pub struct AppRate {
    app: String,
    limit: RateLimitConfig,
    current: RwLock<Arc<DefaultDirectRateLimiter>>,
    /// The share in force, `(owned, total)`; `(1, 1)`: all of it.
    share: Mutex<(u32, u32)>,
    /// `orceum_bridge_rate_limit_per_second{app}`: the rate in force on this replica.
    gauge: prometheus::Gauge,
}

impl AppRate {
    pub fn new(app: &str, limit: RateLimitConfig, gauge: prometheus::Gauge) -> Self {
        let (rate, burst) = scaled(&limit, 1, 1);
        gauge.set(rate);
        Self {
            app: app.to_string(),
            limit,
            current: RwLock::new(Arc::new(limiter(rate, burst))),
            share: Mutex::new((1, 1)),
            gauge,
        }
    }

    /// Waits for a token of the bucket in force now.
    pub async fn until_ready(&self) {
        let current = match self.current.read() {
            Ok(l) => l.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        current.until_ready().await;
    }

    /// Takes `owned/total` of the configured limit from now on (a no-op when unchanged).
    /// Events already waiting finish their wait on the bucket they started on.
    pub fn set_share(&self, owned: u32, total: u32, why: &str) {
        {
            let mut share = lock(&self.share);
            if *share == (owned, total) {
                return;
            }
            *share = (owned, total);
        }
        let (rate, burst) = scaled(&self.limit, owned, total);
        let fresh = Arc::new(limiter(rate, burst));
        match self.current.write() {
            Ok(mut l) => *l = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        self.gauge.set(rate);
        tracing::info!(app = %self.app, per_second = rate, burst, owned, total,
            configured = self.limit.per_second,
            "rate limit share: this replica takes {owned} of {total} {why} of the app's rate_limit");
    }

    /// The share in force, `(owned, total)`.
    pub fn share(&self) -> (u32, u32) {
        *lock(&self.share)
    }

    /// A token now, without waiting (tests).
    #[cfg(test)]
    fn try_now(&self) -> bool {
        let current = self
            .current
            .read()
            .map(|l| l.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        current.check().is_ok()
    }
}

/// A Kafka topic of a source: `(source, topic)`.
pub type Feed = (String, String);

/// The partitions each Kafka source owns of each topic, and the apps those topics feed.
pub struct RateShares {
    /// Per rate-limited app fed by Kafka: its limiter and the `(source, topic)`s feeding it.
    fed_by_kafka: Vec<(Arc<AppRate>, Vec<Feed>)>,
    /// `(source, topic)` → `(owned, total)` partitions, as last reported.
    owned: Mutex<HashMap<Feed, (u32, u32)>>,
}

impl RateShares {
    /// Sorts each rate-limited app into fed by Kafka (shared by partitions; `kafka_feeds`:
    /// the topics its routes read) or by NATS only (divided by `rate_limit.replicas` at once).
    pub fn new(
        rates: &BTreeMap<String, Arc<AppRate>>,
        kafka_feeds: &BTreeMap<String, Vec<Feed>>,
    ) -> Self {
        let mut fed_by_kafka = Vec::new();
        for (app, rate) in rates {
            let feeds = kafka_feeds.get(app).cloned().unwrap_or_default();
            if feeds.is_empty() {
                let replicas = rate.limit.replicas.unwrap_or(1).max(1);
                if replicas > 1 {
                    rate.set_share(1, replicas, "replicas (rate_limit.replicas)");
                }
            } else {
                fed_by_kafka.push((rate.clone(), feeds));
            }
        }
        Self {
            fed_by_kafka,
            owned: Mutex::new(HashMap::new()),
        }
    }

    /// A Kafka source's partitions after a rebalance: per topic, `(topic, owned, total)`.
    /// Every app those topics feed takes its new share.
    pub fn report(&self, source: &str, topics: &[(String, u32, u32)]) {
        let mut owned = lock(&self.owned);
        for (topic, k, total) in topics {
            owned.insert((source.to_string(), topic.clone()), (*k, *total));
        }
        for (rate, feeds) in &self.fed_by_kafka {
            if !feeds.iter().any(|(s, _)| s == source) {
                continue;
            }
            let (mut k, mut total) = (0, 0);
            for feed in feeds {
                if let Some((o, t)) = owned.get(feed) {
                    k += o;
                    total += t;
                }
            }
            if total > 0 {
                rate.set_share(k, total, "partitions feeding it");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(per_second: u32, burst: Option<u32>) -> RateLimitConfig {
        RateLimitConfig {
            per_second,
            burst,
            replicas: None,
        }
    }

    #[test]
    fn a_replica_takes_its_share_of_rate_and_burst() {
        let l = limit(90, Some(30));
        assert_eq!(scaled(&l, 6, 6), (90.0, 30));
        assert_eq!(scaled(&l, 2, 6), (30.0, 10));
        assert_eq!(scaled(&l, 1, 6), (15.0, 5));
        assert_eq!(
            scaled(&l, 0, 6),
            (15.0, 5),
            "nothing owned: one partition's worth"
        );
        assert_eq!(scaled(&limit(10, Some(1)), 1, 3).1, 1, "burst at least 1");
        assert_eq!(
            scaled(&limit(5, None), 1, 1),
            (5.0, 5),
            "burst defaults to the rate"
        );
        let shares: f64 = [2, 2, 2].iter().map(|k| scaled(&l, *k, 6).0).sum();
        assert_eq!(shares, 90.0, "the replicas' shares add up to the limit");
    }

    #[test]
    fn a_new_share_rebuilds_the_bucket() {
        let gauge = prometheus::Gauge::new("g", "g").unwrap();
        let rate = AppRate::new("a", limit(100, Some(100)), gauge.clone());
        assert_eq!(gauge.get(), 100.0);
        rate.set_share(1, 4, "partitions");
        assert_eq!(gauge.get(), 25.0);
        assert_eq!(rate.share(), (1, 4));
        // A fresh bucket of 25 (the next token comes 40 ms later).
        assert_eq!((0..30).filter(|_| rate.try_now()).count(), 25);
    }

    #[test]
    fn sources_report_partitions_and_each_app_takes_the_share_of_its_topics() {
        // Routes to a read topics t1 and t2 of source k, routes to b t2; n's read NATS only.
        let feed = |t: &str| ("k".to_string(), t.to_string());
        let kafka_feeds = BTreeMap::from([
            ("a".to_string(), vec![feed("t1"), feed("t2")]),
            ("b".to_string(), vec![feed("t2")]),
        ]);
        let rates: BTreeMap<String, Arc<AppRate>> = ["a", "b", "n"]
            .iter()
            .map(|n| {
                let gauge = prometheus::Gauge::new(format!("g_{n}"), "g").unwrap();
                let mut l = limit(60, None);
                if *n == "n" {
                    l.replicas = Some(3);
                }
                (n.to_string(), Arc::new(AppRate::new(n, l, gauge)))
            })
            .collect();
        let shares = RateShares::new(&rates, &kafka_feeds);
        assert_eq!(rates["n"].share(), (1, 3), "NATS only: divided by replicas");
        assert_eq!(
            rates["a"].share(),
            (1, 1),
            "all of it until the first assignment"
        );
        shares.report("k", &[("t1".into(), 1, 4), ("t2".into(), 1, 2)]);
        assert_eq!(rates["a"].share(), (2, 6), "t1 and t2 both feed a");
        assert_eq!(rates["b"].share(), (1, 2), "only t2 feeds b");
        shares.report("k", &[("t2".into(), 2, 2)]);
        assert_eq!(rates["a"].share(), (3, 6));
        assert_eq!(rates["b"].share(), (2, 2));
    }
}
