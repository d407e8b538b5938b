//! A request dropped part way (its client gone, its connection taken back by a newcomer) loses no custody record
//! and breaks no chain: a live review once found three export records of one artefact all naming the same `prior`,
//! because requests were dropped between their ledger append and its index, and the next record chained past them.
//! Here downloads and exports of one artefact are dropped at every moment of their work, many at once, and then
//! every record about the artefact in the ledger is in its timeline, each chained to the one before.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{As, TestGateway};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_dropped_midway_leave_every_record_indexed_and_chained() {
    // 320 requests from one member: past the default budget of recorded steps a minute.
    let gateway = TestGateway::start_with(|config| config.quotas.custody_records_per_minute = 10_000).await;
    let (account, session) = gateway.person("prosecutor", "IT").await;
    gateway.case("c1").await;
    gateway.member("c1", &account, "prosecutor").await;
    let uploaded = gateway.upload("c1", "purpose=review&filename=a.bin", As::Session(&session), vec![7; 4096]).await;
    let artefact = uploaded.json()["artefact"].as_str().expect("an artefact id").to_owned();
    let download = format!("/api/v1/artefacts/{artefact}/content?purpose=review");
    let export = format!("/api/v1/artefacts/{artefact}/exports?purpose=review");

    // How long a whole request takes here and now, eight at once as below (a busy machine makes it longer): the
    // drops are spread over it.
    let timed = 8;
    let whole = {
        let (gateway, session, export, download) = (&gateway, &session, &export, &download);
        let requests = (0..timed as u64).map(|n| async move {
            let started = std::time::Instant::now();
            let reply = if n % 4 == 0 {
                gateway.call("POST", export, Some(As::Session(session)), Value::Null).await
            } else {
                gateway.get(download, Some(As::Session(session))).await
            };
            assert_eq!(reply.status.as_u16(), 200, "{}", String::from_utf8_lossy(&reply.body));
            started.elapsed()
        });
        futures::future::join_all(requests).await.into_iter().max().unwrap()
    };

    // Rounds of eight requests at once, each dropped after a different wait, from none to half again as long as
    // a whole request took: before its record, between its append and its index, after both.
    let mut finished = 0;
    for round in 0..40u64 {
        let (gateway, session, export, download) = (&gateway, &session, &export, &download);
        let requests = (0..8u64).map(|n| {
            let wait = whole * ((round * 8 + n) % 48) as u32 / 32;
            let request = async move {
                if n % 4 == 0 {
                    gateway.call("POST", export, Some(As::Session(session)), Value::Null).await
                } else {
                    gateway.get(download, Some(As::Session(session))).await
                }
            };
            async move { tokio::time::timeout(wait, request).await.is_ok() }
        });
        finished += futures::future::join_all(requests).await.into_iter().filter(|done| *done).count();
    }

    // Recording goes on after a request is dropped: wait until the ledger has not grown for two seconds. (A record
    // later still is left out of both counts below: it is appended and indexed in one transaction.)
    let mut size = gateway.ledger_size();
    let mut still = 0;
    while still < 4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = gateway.ledger_size();
        still = if now == size { still + 1 } else { 0 };
        size = now;
    }
    let mut in_ledger = Vec::new();
    for index in 0..size {
        let record = gateway.ledger_record(index).await;
        if record["event"]["artefact"] == artefact.as_str() {
            in_ledger.push((index, record["prior"].as_u64()));
        }
    }
    let timeline = gateway.get(&format!("/api/v1/artefacts/{artefact}/timeline"), Some(As::Session(&session))).await;
    let indexed: Vec<u64> = timeline.json()["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|entry| entry["ledger_index"].as_u64().expect("an index"))
        .filter(|index| *index < size)
        .collect();
    // The registration, the timed downloads and those that finished are recorded: some dropped ones must be too.
    assert!(
        in_ledger.len() > 1 + timed + finished,
        "some dropped requests were recorded: {} records, {finished} finished (a whole request took {whole:?})",
        in_ledger.len()
    );
    assert_eq!(indexed, in_ledger.iter().map(|(index, _)| *index).collect::<Vec<_>>(), "every record is indexed");
    let mut prior = None;
    for (index, named) in in_ledger {
        assert_eq!(named, prior, "record {index} chains to the one before");
        prior = Some(index);
    }
}
