//! Helpers shared by the end-to-end tests: real custody records to log, and copies of logs to tamper with.

use std::path::Path;

use custodia_core::{ActorId, CaseId, CustodyEvent, CustodyRecord, HearingId, Label, Sha256};

/// A custody record of about `approx_len` bytes whose content is fixed by `seed`, so that a test can tell later
/// exactly which bytes belong at an index.
pub fn sample_record(seed: u64, approx_len: usize) -> Vec<u8> {
    let base = CustodyRecord::new(
        CaseId::new("case-e2e").expect("valid id"),
        ActorId::new(format!("acct-{seed}")).expect("valid id"),
        jiff::Timestamp::from_second(1_800_000_000 + (seed % 1_000_000) as i64).expect("in range"),
        Label::new("x").expect("valid label"),
        CustodyEvent::HearingEvent {
            hearing: HearingId::new("hearing-1").expect("valid id"),
            kind: Label::new("segment_sealed").expect("valid label"),
            subject: None,
            detail_sha256: Some(Sha256::of(&seed.to_be_bytes())),
        },
    );
    let overhead = base.to_entry().expect("small record").len() - 1;
    let filler = approx_len.saturating_sub(overhead).clamp(1, Label::MAX_LEN);
    let purpose = format!("{seed}:{}", "p".repeat(filler)).chars().take(filler.max(1)).collect::<String>();
    let record = CustodyRecord { purpose: Label::new(purpose).expect("valid label"), ..base };
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
