//! Appends custody records to a local log as fast as it can and prints `<index> <seed>` for each append the
//! log acknowledged, for the crash test to kill at a random moment. Usage: `append_loop <log-dir> <key-file> <first-seed>`

use std::io::Write as _;

use anyhow::Context as _;
use custodia_ledger::{Log, LogOptions, LogSigner};

const WORKERS: u64 = 64;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: append_loop <log-dir> <key-file> <first-seed>";
    let dir = args.next().context(usage)?;
    let key = std::fs::read_to_string(args.next().context(usage)?)?;
    let first_seed: u64 = args.next().context(usage)?.parse()?;

    let log = Log::open_local(dir.as_ref(), LogSigner::from_skey(&key)?, LogOptions::default()).await?;
    let (acks, mut acked) = tokio::sync::mpsc::unbounded_channel();
    for worker in 0..WORKERS {
        let (log, acks) = (log.clone(), acks.clone());
        tokio::spawn(async move {
            for n in 0.. {
                let seed = first_seed + n * WORKERS + worker;
                let index = log.append(custodia_tests::sample_record(seed, 600)).await.expect("append");
                if acks.send((index, seed)).is_err() {
                    return;
                }
            }
        });
    }
    drop(acks);
    let mut out = std::io::stdout().lock();
    while let Some((index, seed)) = acked.recv().await {
        writeln!(out, "{index} {seed}")?;
        out.flush()?;
    }
    Ok(())
}
