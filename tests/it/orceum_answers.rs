//! What Orceum answers is counted, end to end: a real Kafka-protocol broker (Tansu, started by
//! scripts/test), the bridge in process, and the sandbox answering each installation with one
//! `action_taken` — or with a 200 that is not JSON. Every event is delivered and committed
//! whatever the answer said, and `orceum_actions_total` counts each answer exactly once.

use crate::common::*;
use crate::harness::*;
use orceum_bridge::tools::sandbox::{Answers, Faults, Reply};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_action_taken_and_a_non_json_answer_are_counted_exactly_and_all_delivered() {
    // inst_0 … inst_4, `per` events each, in one partition.
    let per = 40;
    let answers = [
        ("inst_0", Reply::Notified, "notified"),
        ("inst_1", Reply::ConversationStarted, "conversation_started"),
        ("inst_2", Reply::Queued, "queued"),
        ("inst_3", Reply::Ignored, "ignored"),
        ("inst_4", Reply::NonJson, "unknown"),
    ];
    let n = per * answers.len();
    let topic = unique("answers");
    let group = unique("g-answers");
    create_topic(&topic, 1).await;
    produce(&topic, keyed_records(n, answers.len(), 1)).await;
    let (sandbox, _stop) = start_sandbox(Faults::default()).await;
    sandbox.set_answers(Answers {
        for_installation: answers
            .iter()
            .map(|(inst, reply, _)| (inst.to_string(), *reply))
            .collect::<HashMap<_, _>>(),
        shares: Vec::new(),
    });
    let yaml = config(
        &sandbox.base_url(),
        &kafka_brokers(),
        &group,
        &route("all", &topic, "a", None),
        "  commit_interval: 200ms\n",
    );
    let bridge = spawn_bridge(&yaml);
    let delivered = || {
        counter(
            &bridge.metrics_text(),
            "orceum_bridge_events_delivered_total",
            "app=\"a\"",
        )
    };
    let all = wait_until(Duration::from_secs(120), || delivered() >= n as u64).await;
    let committed = wait_until(Duration::from_secs(30), || {
        committed_offsets(&group, &topic, 1) == [Some(n as i64)]
    })
    .await;
    let metrics = bridge.metrics_text();
    let by_action: BTreeMap<&str, u64> = answers
        .iter()
        .map(|(_, _, label)| {
            let series = format!("action=\"{label}\"");
            (
                *label,
                counter(&metrics, "orceum_bridge_orceum_actions_total", &series),
            )
        })
        .collect();
    let s = seen(&sandbox);
    let stats = sandbox.stats();
    bridge.stop().await;

    let delivered = counter(&metrics, "orceum_bridge_events_delivered_total", "");
    assert!(all, "only {delivered} of {n} delivered");
    assert!(
        committed,
        "committed {:?}",
        committed_offsets(&group, &topic, 1)
    );
    assert_eq!((s.unique(), s.duplicates()), (n, 0));
    assert_eq!(delivered, n as u64);
    for (inst, reply, label) in answers {
        assert_eq!(
            by_action[label], per as u64,
            "{inst} answered {reply:?}: {metrics}"
        );
        assert_eq!(stats.by_action.get(reply.name()), Some(&(per as u64)));
    }
    assert_eq!(
        counter(&metrics, "orceum_bridge_orceum_actions_total", ""),
        n as u64,
        "one count per delivered event"
    );
}
