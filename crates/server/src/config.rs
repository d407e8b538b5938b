//! Gateway configuration: embedded defaults, overridden by flags or `CUSTODIA_*` environment variables.
//!
//! The defaults run everything on one machine: SQLite in the data directory, objects in a local directory, keys
//! made on first start. Setting `CUSTODIA_DATABASE_URL` to a `postgres://` URL, and `CUSTODIA_S3_BUCKET` (with an
//! endpoint and keys), moves metadata to PostgreSQL and objects to an S3-compatible store; the code paths are the
//! same.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use custodia_service::budget;

/// Where the gateway keeps its state and how it names its log.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayConfig {
    /// Directory for keys, the custody log, artefacts and the SQLite database.
    #[arg(long, env = "CUSTODIA_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// The log's origin: its URL prefix without a scheme. It is also the name of the signing key.
    #[arg(long, env = "CUSTODIA_ORIGIN", default_value = "custodia.localhost/log")]
    pub origin: String,
}

impl GatewayConfig {
    pub fn key_file(&self) -> PathBuf {
        self.data_dir.join("keys").join("gateway.key")
    }

    /// The witness's cosigner key: a key of its own, never the log's.
    pub fn witness_key_file(&self) -> PathBuf {
        self.data_dir.join("keys").join("witness.key")
    }

    /// The Ed25519 key that signs this gateway's requests to its partners ([`crate::partner_api`]).
    pub fn partner_request_key_file(&self) -> PathBuf {
        self.data_dir.join("keys").join("partner-request.key")
    }

    /// The key of the device cookies' MAC ([`custodia_service::identity::DeviceKey`]), so that they outlive a restart.
    pub fn device_key_file(&self) -> PathBuf {
        self.data_dir.join("keys").join("device-cookie.key")
    }

    /// The witness's name: the one configured, or else the log origin's host followed by `/witness`.
    pub fn witness_name(&self, configured: Option<&str>) -> String {
        configured
            .map_or_else(|| format!("{}/witness", self.origin.split('/').next().unwrap_or(&self.origin)), str::to_owned)
    }

    pub fn log_dir(&self) -> PathBuf {
        self.data_dir.join("log")
    }

    pub fn objects_dir(&self) -> PathBuf {
        self.data_dir.join("objects")
    }

    /// Where resumable uploads were staged before they moved into the object store (`staging/tus/`): removed at
    /// start-up, since the catalog no longer holds uploads whose bytes are there.
    pub fn legacy_uploads_dir(&self) -> PathBuf {
        self.data_dir.join("uploads")
    }
}

/// An S3-compatible object store (garage, MinIO, Ceph, AWS S3), used instead of the local directory when a
/// bucket is named.
#[derive(Clone, clap::Args)]
pub struct S3Config {
    /// The bucket that holds the custody log and the artefacts instead of the data directory. Several gateways
    /// may share a bucket only with one PostgreSQL database (they append to one log through it), each with its
    /// own data directory and the same log key; with SQLite, one gateway per bucket.
    #[arg(long = "s3-bucket", env = "CUSTODIA_S3_BUCKET")]
    pub bucket: Option<String>,
    /// The S3 endpoint's URL (`http://` allowed, for a store on the same network); by default AWS's for the region.
    #[arg(long = "s3-endpoint", env = "CUSTODIA_S3_ENDPOINT")]
    pub endpoint: Option<String>,
    /// The bucket's region.
    #[arg(long = "s3-region", env = "CUSTODIA_S3_REGION", default_value = "us-east-1")]
    pub region: String,
    /// The access key's id; with `--s3-secret-access-key`. Without both, object_store's other sources (a web
    /// identity token, instance metadata).
    #[arg(long = "s3-access-key-id", env = "CUSTODIA_S3_ACCESS_KEY_ID")]
    pub access_key_id: Option<String>,
    /// The access key's secret. Never logged.
    #[arg(long = "s3-secret-access-key", env = "CUSTODIA_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub secret_access_key: Option<String>,
    /// The Object Lock mode of the retention each evidence object is given (`--s3-retention-days`): `compliance`
    /// (no one, the account's root user included, can delete the object or shorten its retention before its
    /// date) or `governance` (a user with `s3:BypassGovernanceRetention` who asks to bypass it can).
    #[arg(long = "s3-retention-mode", env = "CUSTODIA_S3_RETENTION_MODE", value_enum, default_value = "compliance")]
    pub retention_mode: RetentionModeSetting,
    /// Days of Object Lock retention each evidence object (artefact, manifest, attached policy) is given once
    /// written, in a bucket with Object Lock enabled; 0, the default, sets none and relies on the bucket's default
    /// retention rule, if it has one. A gateway asked for retention refuses to start on a bucket or a server
    /// without Object Lock.
    #[arg(
        long = "s3-retention-days",
        env = "CUSTODIA_S3_RETENTION_DAYS",
        default_value_t = 0,
        value_parser = clap::value_parser!(u32).range(0..=i64::from(custodia_store::object_lock::MAX_RETENTION_DAYS))
    )]
    pub retention_days: u32,
}

/// `--s3-retention-mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum RetentionModeSetting {
    Governance,
    #[default]
    Compliance,
}

impl S3Config {
    /// The retention asked of every evidence object, if any (`--s3-retention-days` above 0).
    pub fn retention(&self) -> Option<custodia_store::object_lock::RetentionRule> {
        use custodia_store::object_lock::{RetentionMode, RetentionRule};
        let mode = match self.retention_mode {
            RetentionModeSetting::Governance => RetentionMode::Governance,
            RetentionModeSetting::Compliance => RetentionMode::Compliance,
        };
        (self.retention_days > 0).then_some(RetentionRule { mode, days: self.retention_days })
    }
}

impl fmt::Debug for S3Config {
    /// Whether an endpoint is set, not which: it may be an address (as [`custodia_store::object_lock::S3ObjectLock`]'s says).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint.as_ref().map(|_| "<set>"))
            .field("region", &self.region)
            .field("retention_mode", &self.retention_mode)
            .field("retention_days", &self.retention_days)
            .finish_non_exhaustive()
    }
}

/// Settings for `custodia keygen`: where the keys go, and the names they carry.
#[derive(Debug, Clone, clap::Args)]
pub struct KeygenConfig {
    #[command(flatten)]
    pub gateway: GatewayConfig,
    /// The name of this gateway's witness (its cosigner key's name), as `custodia serve` takes it. By default, the
    /// log origin's host followed by `/witness`.
    #[arg(long = "witness-name", env = "CUSTODIA_WITNESS_NAME")]
    pub witness_name: Option<String>,
}

/// Settings for `custodia serve`.
#[derive(Clone, clap::Args)]
pub struct ServeConfig {
    #[command(flatten)]
    pub gateway: GatewayConfig,
    /// Address to listen on. The default is loopback only.
    #[arg(long, env = "CUSTODIA_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address of a second listener that serves only Prometheus metrics, at `/metrics`; without it, no metrics are
    /// served. Whoever reaches it reads them: give it a loopback or an internal address, never
    /// the public one. The API's listener never serves them, since behind a reverse proxy every request comes
    /// from the proxy's address.
    #[arg(long, env = "CUSTODIA_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Metadata database: `sqlite://...` (default: `catalog.db` in the data directory) or `postgres://...`.
    #[arg(long, env = "CUSTODIA_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    #[command(flatten)]
    pub s3: S3Config,
    /// PEM certificate chain; with `--tls-key`, the gateway serves HTTPS through rustls.
    #[arg(long, env = "CUSTODIA_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `--tls-cert`.
    #[arg(long, env = "CUSTODIA_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The largest artefact accepted, in bytes.
    #[arg(long, env = "CUSTODIA_MAX_UPLOAD_BYTES", default_value_t = 64 << 30)]
    pub max_upload_bytes: u64,
    /// The court's rights notices, oaths, affirmations and interpreter's oaths: a directory with one sub-directory
    /// per language (`fr/`) holding `rights_notice.txt`, `oath.txt`, `affirmation.txt` and `interpreter_oath.txt`
    /// ([`custodia_hearings::texts`]); without it, the embedded texts (en, fr, it, ar).
    #[arg(long, env = "CUSTODIA_TEXTS_DIR")]
    pub texts_dir: Option<PathBuf>,
    #[command(flatten)]
    pub quotas: QuotaConfig,
    #[command(flatten)]
    pub ice: IceConfig,
    #[command(flatten)]
    pub connections: ConnectionConfig,
    #[command(flatten)]
    pub media: MediaConfig,
    #[command(flatten)]
    pub probe: ProbeConfig,
    #[command(flatten)]
    pub witness: WitnessConfig,
    #[command(flatten)]
    pub timestamps: TimestampConfig,
    #[command(flatten)]
    pub partners: PartnerConfig,
}

/// Partner gateways: the registry this gateway pins, and its own card ([`crate::partner_api`]).
#[derive(Clone, Debug, clap::Args)]
pub struct PartnerConfig {
    /// A JSON file of the partner gateways this one exchanges with (`{"partners": [...]}`, each entry a partner's
    /// card: name, jurisdiction, base URL, log and witness verifier keys, and the key that signs its requests).
    /// Without it, every request from a partner is refused.
    #[arg(long = "partners", env = "CUSTODIA_PARTNERS")]
    pub registry_file: Option<PathBuf>,
    /// This gateway's name among its partners: the `keyid` of its requests' signatures. By default, the host of
    /// the log origin.
    #[arg(long = "partner-name", env = "CUSTODIA_PARTNER_NAME")]
    pub partner_name: Option<String>,
    /// This gateway's jurisdiction on its card (an ISO 3166-1 code, such as `IT`).
    #[arg(long = "jurisdiction", env = "CUSTODIA_JURISDICTION", default_value = "")]
    pub jurisdiction: String,
    /// The URL partners reach this gateway at, on its card. By default, `https://` and the host of the log origin.
    #[arg(long = "public-url", env = "CUSTODIA_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Seconds a partner has, from the submission of a transfer this gateway sends, to accept it for relay; past
    /// them this gateway issues `RelayFailure` itself.
    #[arg(long = "transfer-relay-seconds", env = "CUSTODIA_TRANSFER_RELAY_SECONDS", default_value_t = TRANSFER_RELAY_SECONDS)]
    pub transfer_relay_seconds: u64,
    /// Seconds a partner has, from the submission, to take a transfer into its custody; past them this gateway
    /// issues `NonDelivery` itself, and a receiving gateway drops what it holds of an unfinished one.
    #[arg(long = "transfer-delivery-seconds", env = "CUSTODIA_TRANSFER_DELIVERY_SECONDS", default_value_t = TRANSFER_DELIVERY_SECONDS)]
    pub transfer_delivery_seconds: u64,
    /// Seconds members of a receiving gateway have, from delivery, to retrieve what a partner sent; past them it
    /// issues `NonRetrieval`.
    #[arg(
        long = "transfer-retrieval-seconds",
        env = "CUSTODIA_TRANSFER_RETRIEVAL_SECONDS",
        default_value_t = TRANSFER_RETRIEVAL_SECONDS
    )]
    pub transfer_retrieval_seconds: u64,
    /// Seconds between tries of a transfer step that did not go through (a partner down, say).
    #[arg(long = "transfer-retry-seconds", env = "CUSTODIA_TRANSFER_RETRY_SECONDS", default_value_t = TRANSFER_RETRY_SECONDS)]
    pub transfer_retry_seconds: u64,
}

/// A transfer's default timeouts (an hour to be accepted for relay, a day to be delivered, two weeks to be
/// retrieved) and retry interval, in seconds.
const TRANSFER_RELAY_SECONDS: u64 = 3_600;
const TRANSFER_DELIVERY_SECONDS: u64 = 86_400;
const TRANSFER_RETRIEVAL_SECONDS: u64 = 14 * 86_400;
const TRANSFER_RETRY_SECONDS: u64 = 10;

impl Default for PartnerConfig {
    fn default() -> Self {
        Self {
            registry_file: None,
            partner_name: None,
            jurisdiction: String::new(),
            public_url: None,
            transfer_relay_seconds: TRANSFER_RELAY_SECONDS,
            transfer_delivery_seconds: TRANSFER_DELIVERY_SECONDS,
            transfer_retrieval_seconds: TRANSFER_RETRIEVAL_SECONDS,
            transfer_retry_seconds: TRANSFER_RETRY_SECONDS,
        }
    }
}

impl PartnerConfig {
    /// The timeouts and retry interval of transfers this configuration sets.
    pub fn transfer_timing(&self) -> custodia_service::transfers::TransferTiming {
        let seconds = std::time::Duration::from_secs;
        custodia_service::transfers::TransferTiming {
            relay: seconds(self.transfer_relay_seconds),
            delivery: seconds(self.transfer_delivery_seconds),
            retrieval: seconds(self.transfer_retrieval_seconds),
            retry: seconds(self.transfer_retry_seconds.max(1)),
        }
    }
}

/// Witnessing partner gateways' logs (c2sp.org/tlog-witness; [`crate::witness_api`]), and collecting their
/// cosignatures on this gateway's own checkpoints ([`crate::cosigning`]).
#[derive(Clone, Debug, clap::Args)]
pub struct WitnessConfig {
    /// A file of `log <vkey> [url]` lines (the `log` lines of a c2sp.org/tlog-policy file): the partner logs this
    /// gateway witnesses. Without it, it witnesses none. A log once witnessed can be neither dropped from the file
    /// nor re-keyed: the gateway refuses to start, because that is how a split view would be hidden.
    #[arg(long = "witnessed-logs", env = "CUSTODIA_WITNESSED_LOGS")]
    pub logs_file: Option<PathBuf>,
    /// The name of this gateway's witness (its cosigner key's name). By default, the log origin's host followed by
    /// `/witness`.
    #[arg(long = "witness-name", env = "CUSTODIA_WITNESS_NAME")]
    pub name: Option<String>,
    /// A c2sp.org/tlog-policy file naming this gateway's own log (`log <vkey>`), its witnesses (`witness <name>
    /// <vkey> <url>`, the URL being the witness's prefix before `/add-checkpoint`), groups and the quorum: each new
    /// checkpoint is sent to every witness with a URL. Without it, no witness is asked and every checkpoint is
    /// published as the log signed it.
    #[arg(long = "witness-policy", env = "CUSTODIA_WITNESS_POLICY")]
    pub policy_file: Option<PathBuf>,
    /// When `/log/checkpoint` shows a new checkpoint: `quorum` (the default: only once its cosignatures meet the
    /// policy's quorum; fail-closed) or `immediate` (at once, cosignatures added as they arrive).
    #[arg(long = "witness-publish", env = "CUSTODIA_WITNESS_PUBLISH", value_enum, default_value_t)]
    pub publish: WitnessPublish,
    /// Seconds to wait for a witness's answer to one request.
    #[arg(long = "witness-timeout-seconds", env = "CUSTODIA_WITNESS_TIMEOUT_SECONDS", default_value_t = 5)]
    pub timeout_seconds: u64,
    /// Requests to one witness for one checkpoint, the first included, before it is left until the next.
    #[arg(long = "witness-attempts", env = "CUSTODIA_WITNESS_ATTEMPTS", default_value_t = 4)]
    pub attempts: u32,
    /// Seconds a court bundle's export waits for a checkpoint covering its records to meet the quorum. Past it, the
    /// bundle carries the newest cosigned checkpoint with a consistency proof to its own, and its verifier names
    /// the records not yet witnessed.
    #[arg(long = "witness-export-wait-seconds", env = "CUSTODIA_WITNESS_EXPORT_WAIT_SECONDS", default_value_t = 10)]
    pub export_wait_seconds: u64,
}

impl Default for WitnessConfig {
    fn default() -> Self {
        Self {
            logs_file: None,
            name: None,
            policy_file: None,
            publish: WitnessPublish::default(),
            timeout_seconds: 5,
            attempts: 4,
            export_wait_seconds: 10,
        }
    }
}

/// See [`WitnessConfig::publish`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum WitnessPublish {
    #[default]
    Quorum,
    Immediate,
}

/// RFC 3161 timestamps of the log's checkpoints ([`crate::timestamping`]).
#[derive(Clone, clap::Args)]
pub struct TimestampConfig {
    /// Time-Stamp Authorities, comma-separated, each `<url> <trust anchor PEM file>`: the checkpoints are sent to
    /// each (`application/timestamp-query`), and a token counts only if it chains to that file's certificates.
    /// Without any, the log is not timestamped.
    #[arg(long = "tsa", env = "CUSTODIA_TSA", value_delimiter = ',', hide_env_values = true)]
    pub authorities: Vec<String>,
    /// Never ask the authorities more often than once in this many seconds (a busy log is stamped in batches).
    #[arg(long = "tsa-min-interval-secs", env = "CUSTODIA_TSA_MIN_INTERVAL_SECS", default_value_t = 60)]
    pub min_interval_secs: u64,
    /// Ask at least once in this many minutes, even when the log has not changed.
    #[arg(long = "tsa-max-interval-minutes", env = "CUSTODIA_TSA_MAX_INTERVAL_MINUTES", default_value_t = 60)]
    pub max_interval_minutes: u64,
    /// Give up on an authority's answer after this many seconds (it is asked again at the next turn).
    #[arg(long = "tsa-timeout-secs", env = "CUSTODIA_TSA_TIMEOUT_SECS", default_value_t = 30)]
    pub timeout_secs: u64,
}

impl fmt::Debug for TimestampConfig {
    /// The number of authorities only: a commercial authority's URL may carry credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimestampConfig")
            .field("authorities", &self.authorities.len())
            .field("min_interval_secs", &self.min_interval_secs)
            .field("max_interval_minutes", &self.max_interval_minutes)
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

impl Default for TimestampConfig {
    /// No authorities; the other settings as `custodia serve` has them.
    fn default() -> Self {
        Self { authorities: Vec::new(), min_interval_secs: 60, max_interval_minutes: 60, timeout_secs: 30 }
    }
}

/// What one account may put into custody, and how fast ([`budget::Quotas`]), so that no member can fill
/// the disk or flood the public log. The rates (uploads, refusal records, custody records, console steps, room entries) are kept
/// in the catalog, one budget over every gateway on the database ([`budget::BudgetStore`]), and so are direct
/// uploads under way with what they hold ([`budget::DirectUpload`]); WHIP sessions under way are counted by each
/// gateway for itself.
#[derive(Debug, Clone, clap::Args)]
pub struct QuotaConfig {
    /// Bytes of evidence one account may have provided: its artefacts, plus what its open resumable uploads and its
    /// direct uploads under way declare. Over it, an upload is refused (507) before a byte is staged where the
    /// size is declared, and cut off when it is passed mid-stream.
    #[arg(long, env = "CUSTODIA_ACCOUNT_STORED_BYTES", default_value_t = budget::ACCOUNT_STORED_BYTES)]
    pub account_stored_bytes: u64,
    /// Direct (non-resumable) uploads one account may have under way at once, on all gateways together.
    #[arg(long, env = "CUSTODIA_DIRECT_UPLOADS_PER_ACCOUNT", default_value_t = budget::DIRECT_UPLOADS_PER_ACCOUNT)]
    pub direct_uploads_per_account: usize,
    /// Seconds a direct upload's holding of its account's quota (and of its place among the account's direct
    /// uploads) lasts unrenewed, 20 to 3600: its gateway renews it every fifth of this while the upload runs, and
    /// the holding of a gateway that died counts no more after it.
    #[arg(
        long,
        env = "CUSTODIA_DIRECT_UPLOAD_HOLDING_SECONDS",
        default_value_t = budget::DIRECT_HOLDING_EXPIRY.as_secs(),
        value_parser = clap::value_parser!(u64).range(budget::DIRECT_HOLDING_EXPIRY_MIN.as_secs()..=3600)
    )]
    pub direct_upload_holding_seconds: u64,
    /// New uploads (direct, or resumable ones created) one account may start a minute; as many at once.
    #[arg(long, env = "CUSTODIA_UPLOADS_PER_MINUTE", default_value_t = budget::UPLOADS_PER_MINUTE)]
    pub uploads_per_minute: u32,
    /// Custody records of refusals one account may cause a minute; as many at once. Past it, refusals are counted
    /// into one record per case and code a minute, and answered 429.
    #[arg(long, env = "CUSTODIA_REFUSAL_RECORDS_PER_MINUTE", default_value_t = budget::REFUSAL_RECORDS_PER_MINUTE)]
    pub refusal_records_per_minute: u32,
    /// WHIP publishers at once in the live hearings of one case; one more is answered 429.
    #[arg(long, env = "CUSTODIA_WHIP_SESSIONS_PER_CASE", default_value_t = budget::WHIP_SESSIONS_PER_CASE)]
    pub whip_sessions_per_case: usize,
    /// WHIP publishers at once, in all live hearings, that came in with the invites of one case member (each
    /// invite lets one publisher in, so a clerk could otherwise open as many as they invite); one more is answered
    /// 429.
    #[arg(long, env = "CUSTODIA_WHIP_SESSIONS_PER_ACCOUNT", default_value_t = budget::WHIP_SESSIONS_PER_ACCOUNT)]
    pub whip_sessions_per_account: usize,
    /// Entries into a hearing room with one invite's secret or one participant's credential, a minute (as many at
    /// once); one more is answered "too many attempts". Failed entries are budgeted per address besides.
    #[arg(long, env = "CUSTODIA_ROOM_ENTRIES_PER_MINUTE", default_value_t = budget::ROOM_ENTRIES_PER_MINUTE)]
    pub room_entries_per_minute: u32,
    /// Hearing console steps (scheduling, inviting, revoking, opening, closing, protective orders, masked copies) one account may
    /// take a minute; twice as many at once. One more is answered "too many attempts".
    #[arg(long, env = "CUSTODIA_CONSOLE_STEPS_PER_MINUTE", default_value_t = budget::CONSOLE_STEPS_PER_MINUTE)]
    pub console_steps_per_minute: u32,
    /// Custody records one account's steps may cause a minute (downloads and plays, each range included; exports;
    /// changes of policy and membership; requests and reports); as many at once. Past it, a step is answered 429
    /// before it happens. Records are public for good: this keeps one member, or a leaked token used from many
    /// addresses, from flooding the log.
    #[arg(long, env = "CUSTODIA_CUSTODY_RECORDS_PER_MINUTE", default_value_t = budget::CUSTODY_RECORDS_PER_MINUTE)]
    pub custody_records_per_minute: u32,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self {
            account_stored_bytes: budget::ACCOUNT_STORED_BYTES,
            direct_uploads_per_account: budget::DIRECT_UPLOADS_PER_ACCOUNT,
            direct_upload_holding_seconds: budget::DIRECT_HOLDING_EXPIRY.as_secs(),
            uploads_per_minute: budget::UPLOADS_PER_MINUTE,
            refusal_records_per_minute: budget::REFUSAL_RECORDS_PER_MINUTE,
            whip_sessions_per_case: budget::WHIP_SESSIONS_PER_CASE,
            whip_sessions_per_account: budget::WHIP_SESSIONS_PER_ACCOUNT,
            room_entries_per_minute: budget::ROOM_ENTRIES_PER_MINUTE,
            console_steps_per_minute: budget::CONSOLE_STEPS_PER_MINUTE,
            custody_records_per_minute: budget::CUSTODY_RECORDS_PER_MINUTE,
        }
    }
}

impl QuotaConfig {
    pub fn quotas(&self) -> budget::Quotas {
        budget::Quotas::new(
            self.account_stored_bytes,
            self.direct_uploads_per_account,
            self.uploads_per_minute,
            self.refusal_records_per_minute,
            self.whip_sessions_per_case,
            self.whip_sessions_per_account,
        )
        .with_room_entries(self.room_entries_per_minute)
        .with_console_steps(self.console_steps_per_minute)
        .with_custody_records(self.custody_records_per_minute)
        .with_direct_holding_expiry(std::time::Duration::from_secs(self.direct_upload_holding_seconds))
    }
}

/// Media probing, in a child process under limits ([`custodia_service::probe`]).
#[derive(Clone, Debug, clap::Args)]
pub struct ProbeConfig {
    /// The largest address space (virtual memory) a probe may use, in MiB; the binary's own mappings count.
    #[arg(long = "probe-memory-mib", env = "CUSTODIA_PROBE_MEMORY_MIB", default_value_t = 2048)]
    pub memory_mib: u64,
    /// CPU seconds a probe may use.
    #[arg(long = "probe-cpu-seconds", env = "CUSTODIA_PROBE_CPU_SECONDS", default_value_t = 30)]
    pub cpu_seconds: u64,
    /// Seconds a probe may take before it is killed.
    #[arg(long = "probe-seconds", env = "CUSTODIA_PROBE_SECONDS", default_value_t = 60)]
    pub seconds: u64,
    /// The `custodia` binary that probes; by default this process's own executable (set by tests, whose own
    /// executable is the test harness).
    #[arg(skip)]
    pub program: Option<PathBuf>,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        let limits = custodia_service::probe::ProbeLimits::default();
        Self {
            memory_mib: limits.address_space_bytes >> 20,
            cpu_seconds: limits.cpu_seconds,
            seconds: limits.wall.as_secs(),
            program: None,
        }
    }
}

impl ProbeConfig {
    pub fn limits(&self) -> custodia_service::probe::ProbeLimits {
        custodia_service::probe::ProbeLimits {
            address_space_bytes: self.memory_mib.max(1) << 20,
            cpu_seconds: self.cpu_seconds.max(1),
            wall: std::time::Duration::from_secs(self.seconds.max(1)),
        }
    }
}

/// What the gateway's WebRTC answers (WHIP, the hearing room) say about where its media is: the addresses they
/// announce as ICE candidates. The offerer reads them, so by default they name public addresses only.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct MediaConfig {
    /// Which of this machine's addresses answers announce: `public` (the default), `private` (also RFC 1918 and
    /// unique local addresses, for clients on the same internal network) or `loopback` (everything: tests, a
    /// console on this machine).
    #[arg(long = "media-addresses", env = "CUSTODIA_MEDIA_ADDRESSES", value_enum, default_value_t)]
    pub addresses: MediaAddresses,
    /// Public addresses that stand for this machine's own behind a 1:1 NAT (comma-separated): answers announce
    /// these instead of the private addresses behind them.
    #[arg(long = "media-public-ips", env = "CUSTODIA_MEDIA_PUBLIC_IPS", value_delimiter = ',')]
    pub public_ips: Vec<std::net::IpAddr>,
}

/// See [`MediaConfig::addresses`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum MediaAddresses {
    #[default]
    Public,
    Private,
    Loopback,
}

impl MediaConfig {
    /// The media engine's settings.
    pub fn engine(&self) -> custodia_recorder::EngineConfig {
        let announce = match self.addresses {
            MediaAddresses::Public => custodia_recorder::Announce::Public,
            MediaAddresses::Private => custodia_recorder::Announce::Private,
            MediaAddresses::Loopback => custodia_recorder::Announce::Loopback,
        };
        custodia_recorder::EngineConfig { announce, public_ips: self.public_ips.clone(), ice_servers: vec![] }
    }
}

/// How many connections the gateway holds, and for how long ([`crate::listen`]).
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionConfig {
    /// Open connections at once; lowered at start-up to what the open-file limit leaves after a reserve.
    #[arg(long, env = "CUSTODIA_MAX_CONNECTIONS", default_value_t = 8192)]
    pub max_connections: usize,
    /// Open connections at once from one client address (a trusted proxy is exempt).
    #[arg(long, env = "CUSTODIA_MAX_CONNECTIONS_PER_PEER", default_value_t = 256)]
    pub max_connections_per_peer: usize,
    /// Seconds a client has to send a request head or finish a TLS handshake; also how long an idle connection
    /// is kept between requests.
    #[arg(long, env = "CUSTODIA_HEADER_TIMEOUT_SECONDS", default_value_t = 10)]
    pub header_timeout_seconds: u64,
    /// Seconds a request body may send nothing before the request is cut off; an answer the client reads nothing
    /// of for twice as long closes its connection.
    #[arg(long, env = "CUSTODIA_BODY_IDLE_SECONDS", default_value_t = 30)]
    pub body_idle_seconds: u64,
    /// Reverse proxies whose `X-Forwarded-For` and `X-Forwarded-Proto` are believed, comma-separated: addresses,
    /// or ranges in CIDR notation (`10.244.0.0/16`: proxies whose addresses change, pods say). The client is the
    /// last address in `X-Forwarded-For` outside them. Behind one that terminates HTTPS, the session cookie is
    /// `Secure` and answers carry HSTS.
    #[arg(long, env = "CUSTODIA_TRUSTED_PROXIES", value_delimiter = ',', value_parser = trusted_proxy)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// One entry of `CUSTODIA_TRUSTED_PROXIES`: an address (the range of that address alone) or a CIDR range. Peers are
/// compared as IPv4 when they are IPv4 seen on a dual-stack socket (`::ffff:a.b.c.d`), so an entry in that form is
/// taken as the IPv4 address or range it maps; a range of every address is refused.
fn trusted_proxy(entry: &str) -> Result<ipnet::IpNet, String> {
    let entry = entry.trim();
    if entry.contains('/') {
        let range: ipnet::IpNet = entry.parse().map_err(|err| format!("{entry}: not a CIDR range: {err}"))?;
        // A range written with host bits set (10.0.0.10/8) is a slip as often as not: named as written, it is
        // refused rather than widened.
        if range.trunc() != range {
            return Err(format!("{entry} has bits set past its prefix; the range is {}", range.trunc()));
        }
        if range.prefix_len() == 0 {
            return Err(format!("{entry} is every address: any client could name any address and claim HTTPS"));
        }
        if let ipnet::IpNet::V6(v6) = range
            && let Some(v4) = v6.addr().to_ipv4_mapped()
            && v6.prefix_len() >= 96
        {
            let mapped = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map_err(|err| format!("{entry}: {err}"))?;
            return Ok(ipnet::IpNet::V4(mapped));
        }
        Ok(range)
    } else {
        let address: std::net::IpAddr = entry.parse().map_err(|err| format!("{entry}: not an address: {err}"))?;
        Ok(ipnet::IpNet::from(address.to_canonical()))
    }
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            max_connections: 8192,
            max_connections_per_peer: 256,
            header_timeout_seconds: 10,
            body_idle_seconds: 30,
            trusted_proxies: Vec::new(),
        }
    }
}

/// The STUN and TURN servers handed to WebRTC clients (WHIP publishers, hearing participants), with TURN
/// credentials issued per the TURN REST API convention that coturn's `use-auth-secret` implements ([`custodia_hearings::turn`]).
///
/// A phone on a network that blocks UDP reaches the gateway only through TURN over TCP or TLS (`turn:...?transport=tcp`,
/// `turns:...:443?transport=tcp`): the WebRTC engine (webrtc-rs 0.17) cannot take ICE over TCP itself.
#[derive(Clone, Default, clap::Args)]
pub struct IceConfig {
    /// STUN servers, comma-separated `stun:host[:port]` URLs.
    #[arg(long = "stun-urls", env = "CUSTODIA_STUN_URLS", value_delimiter = ',')]
    pub stun_urls: Vec<String>,
    /// TURN servers, comma-separated `turn:`/`turns:` URLs, e.g.
    /// `turn:turn.example:3478?transport=udp,turns:turn.example:443?transport=tcp`. Needs `--turn-secret`.
    #[arg(long = "turn-urls", env = "CUSTODIA_TURN_URLS", value_delimiter = ',')]
    pub turn_urls: Vec<String>,
    /// The TURN server's shared secret (coturn's `static-auth-secret`), from which short-lived credentials are made.
    #[arg(long = "turn-secret", env = "CUSTODIA_TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<String>,
    /// How long an issued TURN credential may be used to open a relay, in seconds (60 to 86400).
    #[arg(long = "turn-ttl-seconds", env = "CUSTODIA_TURN_TTL_SECONDS", default_value_t = 3600)]
    pub turn_ttl_seconds: u64,
}

impl IceConfig {
    /// The STUN and TURN servers these settings name, once checked.
    pub fn servers(&self) -> anyhow::Result<custodia_hearings::turn::IceServers> {
        custodia_hearings::turn::IceServers::new(
            &self.stun_urls,
            &self.turn_urls,
            self.turn_secret.as_deref(),
            self.turn_ttl_seconds,
        )
    }
}

impl fmt::Debug for IceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IceConfig")
            // Counts only: the servers' addresses stay out of logs.
            .field("stun_urls", &self.stun_urls.len())
            .field("turn_urls", &self.turn_urls.len())
            .field("turn_secret", &self.turn_secret.as_ref().map(|_| "<hidden>"))
            .field("turn_ttl_seconds", &self.turn_ttl_seconds)
            .finish()
    }
}

impl fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeConfig")
            .field("gateway", &self.gateway)
            .field("listen", &self.listen)
            .field("metrics_listen", &self.metrics_listen)
            .field("s3", &self.s3)
            .field("tls", &self.tls_cert.is_some())
            .field("ice", &self.ice)
            .field("connections", &self.connections)
            .field("witness", &self.witness)
            .field("timestamps", &self.timestamps)
            .finish_non_exhaustive()
    }
}

impl ServeConfig {
    /// The embedded defaults with state in `data_dir`, as `custodia serve` with no flags would use.
    pub fn with_data_dir(data_dir: &Path) -> Self {
        Self {
            gateway: GatewayConfig { data_dir: data_dir.to_path_buf(), origin: "custodia.localhost/log".into() },
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            metrics_listen: None,
            database_url: None,
            s3: S3Config {
                bucket: None,
                endpoint: None,
                region: "us-east-1".into(),
                access_key_id: None,
                secret_access_key: None,
                retention_mode: RetentionModeSetting::Compliance,
                retention_days: 0,
            },
            tls_cert: None,
            tls_key: None,
            max_upload_bytes: 64 << 30,
            quotas: QuotaConfig::default(),
            texts_dir: None,
            ice: IceConfig { turn_ttl_seconds: 3600, ..IceConfig::default() },
            connections: ConnectionConfig::default(),
            media: MediaConfig::default(),
            probe: ProbeConfig::default(),
            witness: WitnessConfig::default(),
            timestamps: TimestampConfig::default(),
            partners: PartnerConfig::default(),
        }
    }

    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", self.gateway.data_dir.join("catalog.db").display()))
    }
}

/// How the operator's log is written to standard error (`--log-format`, `CUSTODIA_LOG_FORMAT`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for people: colours only when standard error is a terminal.
    #[default]
    Text,
    /// One JSON object a line (`timestamp`, `level`, `target`, the message and fields), for a log collector; never
    /// colours.
    Json,
}

/// Resolves `path` against the current directory, for messages that must say exactly where a file is.
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ice_settings_debug_shows_no_secret_and_no_address() {
        let secret = "correct horse battery staple";
        let ice = IceConfig {
            stun_urls: vec!["stun:192.0.2.1".into()],
            turn_urls: vec!["turn:192.0.2.2".into()],
            turn_secret: Some(secret.into()),
            turn_ttl_seconds: 3600,
        };
        let debug = format!("{ice:?}");
        assert!(!debug.contains(secret) && !debug.contains("192.0.2"), "{debug}");
        assert_eq!(ice.servers().unwrap().counts(), (1, 1));
    }

    #[test]
    fn trusted_proxies_are_addresses_or_ranges_and_a_range_is_written_as_it_is() {
        let net = |text: &str| text.parse::<ipnet::IpNet>().unwrap();
        assert_eq!(trusted_proxy("10.0.0.10").unwrap(), net("10.0.0.10/32"));
        assert_eq!(trusted_proxy(" ::1 ").unwrap(), net("::1/128"));
        assert_eq!(trusted_proxy("10.244.0.0/16").unwrap(), net("10.244.0.0/16"));
        assert_eq!(trusted_proxy("fd00:10::/56").unwrap(), net("fd00:10::/56"));
        let widened = trusted_proxy("10.0.0.10/8").unwrap_err();
        assert!(widened.contains("10.0.0.0/8"), "{widened}");
        assert!(trusted_proxy("10.0.0.0/33").is_err());
        // A peer on a dual-stack socket is compared as the IPv4 address it is: so is an entry in that form.
        assert_eq!(trusted_proxy("::ffff:127.0.0.1").unwrap(), net("127.0.0.1/32"));
        assert_eq!(trusted_proxy("::ffff:10.244.0.0/112").unwrap(), net("10.244.0.0/16"));
        for everything in ["0.0.0.0/0", "::/0"] {
            assert!(trusted_proxy(everything).unwrap_err().contains("every address"), "{everything}");
        }
        assert!(trusted_proxy("proxy.internal").is_err());
    }
}
