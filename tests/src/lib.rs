//! Helpers shared by the end-to-end tests: real custody records to log, and copies of logs to tamper with.

pub mod failing_store;
pub mod garage;
pub mod leftovers;
pub mod moto;
pub mod postgres;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Mutex;

use custodia_core::{ActorId, Commitment, CustodyEvent, CustodyRecord, HearingId, Label, Salt, Sha256};

/// A loopback port free now, for a server a test starts, and not handed out before in this test process. The port
/// is found by binding port 0 and letting the socket go, so the kernel may give the same one again to the next
/// caller; two servers of one test (two gateways, garage's three listeners) would then race for it, and one would
/// fail to start.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .expect("a free port");
        if HANDED_OUT.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(port) {
            return port;
        }
    }
}

/// A custody record of about `approx_len` bytes (at least the size of a record with its commitments) whose
/// content is fixed by `seed`, so that a test can tell later exactly which bytes belong at an index.
pub fn sample_record(seed: u64, approx_len: usize) -> Vec<u8> {
    let salt = |n: u64| Salt::from_bytes(*Sha256::of(&[seed.to_be_bytes(), n.to_be_bytes()].concat()).as_bytes());
    let base = CustodyRecord::new(
        Commitment::new(&salt(0), "case", "case-e2e"),
        ActorId::new(format!("acct-{seed}")).expect("valid id"),
        jiff::Timestamp::from_second(1_800_000_000 + (seed % 1_000_000) as i64).expect("in range"),
        Commitment::new(&salt(1), "purpose", "x"),
        CustodyEvent::HearingEvent {
            hearing: HearingId::new("hearing-1").expect("valid id"),
            kind: Label::new("k").expect("valid label"),
            subject: None,
            detail: Some(Commitment::new(&salt(2), "detail", &Sha256::of(&seed.to_be_bytes()).to_hex())),
        },
    );
    let overhead = base.to_entry().expect("small record").len() - 1;
    let filler = approx_len.saturating_sub(overhead).clamp(1, Label::MAX_LEN);
    let kind = format!("{seed}:{}", "k".repeat(filler)).chars().take(filler.max(1)).collect::<String>();
    let CustodyEvent::HearingEvent { hearing, subject, detail, .. } = base.event.clone() else { unreachable!() };
    let event = CustodyEvent::HearingEvent { hearing, kind: Label::new(kind).expect("valid label"), subject, detail };
    let record = CustodyRecord { event, ..base };
    record.to_entry().expect("record fits an entry")
}

/// Copies directory `from` and everything below it to `to`, so that a test can tamper with a copy of a log. A live
/// log deletes superseded partial tiles in the background, so files that vanish during the copy are skipped.
pub fn copy_dir_all(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    let entries = match std::fs::read_dir(from) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        entries => entries?,
    };
    for entry in entries {
        let entry = entry?;
        let target = to.join(entry.file_name());
        let copied = if entry.file_type()?.is_dir() {
            copy_dir_all(&entry.path(), &target)
        } else {
            std::fs::copy(entry.path(), target).map(drop)
        };
        if let Err(err) = copied
            && err.kind() != std::io::ErrorKind::NotFound
        {
            return Err(err);
        }
    }
    Ok(())
}

/// `len` pseudo-random bytes fixed by `seed` (xorshift): test data that does not compress and is the same each run.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}
