//! `custodia`: run the gateway, make its key, and audit custody logs.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use custodia_core::CustodyRecord;
use custodia_ledger::{Checkpoint, LogStore, LogVerifier, SignedCheckpoint, TlogProof, audit_log};
use custodia_server::config::{KeygenConfig, LogFormat, ServeConfig, absolute};
use custodia_server::keys;
use custodia_service::clock::Clock;
use object_store::ObjectStore;
use object_store::path::Path as StorePath;

#[derive(Debug, Parser)]
#[command(name = "custodia", version, about = "Secure evidence-transfer and remote-testimony gateway")]
struct Cli {
    /// How the log on standard error is written: `text` (colours only at a terminal) or `json` (one object a line).
    #[arg(long, env = "CUSTODIA_LOG_FORMAT", value_enum, default_value_t, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway. Makes its key on first start.
    Serve(Box<ServeConfig>),
    /// Make every key the gateway would make on first start, where there is none (the log's signing key, the
    /// witness's, the key that signs requests to partners, the device cookies'), and print the log's public key in
    /// C2SP vkey form. Several gateways of one log share these files. A key is never replaced.
    Keygen(KeygenConfig),
    /// Work with custody logs.
    #[command(subcommand)]
    Log(LogCommand),
    /// Work with partner gateways.
    #[command(subcommand)]
    Partners(PartnersCommand),
    /// Check a court bundle offline: payload hash, manifest signature, every custody record's inclusion proof,
    /// the checkpoint signature, the signing key, that the custody history is complete and in order, and that a
    /// case bundle holds exactly the artefact bundles its case export record lists. The bundle of an artefact
    /// received from a partner gateway carries the provider's chain too: give the keys of both gateways.
    ///
    /// Exits 0 when VALID; 1 when NOT VALID or not a readable bundle; 2 when a --trusted-key, --policy,
    /// --tsa-anchor or --trusted-list is malformed; 3 when
    /// NOT VERIFIED: every check passed, but no key was pinned, so the signer is unknown.
    ///
    /// A bundle's RFC 3161 timestamp is reported on its own line; with --tsa-anchor its token must verify, and with
    /// --trusted-list it is said to be qualified or not.
    Verify {
        /// The bundle (.tar) exported by a gateway, or - to read it from standard input.
        bundle: PathBuf,
        /// The gateway's key (C2SP vkey, or a file holding it), from a source you trust; may be given several
        /// times. Without one, nothing is verified: anyone can sign a bundle with a key of their own.
        #[arg(long = "trusted-key")]
        trusted_keys: Vec<String>,
        /// A witness policy (c2sp.org/tlog-policy) from a source you trust: the checkpoint's cosignatures must meet
        /// its quorum over every record, or the bundle is NOT VALID. Without it, a bundle's own policy is reported
        /// as the bundle's, not one you pinned.
        #[arg(long = "policy")]
        policy: Option<PathBuf>,
        /// A Time-Stamp Authority's trust anchor (a PEM file of one or more certificates), from a source you trust;
        /// may be given several times. The bundle must carry an RFC 3161 token, which must verify and chain to one,
        /// or the bundle is NOT VALID. Without one (or a --trusted-list), a token is reported as present but
        /// unchecked.
        #[arg(long = "tsa-anchor")]
        tsa_anchors: Vec<PathBuf>,
        /// An ETSI TS 119 612 trusted list (XML); may be given several times. A token that chains to the
        /// certificate of a granted QTST service in it is reported as qualified. Its certificates are the anchors
        /// when no --tsa-anchor is given. The list's own XML signature is NOT checked: use a copy you trust.
        #[arg(long = "trusted-list")]
        trusted_lists: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum PartnersCommand {
    /// Print this gateway's partner card (its registry entry, for partners to pin), making its keys if there are
    /// none.
    Card(Box<ServeConfig>),
    /// Send a signed handshake to every partner in the registry (CUSTODIA_PARTNERS), and say whether each side pins
    /// the other as it is. Exits 1 if any partner refused, could not be reached, or pins differently.
    Check(Box<ServeConfig>),
}

#[derive(Debug, Subcommand)]
enum LogCommand {
    /// Audit a log end to end: checkpoint signature, every entry, every tile, the root, and consistency with a
    /// checkpoint seen earlier.
    Verify {
        /// A log directory, or the log's http(s) URL prefix.
        location: String,
        /// The log's public key (C2SP vkey), or a file holding it.
        #[arg(long)]
        key: String,
        /// A checkpoint seen earlier that the log must extend. If the file does not exist yet, it is created.
        #[arg(long)]
        state: Option<PathBuf>,
    },
    /// Check an offline proof (c2sp.org/tlog-proof@v1) that an entry is in a log.
    CheckProof {
        /// The proof file.
        proof: PathBuf,
        /// The entry's bytes.
        #[arg(long)]
        entry: PathBuf,
        /// The log's public key (C2SP vkey), or a file holding it.
        #[arg(long)]
        key: String,
    },
}

fn main() -> std::process::ExitCode {
    // `custodia probe <path>`: the gateway's media probe, run by it as a child under limits (custodia_server::probe).
    // Hidden, and dispatched before anything starts: no runtime threads, no logging, only FFmpeg and the file.
    // `custodia mask <kind> <limits>`: a masking pipeline of a protected witness's media, likewise
    // (custodia_hearings::masking).
    let mut args = std::env::args_os().skip(1);
    match args.next() {
        Some(first) if first == custodia_service::probe::SUBCOMMAND => {
            return custodia_service::probe::child_main(args);
        }
        Some(first) if first == custodia_hearings::masking::SUBCOMMAND => {
            return custodia_hearings::masking::child_main(args);
        }
        _ => {}
    }
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(gateway_main()),
        Err(err) => {
            eprintln!("custodia: could not start the async runtime: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs to standard error in `format`, filtered by `RUST_LOG` or else [`custodia_server::DEFAULT_LOG_FILTER`], and
/// by [`custodia_server::safe_log_filter`] whatever they say.
fn start_logging(format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| custodia_server::DEFAULT_LOG_FILTER.into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let safe = custodia_server::safe_log_filter();
    match format {
        // Colours only for a person at a terminal: a log file or a journal gets plain text, no escape codes.
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).finish().with(safe).init(),
        LogFormat::Json => logs.json().with_ansi(false).flatten_event(true).finish().with(safe).init(),
    }
}

async fn gateway_main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let log_format = cli.log_format;
    start_logging(log_format);
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // An error may quote a bundle or a log (a name in a tar, say): made printable, so that it cannot
            // rewrite what the terminal shows.
            let error = custodia_bundle::printable(&format!("{err:#}"));
            match log_format {
                LogFormat::Text => eprintln!("custodia: {error}"),
                // A log collector reads every line as JSON: the reason the command failed is one more event.
                LogFormat::Json => tracing::error!(error = %error, "custodia failed"),
            }
            match err.downcast_ref::<VerifyFailure>() {
                Some(
                    VerifyFailure::MalformedPin { .. }
                    | VerifyFailure::MalformedPolicy { .. }
                    | VerifyFailure::MalformedTimeTrust { .. },
                ) => std::process::ExitCode::from(2),
                Some(VerifyFailure::UnknownSigner(_)) => std::process::ExitCode::from(3),
                _ => std::process::ExitCode::FAILURE,
            }
        }
    }
}

/// Why `custodia verify` did not say VALID, for its exit code.
#[derive(Debug, thiserror::Error)]
enum VerifyFailure {
    #[error("{bundle} FAILED verification")]
    Invalid { bundle: String },
    #[error("{0} is NOT VERIFIED: no --trusted-key was given, so the signer is unknown")]
    UnknownSigner(String),
    #[error(
        "the --trusted-key {given:?} is malformed, so nothing was checked: {reason}. A gateway key reads \
         name+keyid+base64, as the gateway's /key page shows it; copy it again from your trusted source"
    )]
    MalformedPin { given: String, reason: String },
    #[error("the --policy {given:?} could not be read as a witness policy, so nothing was checked: {reason}")]
    MalformedPolicy { given: String, reason: String },
    #[error("the {flag} {given:?} could not be read, so nothing was checked: {reason}")]
    MalformedTimeTrust { flag: &'static str, given: String, reason: String },
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(config) => serve(*config).await,
        Command::Keygen(config) => {
            let gateway = &config.gateway;
            let witness_name = gateway.witness_name(config.witness_name.as_deref());
            let (signer, files) = keys::load_or_create_every_key(gateway, &witness_name)?;
            for (file, created) in files {
                let verb = if created { "made" } else { "kept existing" };
                eprintln!("{verb} key {}", absolute(&file).display());
            }
            say(&signer.verifier().to_string());
            Ok(())
        }
        Command::Partners(PartnersCommand::Card(config)) => {
            let (card, _) = custodia_server::partner_api::card_for(&config)?;
            say(&serde_json::to_string_pretty(&card)?);
            Ok(())
        }
        Command::Partners(PartnersCommand::Check(config)) => {
            let partnering = custodia_server::partner_api::open_for(&config, Clock::default())?;
            let timeout = std::time::Duration::from_secs(config.witness.timeout_seconds.max(1));
            let mut failed = 0;
            for (name, outcome) in custodia_server::partner_api::check_partners(&partnering, timeout).await {
                use custodia_server::partner_api::HandshakeOutcome;
                match outcome {
                    HandshakeOutcome::Pinned => say(&format!("{name}: ok, each side pins the other as it is")),
                    HandshakeOutcome::Differs(fields) => {
                        failed += 1;
                        say(&format!("{name}: PINNED DIFFERENTLY"));
                        for field in fields {
                            say(&format!("  {field}"));
                        }
                    }
                    HandshakeOutcome::Failed(why) => {
                        failed += 1;
                        say(&format!("{name}: FAILED: {}", custodia_service::error::Chain(&why)));
                    }
                }
            }
            if failed > 0 {
                anyhow::bail!("{failed} partner(s) did not pass the handshake");
            }
            Ok(())
        }
        Command::Log(LogCommand::Verify { location, key, state }) => verify_log(&location, &key, state).await,
        Command::Verify { bundle, trusted_keys, policy, tsa_anchors, trusted_lists } => {
            let time = time_trust(&tsa_anchors, &trusted_lists)?;
            verify_bundle(&bundle, &trusted_keys, policy.as_deref(), time.as_ref())
        }
        Command::Log(LogCommand::CheckProof { proof, entry, key }) => {
            let verifier = read_verifier(&key)?;
            let proof_bytes = std::fs::read(&proof).with_context(|| format!("reading {}", proof.display()))?;
            let entry = std::fs::read(&entry).with_context(|| format!("reading {}", entry.display()))?;
            let signed = TlogProof::parse(&proof_bytes)?.verify(&entry, &[verifier])?;
            say(&format!("OK: entry is in log {} of size {}", signed.checkpoint.origin, signed.checkpoint.size));
            Ok(())
        }
    }
}

/// Command output goes to stdout; diagnostics go to stderr through tracing. A reader that went away (`custodia
/// verify ... | head`) ends the output, not the command: it still finishes, and its exit status still says the
/// verdict.
fn say(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    // Before anything opens a file: the budget below is taken from the limit in force.
    let open_files = custodia_server::listen::raise_open_file_limit();
    let limits = custodia_server::listen::Limits::of(&config.connections, open_files);
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(custodia_server::tls::acceptor(cert, key).await?),
        _ => None,
    };
    let state = custodia_server::startup::open(&config, Clock::default()).await?;
    if let Some(address) = config.metrics_listen {
        serve_metrics(address, state.clone(), &limits).await?;
    }
    let app = custodia_server::app(state);
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    // The figures in force, beside those configured: the open-file limit may have lowered them.
    tracing::info!(
        address = %listener.local_addr()?, tls = tls.is_some(), open_files, max_connections = limits.max_connections,
        max_connections_per_peer = limits.max_connections_per_peer,
        configured_max_connections = config.connections.max_connections,
        configured_max_connections_per_peer = config.connections.max_connections_per_peer, "gateway listening"
    );
    custodia_server::listen::serve(listener, app, tls, limits, shutdown_signal()).await
}

/// Connections the metrics listener holds at once: scrapers are few.
const METRICS_CONNECTIONS: usize = 8;

/// Binds the metrics listener on `address` and serves `/metrics` there until the process ends, under the API's
/// timeouts and a budget of its own.
async fn serve_metrics(
    address: std::net::SocketAddr,
    state: custodia_server::state::AppState,
    api_limits: &custodia_server::listen::Limits,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding the metrics listener {address} (CUSTODIA_METRICS_LISTEN)"))?;
    tracing::info!(address = %listener.local_addr()?, "metrics listening at /metrics");
    let limits = custodia_server::listen::Limits {
        max_connections: METRICS_CONNECTIONS,
        max_connections_per_peer: METRICS_CONNECTIONS,
        trusted_proxies: Vec::new(),
        ..api_limits.clone()
    };
    let router = custodia_server::metrics::router(state);
    tokio::spawn(async move {
        if let Err(err) = custodia_server::listen::serve(listener, router, None, limits, std::future::pending()).await {
            tracing::error!(error = %format_args!("{err:#}"), "the metrics listener stopped");
        }
    });
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = ctrl_c => {}
        _ = async { if let Some(t) = terminate.as_mut() { t.recv().await; } else { std::future::pending::<()>().await } } => {}
    }
    tracing::info!("shutting down");
}

/// What `custodia verify` trusts for time: the --tsa-anchor files and the --trusted-list files, each read under
/// the trusted list's byte budget. `None` when neither was given.
fn time_trust(anchors: &[PathBuf], lists: &[PathBuf]) -> Result<Option<custodia_bundle::TimeTrust>, VerifyFailure> {
    if anchors.is_empty() && lists.is_empty() {
        return Ok(None);
    }
    let read = |flag: &'static str, path: &PathBuf| -> Result<Vec<u8>, VerifyFailure> {
        let malformed =
            |reason: String| VerifyFailure::MalformedTimeTrust { flag, given: path.display().to_string(), reason };
        let file = std::fs::File::open(path).map_err(|err| malformed(err.to_string()))?;
        let mut bytes = Vec::new();
        let budget = custodia_bundle::MAX_TRUSTED_LIST_BYTES as u64 + 1;
        std::io::Read::read_to_end(&mut std::io::Read::take(file, budget), &mut bytes)
            .map_err(|err| malformed(err.to_string()))?;
        if bytes.len() as u64 == budget {
            return Err(malformed(format!("it is larger than {} bytes", custodia_bundle::MAX_TRUSTED_LIST_BYTES)));
        }
        Ok(bytes)
    };
    let pems = anchors.iter().map(|path| read("--tsa-anchor", path)).collect::<Result<Vec<_>, _>>()?;
    let mut parsed = Vec::with_capacity(lists.len());
    for path in lists {
        let list = custodia_bundle::TrustedList::parse(&read("--trusted-list", path)?).map_err(|err| {
            VerifyFailure::MalformedTimeTrust {
                flag: "--trusted-list",
                given: path.display().to_string(),
                reason: err.to_string(),
            }
        })?;
        parsed.push(list);
    }
    let given = anchors.iter().chain(lists).map(|path| path.display().to_string()).collect::<Vec<_>>().join(", ");
    custodia_bundle::TimeTrust::new(&pems, parsed).map(Some).map_err(|err| VerifyFailure::MalformedTimeTrust {
        flag: "--tsa-anchor or --trusted-list",
        given,
        reason: err.to_string(),
    })
}

fn verify_bundle(
    bundle: &std::path::Path,
    trusted_keys: &[String],
    policy: Option<&std::path::Path>,
    time: Option<&custodia_bundle::TimeTrust>,
) -> anyhow::Result<()> {
    let trusted = trusted_keys
        .iter()
        .map(|key| {
            read_verifier(key)
                .map_err(|err| VerifyFailure::MalformedPin { given: key.clone(), reason: err.root_cause().to_string() })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let policy = policy
        .map(|path| -> Result<custodia_witness::Policy, VerifyFailure> {
            let malformed =
                |reason: String| VerifyFailure::MalformedPolicy { given: path.display().to_string(), reason };
            let text = std::fs::read_to_string(path).map_err(|err| malformed(err.to_string()))?;
            custodia_witness::Policy::parse(&text).map_err(|err| malformed(err.to_string()))
        })
        .transpose()?;
    let name = bundle.display().to_string();
    let reader: Box<dyn std::io::Read> = if name == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(bundle).with_context(|| format!("opening {name}"))?)
    };
    let pins = custodia_bundle::Pins { keys: &trusted, policy: policy.as_ref(), time };
    let reader = std::io::BufReader::with_capacity(1 << 20, reader);
    let report = custodia_bundle::verify_pinned(reader, &pins, custodia_bundle::Limits::default())
        .with_context(|| format!("{name} FAILED verification"))?;
    say(format!("{report}").trim_end());
    match report.verdict() {
        custodia_bundle::Verdict::Valid => Ok(()),
        custodia_bundle::Verdict::UnknownSigner => Err(VerifyFailure::UnknownSigner(name).into()),
        custodia_bundle::Verdict::Invalid => Err(VerifyFailure::Invalid { bundle: name }.into()),
    }
}

fn read_verifier(key: &str) -> anyhow::Result<LogVerifier> {
    let text = if std::path::Path::new(key).is_file() { std::fs::read_to_string(key)? } else { key.to_owned() };
    text.trim().parse().context("--key is not a C2SP verifier key (name+id+base64)")
}

fn open_location(location: &str) -> anyhow::Result<LogStore> {
    let store: Arc<dyn ObjectStore> = if location.starts_with("http://") || location.starts_with("https://") {
        let options = object_store::ClientOptions::new().with_allow_http(true);
        Arc::new(object_store::http::HttpBuilder::new().with_url(location).with_client_options(options).build()?)
    } else {
        let dir = std::path::Path::new(location);
        if !dir.is_dir() {
            bail!("{location} is neither a directory nor an http(s) URL");
        }
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir)?)
    };
    Ok(LogStore::new(store, StorePath::default()))
}

async fn verify_log(location: &str, key: &str, state: Option<PathBuf>) -> anyhow::Result<()> {
    let verifier = read_verifier(key)?;
    let storage = open_location(location)?;
    let previous = match &state {
        Some(path) if path.exists() => {
            let note = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let signed = SignedCheckpoint::open(&note, std::slice::from_ref(&verifier))
                .with_context(|| format!("earlier checkpoint {}", path.display()))?;
            Some(signed.checkpoint)
        }
        _ => None,
    };
    // Every entry is a custody record, one of the log's own timestamps (crate::timestamping), or a registry of
    // partners pinned (crate::partner_api).
    let check_record = |_index: u64, entry: &[u8]| {
        CustodyRecord::from_entry(entry)
            .map(drop)
            .or_else(|record_error| {
                let own = custodia_timestamp::CheckpointTimestamp::from_entry(entry).is_ok()
                    || custodia_partners::pinned::PartnersPinned::from_entry(entry).is_ok();
                if own { Ok(()) } else { Err(record_error) }
            })
            .map_err(|e| e.to_string())
    };
    let report = audit_log(&storage, std::slice::from_ref(&verifier), previous.as_ref(), check_record)
        .await
        .with_context(|| format!("log at {location} FAILED verification"))?;
    let Checkpoint { origin, size, root, .. } = &report.checkpoint.checkpoint;
    say(&format!("OK: log {origin}"));
    say(&format!("  checkpoint: {size} entries, root {root}, signed by {verifier}"));
    say(&format!(
        "  every entry is a canonical custody record, checkpoint timestamp or partners pinned; {} hash tiles match",
        report.hash_tiles_checked
    ));
    if let Some(previous) = report.extends {
        say(&format!("  extends the checkpoint of size {previous} seen earlier"));
    }
    if let Some(path) = state {
        std::fs::write(&path, report.checkpoint.note()).with_context(|| format!("saving {}", path.display()))?;
        say(&format!("  saved this checkpoint to {}", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// docs/configuration.md names every flag and environment variable of every command, each setting's default
    /// on its environment variable's line: a setting added without its line in the reference fails here.
    #[test]
    fn the_configuration_reference_names_every_setting_and_its_default() {
        let reference = include_str!("../../../docs/configuration.md");
        let mut missing = Vec::new();
        let mut pending = vec![("custodia".to_owned(), <super::Cli as clap::CommandFactory>::command())];
        while let Some((path, command)) = pending.pop() {
            for argument in command.get_arguments() {
                let Some(long) = argument.get_long().filter(|long| !matches!(*long, "help" | "version")) else {
                    continue;
                };
                if !reference.contains(&format!("`--{long}`")) {
                    missing.push(format!("{path}: `--{long}`"));
                }
                let Some(env) = argument.get_env() else { continue };
                let env = format!("`{}`", env.to_string_lossy());
                let Some(line) = reference.lines().find(|line| line.contains(&env)) else {
                    missing.push(format!("{path}: {env}"));
                    continue;
                };
                // An empty default (an unset jurisdiction) shows as an empty cell.
                for default in argument.get_default_values().iter().filter(|default| !default.is_empty()) {
                    let default = format!("`{}`", default.to_string_lossy());
                    if !line.contains(&default) {
                        missing.push(format!("{path}: {env}'s default {default}, on its line"));
                    }
                }
            }
            for subcommand in command.get_subcommands() {
                pending.push((format!("{path} {}", subcommand.get_name()), subcommand.clone()));
            }
        }
        assert!(missing.is_empty(), "docs/configuration.md does not mention:\n{}", missing.join("\n"));
    }

    /// Every command's arguments are well formed: unique names, no clashing flags or environment variables (a
    /// clash panics only when that command is parsed, in a debug build, so each is checked here).
    #[test]
    fn the_command_line_is_well_formed() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
