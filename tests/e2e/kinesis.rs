//! Emulator-backed tests of the Kinesis connector against the local Kinesis server started by
//! `scripts/test.sh` (kinesis-local, the kinesis-mock engine). Without a server they are
//! skipped, except under CI or with `LAKETIDE_EMULATORS=1`, where a missing server fails.

use crate::common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use common::kinesis::*;
use common::proxy::{Action, FaultProxy, Rule};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use laketide_connectors::Options;
use laketide_connectors::kinesis::{
    KinesisSink, KinesisSinkConfig, KinesisSource, ShardPosition, kpl,
};
use laketide_engine::{Sink, Source};

#[tokio::test]
async fn multi_shard_streams_are_read_once_in_per_key_order_with_metadata() {
    let Some(endpoint) = kinesis_server() else {
        return;
    };
    let kinesis = client(&endpoint);
    let stream = create_stream(&kinesis, "multi", 4).await;
    put_numbered(&kinesis, &stream, 16, 0, 25).await;
    let mut s = source(
        &endpoint,
        &stream,
        &[("start_position", "trim_horizon")],
        BTreeMap::new(),
    );
    s.open().await.unwrap();
    let mut d = Delivered::default();
    poll_rows(&mut s, &mut d, 400).await;
    expect_no_more_rows(&mut s, &mut d).await;
    let shards: HashSet<&str> = d.rows.iter().map(|r| r.2.as_str()).collect();
    assert_eq!(shards.len(), 4, "16 keys spread over all 4 shards");
    for (key, numbers) in d.per_key() {
        assert_eq!(
            numbers,
            (0..25).collect::<Vec<_>>(),
            "key {key}: in order, once"
        );
    }
    for (key, _, _, pk) in &d.rows {
        assert_eq!(key, pk, "partition_key metadata");
    }
    // Every shard was announced before its first rows.
    for shard in shards {
        let started = d
            .events
            .iter()
            .position(|e| *e == format!("started:{shard}"));
        let rows = d.events.iter().position(|e| *e == format!("rows:{shard}"));
        assert!(started < rows, "{:?}", d.events);
    }
    // Positions name every shard.
    assert_eq!(s.positions().len(), 4);
    assert!(
        s.positions()
            .values()
            .all(|p| matches!(p, ShardPosition::After { .. }))
    );
}

#[tokio::test]
async fn a_split_during_the_run_reads_parents_before_children() {
    let Some(endpoint) = kinesis_server() else {
        return;
    };
    let kinesis = client(&endpoint);
    let stream = create_stream(&kinesis, "split", 1).await;
    put_numbered(&kinesis, &stream, 8, 0, 10).await;
    let mut s = source(
        &endpoint,
        &stream,
        &[("start_position", "trim_horizon")],
        BTreeMap::new(),
    );
    s.open().await.unwrap();
    let mut d = Delivered::default();
    poll_rows(&mut s, &mut d, 80).await;

    let shards = kinesis
        .list_shards()
        .stream_name(&stream)
        .send()
        .await
        .unwrap();
    let parent = shards.shards()[0].shard_id().to_string();
    // Split at the middle of the hash key range.
    kinesis
        .split_shard()
        .stream_name(&stream)
        .shard_to_split(&parent)
        .new_starting_hash_key("170141183460469231731687303715884105728")
        .send()
        .await
        .unwrap();
    wait_active(&kinesis, &stream).await;
    put_numbered(&kinesis, &stream, 8, 10, 20).await;
    poll_rows(&mut s, &mut d, 160).await;
    expect_no_more_rows(&mut s, &mut d).await;

    for (key, numbers) in d.per_key() {
        assert_eq!(
            numbers,
            (0..20).collect::<Vec<_>>(),
            "key {key}: order holds across the split"
        );
    }
    let finished = d
        .events
        .iter()
        .position(|e| *e == format!("finished:{parent}"))
        .unwrap_or_else(|| panic!("the parent finished: {:?}", d.events));
    let children: HashSet<&str> = d
        .rows
        .iter()
        .map(|r| r.2.as_str())
        .filter(|s| *s != parent)
        .collect();
    assert_eq!(children.len(), 2, "both children were read");
    for child in children {
        let started = d
            .events
            .iter()
            .position(|e| *e == format!("started:{child}"))
            .unwrap();
        assert!(
            finished < started,
            "child {child} started after the parent finished: {:?}",
            d.events
        );
    }
    assert_eq!(s.positions()[&parent], ShardPosition::Finished);
}

#[tokio::test]
async fn a_restart_resumes_after_the_saved_positions_with_no_duplicate_and_no_gap() {
    let Some(endpoint) = kinesis_server() else {
        return;
    };
    let kinesis = client(&endpoint);
    let stream = create_stream(&kinesis, "resume", 2).await;
    put_numbered(&kinesis, &stream, 6, 0, 10).await;
    let mut s = source(
        &endpoint,
        &stream,
        &[("start_position", "trim_horizon")],
        BTreeMap::new(),
    );
    s.open().await.unwrap();
    let mut first = Delivered::default();
    poll_rows(&mut s, &mut first, 60).await;
    let saved = s.positions().clone();
    let json = serde_json::to_string(&saved).unwrap();
    drop(s);

    // More records arrive while the pipeline is down, among them a KPL aggregate.
    put_numbered(&kinesis, &stream, 6, 10, 15).await;
    let users: Vec<String> = (15..25)
        .map(|n| format!("{{\"key\":\"agg\",\"n\":{n}}}"))
        .collect();
    let pairs: Vec<(&str, &[u8])> = users.iter().map(|u| ("agg", u.as_bytes())).collect();
    let put = kinesis
        .put_record()
        .stream_name(&stream)
        .partition_key("agg")
        .data(Blob::new(kpl::aggregate(&pairs)))
        .send()
        .await
        .unwrap();

    // `latest` is ignored for shards with a saved position.
    let restored: BTreeMap<String, ShardPosition> = serde_json::from_str(&json).unwrap();
    let mut s = source(
        &endpoint,
        &stream,
        &[("start_position", "latest")],
        restored,
    );
    s.open().await.unwrap();
    let mut second = Delivered::default();
    poll_rows(&mut s, &mut second, 40).await;
    expect_no_more_rows(&mut s, &mut second).await;
    let per_key = second.per_key();
    for k in 0..6 {
        assert_eq!(per_key[&format!("k{k}")], (10..15).collect::<Vec<_>>());
    }
    assert_eq!(per_key["agg"], (15..25).collect::<Vec<_>>());
    assert!(
        second
            .rows
            .iter()
            .filter(|r| r.0 == "agg")
            .all(|r| r.3 == "agg")
    );

    // A restart inside the aggregate: user records 0..=3 were delivered before the crash.
    let shard = put.shard_id().to_string();
    let inside = BTreeMap::from([
        (
            shard.clone(),
            ShardPosition::After {
                sequence: put.sequence_number().to_string(),
                sub_sequence: Some(3),
            },
        ),
        // The other shard was read to its end.
        (
            saved.keys().find(|k| **k != shard).unwrap().clone(),
            second_position(&s, &shard),
        ),
    ]);
    drop(s);
    let mut s = source(&endpoint, &stream, &[], inside);
    s.open().await.unwrap();
    let mut third = Delivered::default();
    poll_rows(&mut s, &mut third, 6).await;
    expect_no_more_rows(&mut s, &mut third).await;
    assert_eq!(third.per_key()["agg"], (19..25).collect::<Vec<_>>());
}

/// The position of the shard other than `shard`.
fn second_position(s: &KinesisSource, shard: &str) -> ShardPosition {
    s.positions()
        .iter()
        .find(|(k, _)| k.as_str() != shard)
        .map(|(_, p)| p.clone())
        .unwrap()
}

/// Throttles every third GetRecords (and says the iterator expired once), and fails the
/// odd-numbered records of every first PutRecords attempt (forwarding only the others).
fn flaky_rule() -> (Rule, Arc<AtomicU64>) {
    let calls = Arc::new(AtomicU64::new(0));
    let seen = calls.clone();
    let rule: Rule = Arc::new(move |target: &str, body: &[u8]| {
        if target.ends_with(".GetRecords") {
            let call = seen.fetch_add(1, Ordering::Relaxed);
            if call == 3 {
                return Action::Reply {
                    status: 400,
                    body: r#"{"__type":"ExpiredIteratorException","message":"Iterator expired"}"#
                        .into(),
                };
            }
            // Every third call, not every other one: with two shards polled in turn, "every
            // other call" can hit the same shard every time and starve it.
            if call.is_multiple_of(3) {
                return Action::Reply {
                    status: 400,
                    body: r#"{"__type":"ProvisionedThroughputExceededException","message":"Rate exceeded for shard"}"#.into(),
                };
            }
            return Action::Forward;
        }
        if target.ends_with(".PutRecords") {
            let mut request: serde_json::Value = serde_json::from_slice(body).unwrap();
            let records = request["Records"].as_array().unwrap().clone();
            if records.len() < 2 {
                return Action::Forward;
            }
            let kept: Vec<serde_json::Value> = records.iter().step_by(2).cloned().collect();
            request["Records"] = serde_json::Value::Array(kept);
            let total = records.len();
            return Action::Rewrite {
                body: serde_json::to_vec(&request).unwrap(),
                response: Box::new(move |answer| {
                    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
                    let results = answer["Records"].as_array().unwrap();
                    let mut merged = Vec::new();
                    for i in 0..total {
                        merged.push(if i % 2 == 0 {
                            results[i / 2].clone()
                        } else {
                            serde_json::json!({
                                "ErrorCode": "ProvisionedThroughputExceededException",
                                "ErrorMessage": "Rate exceeded for shard"
                            })
                        });
                    }
                    serde_json::to_vec(&serde_json::json!({
                        "FailedRecordCount": total / 2,
                        "Records": merged
                    }))
                    .unwrap()
                }),
            };
        }
        Action::Forward
    });
    (rule, calls)
}

#[tokio::test]
async fn throttled_reads_and_partly_failed_writes_are_retried_without_loss() {
    let Some(endpoint) = kinesis_server() else {
        return;
    };
    let kinesis = client(&endpoint);
    let stream = create_stream(&kinesis, "throttle", 2).await;
    let (rule, get_calls) = flaky_rule();
    let proxy = FaultProxy::start(&endpoint, rule).await;

    // The sink writes 300 rows through the proxy: half of every first attempt fails.
    let sink_config = KinesisSinkConfig::from_options(
        Options::new([
            ("stream".to_string(), stream.clone()),
            ("endpoint".to_string(), proxy.endpoint.clone()),
            ("region".to_string(), "us-east-1".to_string()),
            ("partition_key".to_string(), "key".to_string()),
            ("max_records_per_request".to_string(), "100".to_string()),
        ])
        .unwrap(),
    )
    .unwrap();
    let mut sink = KinesisSink::new("out", sink_config);
    let schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, true),
        Field::new("n", DataType::Int64, true),
    ]));
    sink.open(schema.clone()).await.unwrap();
    let keys: Vec<String> = (0..300).map(|i| format!("k{}", i % 5)).collect();
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(datafusion::arrow::array::StringArray::from(keys)),
            Arc::new(datafusion::arrow::array::Int64Array::from_iter_values(
                (0..300).map(|i| i / 5),
            )),
        ],
    )
    .unwrap();
    sink.write_batch(batch).await.unwrap();
    let summary = sink.close().await.unwrap();
    assert_eq!(summary.rows_written, 300);
    assert!(
        summary.commits > 3,
        "failed records needed more calls: {summary:?}"
    );
    assert!(proxy.injected.load(Ordering::Relaxed) >= 3);

    // The source reads them back through the proxy, throttled on every third call.
    let mut s = source(
        &proxy.endpoint,
        &stream,
        &[("start_position", "trim_horizon")],
        BTreeMap::new(),
    );
    let status = s.status().unwrap();
    s.open().await.unwrap();
    let mut d = Delivered::default();
    poll_rows(&mut s, &mut d, 300).await;
    expect_no_more_rows(&mut s, &mut d).await;
    for k in 0..5 {
        let mut numbers = d.per_key()[&format!("k{k}")].clone();
        numbers.sort();
        assert_eq!(numbers, (0..60).collect::<Vec<_>>(), "every record once");
    }
    assert!(status.throttles() > 0, "throttles were counted");
    assert!(get_calls.load(Ordering::Relaxed) > 2);
}

#[tokio::test]
async fn a_missing_stream_is_a_clear_error_at_start() {
    let Some(endpoint) = kinesis_server() else {
        return;
    };
    let mut s = source(&endpoint, &common::unique("missing"), &[], BTreeMap::new());
    let e = s.open().await.expect_err("no such stream");
    let text = e.to_string();
    assert!(
        text.contains("ListShards") && text.contains("ResourceNotFoundException"),
        "{text}"
    );
}

#[tokio::test]
async fn an_expired_iterator_at_latest_does_not_skip_what_arrived_meanwhile() {
    let Some(endpoint) = kinesis_server() else {
        return;
    };
    let kinesis = client(&endpoint);
    let stream = create_stream(&kinesis, "expired-latest", 1).await;
    // Counts GetRecords calls; once `expire` is set, the next call says the iterator expired.
    let calls = Arc::new(AtomicU64::new(0));
    let expire = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (seen, flag) = (calls.clone(), expire.clone());
    let rule: Rule = Arc::new(move |target: &str, _body: &[u8]| {
        if target.ends_with(".GetRecords") {
            seen.fetch_add(1, Ordering::Relaxed);
            if flag.swap(false, Ordering::Relaxed) {
                return Action::Reply {
                    status: 400,
                    body: r#"{"__type":"ExpiredIteratorException","message":"Iterator expired"}"#
                        .into(),
                };
            }
        }
        Action::Forward
    });
    let proxy = FaultProxy::start(&endpoint, rule).await;
    let mut s = source(
        &proxy.endpoint,
        &stream,
        &[("start_position", "latest")],
        BTreeMap::new(),
    );
    s.open().await.unwrap();
    let mut d = Delivered::default();
    // The reader holds a LATEST iterator once it has made a call.
    let deadline = Instant::now() + Duration::from_secs(30);
    while calls.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "no GetRecords call");
        let _ = s.poll_next().await.unwrap();
    }
    put_numbered(&kinesis, &stream, 3, 0, 4).await;
    expire.store(true, Ordering::Relaxed);
    poll_rows(&mut s, &mut d, 12).await;
    expect_no_more_rows(&mut s, &mut d).await;
    assert!(!expire.load(Ordering::Relaxed), "the expiry was injected");
    for (key, numbers) in d.per_key() {
        assert_eq!(numbers, (0..4).collect::<Vec<_>>(), "key {key}");
    }
}

#[tokio::test]
async fn at_timestamp_starts_at_the_records_that_arrived_from_then_on() {
    let Some(endpoint) = kinesis_server() else {
        return;
    };
    let kinesis = client(&endpoint);
    let stream = create_stream(&kinesis, "at-timestamp", 1).await;
    put_numbered(&kinesis, &stream, 2, 0, 5).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let from = chrono::Utc::now().to_rfc3339();
    tokio::time::sleep(Duration::from_millis(500)).await;
    put_numbered(&kinesis, &stream, 2, 5, 10).await;
    let mut s = source(
        &endpoint,
        &stream,
        &[
            ("start_position", "at_timestamp"),
            ("start_timestamp", &from),
        ],
        BTreeMap::new(),
    );
    s.open().await.unwrap();
    let mut d = Delivered::default();
    poll_rows(&mut s, &mut d, 10).await;
    expect_no_more_rows(&mut s, &mut d).await;
    for (key, numbers) in d.per_key() {
        assert_eq!(numbers, (5..10).collect::<Vec<_>>(), "key {key}");
    }
}
