//! How fast evidence crosses a border: one artefact sent from one gateway to another on loopback, beside a plain
//! upload of the same file to the sending gateway, measured in the same run.
//!
//! `cargo bench -p custodia-server --bench transfer` starts two release `custodia` binaries that pin each other as
//! partners (each one's `custodia partners card` in the other's registry), uploads a pseudo-random file (1 GiB) to
//! the first as a provider would (`curl -T`, its SHA-256 stated), then sends it to the second and waits until the
//! sender holds the receiver's `Delivery` evidence: the court bundle's head made and put in the offer, submitted,
//! offered, the payload sent from the store in 8 MiB signed chunks (each synced by the receiver before it is
//! counted), the whole bundle verified with the sender's pinned key, the payload linked into the receiver's store
//! and taken into its custody, and every evidence logged and checked on both sides.
//!
//! Goal: the transfer at least 0.7x the plain upload's throughput. The receiver must also write the payload durably
//! to its disk, so the disk's own sequential write (then fsync) of the same size, in the same run, is printed beside
//! it too.
//!
//! Both figures swing by a fifth from one try to the next on a shared 2-core machine, so each is tried several
//! times (a new file each round: an upload, then its transfer) and the best of each is compared. A transfer ends at
//! the time the sender logged its `Delivery` (polling its state only says that it has ended).
//!
//! Tuning, by environment variable: `TRANSFER_BENCH_BYTES` (the artefact's size, 1073741824) and
//! `TRANSFER_BENCH_ROUNDS` (3).
#![allow(clippy::print_stdout)]

mod gateway;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use custodia_benchkit::{
    BoxError, Headline, Table, add_to_summary, env_or, mb_per_s, rate, sequential_write, size_text, write_pseudo_random,
};
use gateway::{CASE, Server, call, free_port, sample, set_up, sha256sum, text_field, upload};
use serde_json::{Value, json};

const DEFAULT_BYTES: u64 = 1 << 30;
const DEFAULT_ROUNDS: u64 = 3;
/// The transfer's throughput at least this share of the plain upload's.
const GOAL_RATIO: f64 = 0.7;
/// How long a transfer may take before the benchmark gives up.
const PATIENCE: Duration = Duration::from_secs(1800);

/// One gateway's name, jurisdiction and port.
struct Side {
    name: &'static str,
    jurisdiction: &'static str,
    port: u16,
}

impl Side {
    fn env(&self, registry: &Path) -> Vec<(&'static str, String)> {
        vec![
            ("CUSTODIA_ORIGIN", format!("{}.custodia.bench/log", self.name)),
            ("CUSTODIA_PARTNER_NAME", self.name.into()),
            ("CUSTODIA_JURISDICTION", self.jurisdiction.into()),
            ("CUSTODIA_PUBLIC_URL", format!("http://127.0.0.1:{}", self.port)),
            ("CUSTODIA_PARTNERS", registry.display().to_string()),
            ("CUSTODIA_TRANSFER_RETRY_SECONDS", "1".into()),
        ]
    }

    /// `custodia partners card` with this side's settings and data.
    fn card(&self, binary: &Path, data_dir: &Path, registry: &Path) -> Result<Value, BoxError> {
        std::fs::create_dir_all(data_dir)?;
        let output = Command::new(binary)
            .args(["partners", "card"])
            .env("CUSTODIA_DATA_DIR", data_dir)
            .envs(self.env(registry))
            .output()?;
        if !output.status.success() {
            return Err(format!("custodia partners card: {}", String::from_utf8_lossy(&output.stderr)).into());
        }
        Ok(serde_json::from_slice(&output.stdout)?)
    }
}

fn main() -> Result<(), BoxError> {
    let bytes: u64 = env_or("TRANSFER_BENCH_BYTES", DEFAULT_BYTES)?;
    let rounds: u64 = env_or("TRANSFER_BENCH_ROUNDS", DEFAULT_ROUNDS)?.max(1);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let binary = Path::new(env!("CARGO_BIN_EXE_custodia"));
    let dir = tempfile::Builder::new().prefix("transfer-bench-").tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    println!("custodia transfer benchmark: {} between two gateways on loopback, {cores} cores", size_text(bytes));

    let input = dir.path().join("evidence.webm");

    let sender = Side { name: "tn-tunis", jurisdiction: "TN", port: free_port() };
    let receiver = Side { name: "it-catania", jurisdiction: "IT", port: free_port() };
    let (sender_data, receiver_data) = (dir.path().join("tunis"), dir.path().join("catania"));
    let (sender_registry, receiver_registry) = (dir.path().join("tunis.json"), dir.path().join("catania.json"));
    let sender_card = sender.card(binary, &sender_data, &sender_registry)?;
    let receiver_card = receiver.card(binary, &receiver_data, &receiver_registry)?;
    std::fs::write(&sender_registry, json!({ "partners": [receiver_card] }).to_string())?;
    std::fs::write(&receiver_registry, json!({ "partners": [sender_card] }).to_string())?;
    let mut sending = Server::start_on(binary, &sender_data, sender.port, &sender.env(&sender_registry))?;
    let mut receiving = Server::start_on(binary, &receiver_data, receiver.port, &receiver.env(&receiver_registry))?;
    // The machine's own limit: the receiver must write the whole payload to its disk, durably.
    let disk = sequential_write(&dir.path().join("disk-write"), bytes)?;
    println!("plain write of the same size to the disk, then fsync: {}", mb_per_s(disk));
    let outcome = set_up(&sending, dir.path()).and_then(|token| {
        (0..rounds)
            .map(|round| {
                write_pseudo_random(&input, bytes, 0x7a5f_e12c + round)?;
                let digest = sha256sum(&input)?;
                run(&sending, &receiving, dir.path(), &token, &input, &digest, bytes)
            })
            .collect::<Result<Vec<Measured>, BoxError>>()
    });
    let (sender_log, receiver_log) = (sending.stop(), receiving.stop());
    let rounds = match outcome {
        Ok(measured) => measured,
        Err(err) => {
            println!(
                "the benchmark failed: {err}\n-- sender's log --\n{sender_log}\n-- receiver's log --\n{receiver_log}"
            );
            return Err(err);
        }
    };
    report(bytes, disk, &rounds);
    // Where the time went: each side's transfer steps, as logged.
    for (side, log) in [("sender", &sender_log), ("receiver", &receiver_log)] {
        for line in log.lines().filter(|line| line.contains("custodia_service::transfers")) {
            println!("{side}: {}", line.chars().take(160).collect::<String>());
        }
    }
    Ok(())
}

struct Measured {
    upload: Duration,
    transfer: Duration,
    sender_peak: u64,
    receiver_peak: u64,
}

/// One round: `input` uploaded to the sender, then sent to the receiver.
fn run(
    sending: &Server,
    receiving: &Server,
    dir: &Path,
    token: &str,
    input: &Path,
    digest: &str,
    bytes: u64,
) -> Result<Measured, BoxError> {
    let (uploaded, _) = upload(sending, dir, input, digest, bytes, token)?;
    println!(
        "plain upload to the sender: {} in {:.2} s",
        mb_per_s(rate(bytes, uploaded.wall)),
        uploaded.wall.as_secs_f64()
    );
    let listed = call(
        "GET",
        &format!("{}/api/v1/cases/{CASE}/artefacts", sending.base),
        &Value::Null,
        &["-H", &format!("Authorization: Bearer {token}")],
        200,
    )?;
    let artefact = listed
        .as_array()
        .and_then(|list| list.iter().find(|artefact| artefact["sha256"] == digest))
        .ok_or("the artefact uploaded is not listed")?;
    let artefact = text_field(artefact, "id")?;
    // Sending is a `manage` step: the provider's session, not its read+write token.
    let session = ["-b", &*Box::leak(dir.join("user.cookies").display().to_string().into_boxed_str())];
    let transfers = format!("{}/api/v1/artefacts/{artefact}/transfers", sending.base);
    let started = Instant::now();
    let started_at = jiff::Timestamp::now();
    let sent =
        call("POST", &transfers, &json!({ "partner": "it-catania", "purpose": "transfer benchmark" }), &session, 202)?;
    let id = text_field(&sent, "id")?;
    let (mut sender_peak, mut receiver_peak) = (0, 0);
    loop {
        sender_peak = sender_peak.max(sample(sending.pid())?.rss);
        receiver_peak = receiver_peak.max(sample(receiving.pid())?.rss);
        let listed = call("GET", &transfers, &Value::Null, &session, 200)?;
        let transfer = listed
            .as_array()
            .and_then(|list| list.iter().find(|t| t["id"] == id.as_str()))
            .cloned()
            .ok_or("the transfer is not listed")?;
        match transfer["stage"].as_str() {
            Some("delivered") => break,
            Some("sending") if started.elapsed() < PATIENCE => std::thread::sleep(Duration::from_millis(100)),
            stage => {
                return Err(format!(
                    "the transfer is {stage:?} after {:.0} s: {transfer}",
                    started.elapsed().as_secs_f64()
                )
                .into());
            }
        }
    }
    let transfer = delivered_at(&sending.log_text(), &id)
        .and_then(|at| Duration::try_from(at.duration_since(started_at)).ok())
        .unwrap_or_else(|| started.elapsed());
    println!(
        "transfer to the receiver, until Delivery: {} in {:.2} s",
        mb_per_s(rate(bytes, transfer)),
        transfer.as_secs_f64()
    );
    Ok(Measured { upload: uploaded.wall, transfer, sender_peak, receiver_peak })
}

/// When the sender logged transfer `id` delivered, from its log.
fn delivered_at(log: &str, id: &str) -> Option<jiff::Timestamp> {
    let line = log
        .lines()
        .find(|line| line.contains("transfer moved on") && line.contains(id) && line.contains("delivered"))?;
    line.split_whitespace().next()?.parse().ok()
}

fn report(bytes: u64, disk: f64, rounds: &[Measured]) {
    let best = |of: fn(&Measured) -> Duration| rounds.iter().map(of).min().unwrap_or_default();
    let (upload, transfer) = (rate(bytes, best(|m| m.upload)), rate(bytes, best(|m| m.transfer)));
    let all = |of: fn(&Measured) -> Duration| {
        rounds.iter().map(|m| mb_per_s(rate(bytes, of(m)))).collect::<Vec<_>>().join(", ")
    };
    println!("best of {}: uploads {}; transfers {}", rounds.len(), all(|m| m.upload), all(|m| m.transfer));
    let measured = Measured {
        upload: best(|m| m.upload),
        transfer: best(|m| m.transfer),
        sender_peak: rounds.iter().map(|m| m.sender_peak).max().unwrap_or_default(),
        receiver_peak: rounds.iter().map(|m| m.receiver_peak).max().unwrap_or_default(),
    };
    let ratio = transfer / upload;
    let mut table = Table::new(["measurement", "this run", "peer (same run)", "ratio"]);
    table.row([
        format!("transfer {} to a partner, until Delivery", size_text(bytes)),
        mb_per_s(transfer),
        format!("plain upload {}", mb_per_s(upload)),
        format!("{ratio:.2} (goal >= {GOAL_RATIO})"),
    ]);
    table.row([
        format!("transfer {} to a partner, until Delivery", size_text(bytes)),
        mb_per_s(transfer),
        format!("disk write + fsync {}", mb_per_s(disk)),
        format!("{:.2}", transfer / disk),
    ]);
    table.row(["sender peak RSS while sending".into(), size_text(measured.sender_peak), String::new(), String::new()]);
    table.row([
        "receiver peak RSS while receiving".into(),
        size_text(measured.receiver_peak),
        String::new(),
        String::new(),
    ]);
    println!("\n== custodia transfer: results ==");
    table.print();
    let headlines = [
        Headline {
            measurement: format!("transfer {} between two gateways, until Delivery", size_text(bytes)),
            figure: mb_per_s(transfer),
            against: format!("plain upload of the same file, {}", mb_per_s(upload)),
            ratio: format!("{ratio:.2} (goal >= {GOAL_RATIO})"),
        },
        Headline {
            measurement: format!("transfer {} between two gateways, until Delivery", size_text(bytes)),
            figure: mb_per_s(transfer),
            against: format!("disk write + fsync of the same size, {}", mb_per_s(disk)),
            ratio: format!("{:.2}", transfer / disk),
        },
    ];
    if let Err(err) = add_to_summary("transfer", &headlines) {
        println!("could not add to the summary: {err}");
    }
}
