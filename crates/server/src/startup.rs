//! Opening the gateway from its configuration: keys, object storage, the custody log, the catalog, and the
//! repairs a crash may call for (interrupted uploads swept, the catalog caught up with the ledger).

use std::sync::Arc;

use anyhow::Context as _;
use custodia_catalog::Catalog;
use custodia_ledger::{Log, LogOptions};
use custodia_store::ArtefactStore;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;

use crate::config::{GatewayConfig, ServeConfig, absolute};
use crate::keys;
use crate::state::AppState;
use custodia_service::clock::Clock;
use custodia_service::gateway::Gateway;

/// How old a staging object must be for the start-up sweep to take it for one a crash left: far longer than one
/// lives (in a remote store, from an upload's last byte until its copy to its address: seconds or minutes).
const STAGING_ABANDONED_AFTER_SECONDS: i64 = 24 * 3600;

/// Opens everything the gateway serves from, ready for [`crate::app`].
pub async fn open(config: &ServeConfig, clock: Clock) -> anyhow::Result<AppState> {
    // rustls cannot choose a crypto back end itself when two are linked (aws-lc-rs for HTTPS and S3, ring for
    // WebRTC's DTLS): use aws-lc-rs for the whole process. Err means one is already installed.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // Configuration mistakes first, before anything is made on disk.
    let ice_servers = Arc::new(config.ice.servers()?);
    let texts = Arc::new(
        custodia_hearings::texts::CourtTexts::load(config.texts_dir.as_deref())
            .context("reading the court's texts (CUSTODIA_TEXTS_DIR)")?,
    );
    let timestamper = crate::timestamping::Timestamper::from_config(&config.timestamps)
        .context("configuring the Time-Stamp Authorities (CUSTODIA_TSA)")?;
    if config.s3.bucket.is_none() && config.s3.retention().is_some() {
        anyhow::bail!(
            "CUSTODIA_S3_RETENTION_DAYS asks for Object Lock retention, which only an S3 bucket (CUSTODIA_S3_BUCKET) \
             gives: a local directory has no Object Lock"
        );
    }
    let gateway_config = &config.gateway;
    let (signer, created) = keys::load_or_create(&gateway_config.key_file(), &gateway_config.origin)?;
    if created {
        tracing::info!(key = %absolute(&gateway_config.key_file()).display(), "made a new gateway key");
    }
    let vkey = signer.verifier();
    // The log's sequencer takes one copy of the key; the gateway signs manifests with another.
    let gateway_signer = custodia_ledger::LogSigner::from_skey(signer.expose_secret())?;
    let catalog = Catalog::connect(&config.database_url()).await.context("opening the catalog database")?;
    // One gateway per data directory; every gateway on the catalog's database appends to the one custody log
    // (`custodia_ledger::coordinated`).
    let guard = hold_the_data_dir(&gateway_config.data_dir)?;
    let coordination = catalog.log_coordination();
    let mut object_lock = ObjectLockReport::default();
    let (artefacts, manifests, log) = match open_bucket(config, &clock).await? {
        None => {
            let artefacts = ArtefactStore::local(&gateway_config.objects_dir())?;
            let manifests: Arc<dyn ObjectStore> =
                Arc::new(LocalFileSystem::new_with_prefix(gateway_config.objects_dir())?.with_fsync(true));
            let log = Log::open_local_coordinated(
                &gateway_config.log_dir(),
                signer,
                LogOptions::default(),
                coordination,
                guard,
            )
            .await?;
            (artefacts, manifests, log)
        }
        Some(OpenBucket { store, retention, report }) => {
            object_lock = report;
            let create_only = custodia_store::probe_create_only(store.as_ref(), &StorePath::from("probes/create-only"))
                .await
                .context("probing whether the object store enforces create-only writes")?;
            match create_only {
                custodia_store::CreateOnly::Enforced => {
                    tracing::info!("the object store refuses to replace an object: create-only writes are enforced");
                }
                custodia_store::CreateOnly::Ignored => tracing::warn!(
                    "the object store replaced an object a create-only write named (or has no such write): it is \
                     not trusted as write-once; evidence stays write-once by content addressing and name checks"
                ),
            }
            let artefacts = ArtefactStore::new(store.clone(), StorePath::from("artefacts"), create_only);
            // Manifests and attached policies are evidence too: each is given the retention once written.
            let (artefacts, evidence): (_, Arc<dyn ObjectStore>) = match retention {
                Some(retention) => (
                    artefacts.with_retention(retention.clone()),
                    Arc::new(custodia_store::object_lock::RetainingStore::new(store.clone(), retention)),
                ),
                None => (artefacts, store.clone()),
            };
            let manifests: Arc<dyn ObjectStore> =
                Arc::new(object_store::prefix::PrefixStore::new(evidence, "artefacts"));
            let log = Log::open_coordinated(
                store,
                StorePath::from("log"),
                signer,
                LogOptions::default(),
                coordination,
                guard,
            )
            .await?;
            (artefacts, manifests, log)
        }
    };
    // Only staging objects older than a day: in a bucket that several gateways share, younger ones may be
    // another gateway's uploads under way.
    let seconds = u64::try_from(clock.unix_seconds() - STAGING_ABANDONED_AFTER_SECONDS).unwrap_or(0);
    let swept =
        artefacts.sweep_staging(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(seconds)).await?;
    if swept > 0 {
        tracing::info!(count = swept, "removed uploads a crash had interrupted");
    }
    tracing::info!(vkey = %vkey, size = log.checkpoint().checkpoint.size, "custody log open");
    let prober = custodia_service::probe::Prober::new(config.probe.program.clone(), config.probe.limits())
        .context("finding the custodia binary for media probing")?;
    // Earlier versions probed objects of a remote store from whole copies kept here; any a crash left behind go.
    remove_old_probe_copies(&gateway_config.data_dir.join("probing"));
    // The masking pipelines of protected witnesses run the same binary.
    let mask_program = prober.program().to_path_buf();
    let witness = crate::witness_api::open_for(config, catalog.clone(), clock.clone()).await?;
    let partnering = Arc::new(crate::partner_api::open_for(config, clock.clone())?);
    let cosigning = crate::cosigning::start(&config.witness, &log, &vkey, catalog.clone(), clock.clone()).await?;
    let gateway = Gateway::new(catalog, artefacts, manifests, log, &gateway_signer, clock, config.max_upload_bytes)
        .with_prober(prober)
        .with_quotas(config.quotas.quotas())
        .with_cosigning(cosigning.clone());
    let metrics = Arc::new(crate::request_metrics::Metrics::default());
    metrics.object_lock_found(object_lock.state, object_lock.retention_days);
    let caught_up = gateway.reindex().await?;
    if caught_up > 0 {
        tracing::info!(records = caught_up, "indexed custody records the catalog had missed");
    }
    gateway.pin_partner_registry(partnering.registry()).await?;
    if let Some(timestamper) = timestamper {
        tracing::info!(authorities = config.timestamps.authorities.len(), "timestamping the log's checkpoints");
        metrics.follow_timestamps(timestamper.counters());
        tokio::spawn(timestamp_while_on_duty(Arc::new(timestamper), gateway.clone()));
    }
    let swept = custodia_service::uploads::sweep(&gateway).await?;
    if swept > 0 {
        tracing::info!(count = swept, "removed expired resumable uploads and chunks that no upload holds");
    }
    let legacy_uploads = gateway_config.legacy_uploads_dir();
    if legacy_uploads.exists() {
        std::fs::remove_dir_all(&legacy_uploads).context("removing resumable uploads staged by an older version")?;
        tracing::info!("removed resumable uploads staged in the data directory by an older version");
    }
    let (device_key, created) = keys::load_or_create_secret(&gateway_config.device_key_file())?;
    if created {
        tracing::info!(key = %absolute(&gateway_config.device_key_file()).display(), "made a new device cookie key");
    }
    let sign_ins = Arc::new(
        custodia_service::identity::SignInThrottle::new(custodia_service::identity::DeviceKey::new(device_key))
            .kept_in(gateway.budgets()),
    );
    bootstrap_admin(&gateway, &sign_ins, gateway_config).await?;
    custodia_service::identity::purge_expired_sessions(gateway.catalog().clone(), gateway.clock().clone());
    tracing::info!(languages = ?texts.languages(), from_dir = config.texts_dir.is_some(), "rights notices and oaths");
    let (stun, turn) = ice_servers.counts();
    tracing::info!(stun_urls = stun, turn_urls = turn, "ICE servers for WebRTC clients");
    // Masking directories a crash left hold a protected witness's unmasked recording outside custody.
    match custodia_hearings::masking::sweep_abandoned_staging(&std::env::temp_dir()) {
        Ok(0) => {}
        Ok(count) => tracing::info!(count, "removed masked copies a crash had interrupted"),
        Err(err) => {
            tracing::warn!(error = %custodia_service::error::Chain(&err), "could not look for masked copies a crash left")
        }
    }
    let recordings = gateway_config.data_dir.join("recordings");
    let quarantine_dir = gateway_config.data_dir.join("quarantine");
    let quarantined = custodia_hearings::quarantine::sweep_recordings(&gateway, &recordings, &quarantine_dir).await?;
    if quarantined > 0 {
        // What a crash cut off: each file is the open segment of a recording, never sealed. Kept, and on the record.
        tracing::warn!(count = quarantined, "quarantined unsealed recording segments left by an interrupted run");
    }
    // Answers announce the addresses the configuration allows (public only by default; tests ask for loopback).
    let engine = custodia_recorder::WebRtcEngine::new(config.media.engine())?;
    let hearings = Arc::new(custodia_hearings::live::Hearings::new(
        gateway.clone(),
        Arc::new(custodia_hearings::media_plane::WebRtcRooms::new(Arc::new(engine))),
        ice_servers.clone(),
        texts.clone(),
        recordings.join("hearings"),
        quarantine_dir,
        mask_program,
    ));
    let partner_client = crate::partner_client::HttpPartnerClient::new(partnering.clone())
        .context("no HTTP client for partner gateways")?;
    let transfers = Arc::new(custodia_service::transfers::Transfers::new(
        gateway.clone(),
        partnering.partnership(),
        Arc::new(partner_client),
        partnering.buffers().clone(),
        gateway_config.data_dir.join("transfers"),
        config.partners.transfer_timing(),
    )?);
    transfers.resume().await?;
    // Only by the gateway that hosts the hearings, and only hearings nobody holds: another gateway on this database
    // may hold some of them (their leases).
    if hearings.host().await {
        let restored = hearings.restore().await?;
        if restored > 0 {
            tracing::info!(count = restored, "hearings restored from their journals");
        }
    }
    hearings.look_elsewhere().await;
    // Renews this gateway's hearing leases and takes over those of a gateway that died, while the registry lives.
    drop(hearings.keep_leases());
    Ok(AppState {
        gateway,
        secure_cookies: config.tls_cert.is_some(),
        hearings,
        ice_servers,
        sign_ins,
        witness,
        cosigning,
        outflow: Arc::default(),
        partnering,
        transfers,
        metrics,
    })
}

/// How often a gateway asks whether a duty is (still) its own.
const DUTY_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// Timestamps the shared log's checkpoints while this gateway holds that duty: one gateway on a database does, so
/// that the log gets one timestamp per checkpoint and authority, not one per gateway. Another takes it over once
/// the holder's lease expires unrenewed ([`custodia_catalog::DUTY_EXPIRY`]) and it looks again ([`DUTY_CHECK`]).
async fn timestamp_while_on_duty(timestamper: Arc<crate::timestamping::Timestamper>, gateway: Gateway) {
    let catalog = gateway.catalog();
    let node = custodia_service::gateway::new_id("node");
    loop {
        let lease = match catalog.try_duty(custodia_catalog::Duty::TIMESTAMPING, &node).await {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                tokio::time::sleep(DUTY_CHECK).await;
                continue;
            }
            Err(err) => {
                tracing::warn!(error = %custodia_service::error::Chain(&err), "cannot ask whether this gateway timestamps the log");
                tokio::time::sleep(DUTY_CHECK).await;
                continue;
            }
        };
        tracing::info!("this gateway timestamps the log's checkpoints");
        let stamping = tokio::spawn(timestamper.clone().run(gateway.clone()));
        loop {
            tokio::time::sleep(DUTY_CHECK).await;
            if stamping.is_finished() {
                return; // the log was closed
            }
            if !lease.still_held().await {
                tracing::warn!("another gateway took over timestamping the log");
                stamping.abort();
                break;
            }
        }
    }
}

/// One gateway per data directory: an exclusive lock on `.gateway.lock` in it, held for as long as the custody log
/// is open, so that a second process started on the same directory (its uploads, recordings, keys) refuses to start.
fn hold_the_data_dir(data_dir: &std::path::Path) -> anyhow::Result<Option<custodia_ledger::SequencerGuard>> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("making the data directory {}", data_dir.display()))?;
    let path = data_dir.join(".gateway.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    lock.try_lock().map_err(|err| match err {
        std::fs::TryLockError::WouldBlock => {
            anyhow::anyhow!("another gateway is running on the data directory {}", absolute(data_dir).display())
        }
        std::fs::TryLockError::Error(err) => anyhow::Error::new(err).context(format!("locking {}", path.display())),
    })?;
    Ok(Some(Arc::new(lock)))
}

/// What start-up found of the bucket's Object Lock, for `/metrics`.
#[derive(Debug, Clone, Copy)]
pub struct ObjectLockReport {
    /// `enabled`, `not_enabled`, `not_supported` ([`custodia_store::object_lock::ObjectLockState::label`]),
    /// `unknown` (the bucket did not say), or `local` (no bucket).
    pub state: &'static str,
    /// The days of retention the gateway gives each evidence object; 0 when it gives none.
    pub retention_days: u32,
}

impl Default for ObjectLockReport {
    fn default() -> Self {
        Self { state: "local", retention_days: 0 }
    }
}

/// The S3 bucket, opened: its store, the retention evidence objects get there, and what was found of its Object
/// Lock.
struct OpenBucket {
    store: Arc<dyn ObjectStore>,
    retention: Option<custodia_store::object_lock::EvidenceRetention>,
    report: ObjectLockReport,
}

/// Opens the S3 bucket, if one is configured, after asking it about Object Lock (`GET /<bucket>?object-lock`):
/// the answer is logged, and a gateway asked for retention (`CUSTODIA_S3_RETENTION_DAYS`) that the bucket cannot
/// give refuses to start. In a bucket with Object Lock, every write carries a SHA-256 checksum, which S3 requires
/// of writes that a default retention rule locks.
async fn open_bucket(config: &ServeConfig, clock: &Clock) -> anyhow::Result<Option<OpenBucket>> {
    use custodia_store::object_lock::{self, ObjectLockState, RetentionPlan, S3ObjectLock};
    let Some((builder, options)) = object_store_for(config) else { return Ok(None) };
    let s3 = &config.s3;
    let asked = s3.retention();
    let first = builder.clone().build().context("configuring the S3 store")?;
    let url = object_lock::bucket_url(s3.endpoint.as_deref(), &s3.region, s3.bucket.as_deref().unwrap_or_default());
    let lock = S3ObjectLock::new(&first, url, s3.region.clone(), &options)
        .context("configuring the client for the bucket's Object Lock")?;
    let state = match lock.state().await {
        Ok(state) => Some(state),
        Err(err) if asked.is_some() => {
            return Err(anyhow::Error::new(err).context(
                "asking the bucket for its Object Lock configuration, which CUSTODIA_S3_RETENTION_DAYS needs",
            ));
        }
        Err(err) => {
            tracing::warn!(
                error = %crate::problem::Chain(&err),
                "could not ask the bucket for its Object Lock configuration: the gateway gives evidence objects no \
                 retention (none is asked for: CUSTODIA_S3_RETENTION_DAYS is 0)"
            );
            None
        }
    };
    let plan = match state {
        Some(state) => object_lock::plan_retention(state, asked).map_err(|refused| {
            tracing::error!(
                object_lock = state.label(),
                "{refused}: refusing to start; enable Object Lock on the bucket, or set CUSTODIA_S3_RETENTION_DAYS=0"
            );
            anyhow::Error::new(refused).context(
                "CUSTODIA_S3_RETENTION_DAYS asks for Object Lock retention, which the bucket cannot give: enable \
                 Object Lock on the bucket (a server that supports it), or set CUSTODIA_S3_RETENTION_DAYS=0",
            )
        })?,
        None => RetentionPlan::Unlocked,
    };
    match (state, plan) {
        (_, RetentionPlan::Retain(rule)) => tracing::info!(
            object_lock = "enabled",
            mode = %rule.mode,
            days = rule.days,
            "the bucket has Object Lock: each evidence object (artefact, manifest, attached policy) is given retention \
             once written"
        ),
        (_, RetentionPlan::BucketDefault(default)) => tracing::info!(
            object_lock = "enabled",
            mode = %default.mode,
            period = %default.period,
            "the bucket has Object Lock and a default retention rule, which locks every object version written \
             (staging objects, chunks and the log's checkpoints as well); the gateway sets no retention of its own"
        ),
        (Some(ObjectLockState::Enabled { .. }), RetentionPlan::Unlocked) => tracing::warn!(
            object_lock = "enabled",
            "the bucket has Object Lock but no default retention rule, and CUSTODIA_S3_RETENTION_DAYS is 0: evidence \
             objects are not locked"
        ),
        (Some(state), RetentionPlan::Unlocked) => tracing::info!(
            object_lock = state.label(),
            "the bucket has no Object Lock: evidence objects are not locked in the store (they stay write-once by \
             content addressing and name checks)"
        ),
        (None, RetentionPlan::Unlocked) => {}
    }
    let store = match state {
        Some(ObjectLockState::Enabled { .. }) => builder
            .with_checksum_algorithm(object_store::aws::Checksum::SHA256)
            .build()
            .context("configuring the S3 store")?,
        _ => first,
    };
    let retention = match plan {
        RetentionPlan::Retain(rule) => {
            let clock = clock.clone();
            Some(object_lock::EvidenceRetention::new(Arc::new(lock), rule, move || clock.now()))
        }
        RetentionPlan::BucketDefault(_) | RetentionPlan::Unlocked => None,
    };
    let report = ObjectLockReport {
        state: state.map_or("unknown", |state| state.label()),
        retention_days: retention.as_ref().map_or(0, |retention| retention.rule().days),
    };
    Ok(Some(OpenBucket { store: Arc::new(store), retention, report }))
}

/// The S3 store's builder and HTTP client options, if a bucket is configured.
fn object_store_for(config: &ServeConfig) -> Option<(object_store::aws::AmazonS3Builder, object_store::ClientOptions)> {
    let s3 = &config.s3;
    let Some(bucket) = &s3.bucket else { return None };
    let mut options = object_store::ClientOptions::new().with_connect_timeout(std::time::Duration::from_secs(3));
    if let Some(endpoint) = &s3.endpoint {
        options = options.with_allow_http(endpoint.starts_with("http://"));
    }
    // Ask for create-only writes the way S3 does (`If-None-Match: *`, and a conditional multipart completion for a
    // copy); whether the server honours them is probed at start-up, never assumed.
    let mut builder = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(&s3.region)
        .with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch)
        .with_copy_if_not_exists(object_store::aws::S3CopyIfNotExists::Multipart)
        // The payload is not hashed a second time to sign it where TLS already keeps it intact, or where it never
        // leaves the machine; the gateway has hashed every byte itself (the digest it records).
        .with_unsigned_payload(payload_protected_in_transit(s3.endpoint.as_deref()))
        // A store that is down fails a request within seconds (a 503 the client may retry) instead of holding it
        // for object_store's default of three minutes of retries.
        .with_retry(object_store::RetryConfig {
            max_retries: 3,
            retry_timeout: std::time::Duration::from_secs(10),
            ..Default::default()
        })
        .with_client_options(options.clone());
    if let Some(endpoint) = &s3.endpoint {
        builder = builder.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
    }
    if let (Some(id), Some(secret)) = (&s3.access_key_id, &s3.secret_access_key) {
        builder = builder.with_access_key_id(id).with_secret_access_key(secret);
    }
    Some((builder, options))
}

/// Removes `dir`, where earlier versions kept whole copies of uploads to probe them (evidence in the clear, which
/// a crash could leave behind), if it is there. One that cannot be removed is reported, and the gateway starts all
/// the same: nothing reads or writes there any more.
fn remove_old_probe_copies(dir: &std::path::Path) {
    let removed = match std::fs::symlink_metadata(dir) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return,
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(dir),
        _ => std::fs::remove_file(dir),
    };
    match removed {
        Ok(()) => tracing::info!("removed the probe copies an earlier version kept"),
        Err(err) => tracing::warn!(
            error = %custodia_service::error::Chain(&err),
            "could not remove the probe copies an earlier version kept (the data directory's probing/): remove them"
        ),
    }
}

/// Whether requests to the S3 endpoint keep their bodies intact without a signed payload hash: HTTPS (AWS itself,
/// when no endpoint is named), or loopback.
fn payload_protected_in_transit(endpoint: Option<&str>) -> bool {
    let Some(endpoint) = endpoint else { return true };
    if endpoint.starts_with("https://") {
        return true;
    }
    let host = endpoint.trim_start_matches("http://").split(['/', ':']).next().unwrap_or_default();
    matches!(host, "127.0.0.1" | "localhost") || endpoint.trim_start_matches("http://").starts_with("[::1]")
}

/// On the very first start there is no one to create accounts: make an administrator, and leave its password
/// in an owner-only file rather than in the log.
async fn bootstrap_admin(
    gateway: &Gateway,
    sign_ins: &custodia_service::identity::SignInThrottle,
    config: &GatewayConfig,
) -> anyhow::Result<()> {
    if gateway.catalog().count_accounts().await? > 0 {
        return Ok(());
    }
    let password = custodia_service::identity::new_secret();
    let path = config.data_dir.join("keys").join("initial-admin-password");
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
        writeln!(file, "{password}")?;
    }
    let first_administrator = custodia_service::directory::NewAccount {
        username: "admin".into(),
        display_name: "Administrator".into(),
        password: &password,
        jurisdiction: "local".into(),
        is_admin: true,
    };
    let made = gateway.create_account(None, sign_ins, first_administrator).await;
    match made {
        Ok(_) => {
            tracing::info!(username = "admin", password_file = %absolute(&path).display(), "made the first administrator");
            Ok(())
        }
        // Another gateway on the same database made it first (both started on an empty catalog): its password
        // file is the one that holds; this one's would not open anything.
        Err(custodia_service::gateway::GatewayError::Conflict(_)) => {
            std::fs::remove_file(&path)?;
            tracing::info!("another gateway on this database made the first administrator");
            Ok(())
        }
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::payload_protected_in_transit;

    #[test]
    fn only_https_and_loopback_skip_the_signed_payload_hash() {
        for protected in [None, Some("https://s3.example"), Some("http://127.0.0.1:3900"), Some("http://[::1]:3900")] {
            assert!(payload_protected_in_transit(protected), "{protected:?}");
        }
        for exposed in ["http://garage.internal:3900", "http://10.0.0.5:3900", "http://127.0.0.1.evil.example"] {
            assert!(!payload_protected_in_transit(Some(exposed)), "{exposed}");
        }
    }
}
