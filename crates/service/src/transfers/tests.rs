//! The transfer engine against a partner in memory ([`Wire`], a [`PartnerClient`]): the sending gateway's driver,
//! stepped by hand, and a receiving gateway's engine behind the wire, each with its own catalog, store and log. The
//! wire refuses or drops what a test tells it to, and notes every request as it went.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use custodia_catalog::{Account, Catalog};
use custodia_core::{ArtefactId, CaseId, Label, Sha256};
use custodia_ledger::{Log, LogOptions, LogSigner};
use custodia_partners::evidence::NegativeReason;
use custodia_partners::transfer::{Offer, Progress};
use custodia_partners::{Card, Partner, Registry};
use custodia_store::ArtefactStore;
use custodia_tests::failing_store::FailingStore;
use ed25519_dalek::SigningKey;
use futures::future::BoxFuture;
use object_store::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{CHUNK_BYTES, Partnership, TransferTiming, Transfers};
use crate::clock::Clock;
use crate::gateway::{Gateway, GatewayError, UploadRequest};
use crate::identity::{Channel, Principal};
use crate::partner_client::{PartnerClient, PartnerError, Refusal};

const TIMING: TransferTiming = TransferTiming {
    relay: Duration::from_secs(3600),
    delivery: Duration::from_secs(3600),
    retrieval: Duration::from_secs(3600),
    retry: Duration::from_secs(1),
};

/// One gateway: its evidence service, its name among partners, and its request key.
struct Side {
    gateway: Gateway,
    name: String,
    key: SigningKey,
    dir: tempfile::TempDir,
}

impl Side {
    async fn open(name: &str) -> Self {
        Self::open_on(name, None).await
    }

    /// A gateway whose log is kept in `log_store` (an in-memory one that a test makes fail), or in a directory.
    async fn open_on(name: &str, log_store: Option<Arc<FailingStore>>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let catalog =
            Catalog::connect(&format!("sqlite://{}?mode=rwc", dir.path().join("catalog.db").display())).await.unwrap();
        let signer = LogSigner::generate(name).unwrap();
        let log_signer = LogSigner::from_skey(signer.expose_secret()).unwrap();
        let log = match log_store {
            Some(store) => {
                let coordination = catalog.log_coordination();
                Log::open_coordinated(store, Path::default(), log_signer, LogOptions::default(), coordination, None)
                    .await
            }
            None => {
                let log_dir = dir.path().join("log");
                Log::open_local_coordinated(
                    &log_dir,
                    log_signer,
                    LogOptions::default(),
                    catalog.log_coordination(),
                    None,
                )
                .await
            }
        }
        .unwrap();
        let objects = dir.path().join("objects");
        let artefacts = ArtefactStore::local(&objects).unwrap();
        let manifests = Arc::new(object_store::local::LocalFileSystem::new_with_prefix(&objects).unwrap());
        let gateway = Gateway::new(catalog, artefacts, manifests, log, &signer, Clock::default(), 1 << 30);
        let mut seed = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut seed);
        Self { gateway, name: name.to_owned(), key: SigningKey::from_bytes(&seed), dir }
    }

    /// This gateway as its partners pin it.
    fn as_partner(&self) -> Partner {
        use base64::Engine as _;
        let vkey = self.gateway.verifier().to_string();
        let card = Card {
            name: self.name.clone(),
            jurisdiction: "ES".into(),
            base_url: format!("https://{}", self.name),
            log_vkey: vkey.clone(),
            witness_vkey: vkey,
            request_key: base64::engine::general_purpose::STANDARD.encode(self.key.verifying_key().as_bytes()),
        };
        let registry = Registry::parse(&serde_json::json!({ "partners": [card] }).to_string()).unwrap();
        registry.partner(&self.name).unwrap().clone()
    }

    /// This gateway's transfers with `partner`, reached through `client`.
    fn transfers(&self, partner: &Side, client: Arc<dyn PartnerClient>) -> Arc<Transfers> {
        let card = Card::of(&partner.as_partner());
        let registry = Registry::parse(&serde_json::json!({ "partners": [card] }).to_string()).unwrap();
        let partnership = Partnership::new(registry, self.name.clone(), self.key.clone());
        let dir = self.dir.path().join("transfers");
        Arc::new(Transfers::new(self.gateway.clone(), partnership, client, Arc::default(), dir, TIMING).unwrap())
    }

    /// A clerk of case `case-1` here, and an artefact of `payload` they uploaded to it.
    async fn clerk_with(&self, payload: &[u8]) -> (Principal, ArtefactId) {
        let catalog = self.gateway.catalog();
        let now = self.gateway.now().to_string();
        let account = Account {
            id: crate::gateway::new_id("acct"),
            username: "clerk".into(),
            display_name: "Clerk".into(),
            password_hash: "!".into(),
            is_admin: false,
            jurisdiction: "ES".into(),
        };
        catalog.create_account(&account, &now).await.unwrap();
        let case = custodia_catalog::Case { id: "case-1".into(), title: "Case".into(), created_at: now };
        catalog.create_case(&case).await.unwrap();
        catalog.set_member("case-1", &account.id, "clerk").await.unwrap();
        let clerk = Principal::new(&account, Channel::Session);
        let request = UploadRequest {
            purpose: Label::new("investigation").unwrap(),
            media_type: Label::new("application/octet-stream").unwrap(),
            original_name: None,
            expected_sha256: None,
            policy: None,
        };
        let body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::copy_from_slice(payload))]);
        let case = CaseId::new("case-1").unwrap();
        let registered = self.gateway.ingest(&clerk, &case, request, body).await.unwrap();
        (clerk, registered.artefact)
    }
}

/// A partner gateway in memory: the receiving gateway's engine, called as its routes call it, for the sender it
/// pins. It refuses once, as busy, each chunk at an offset in `refuse_once`, is unreachable while `unreachable`, and
/// to requests to finish while `no_completion`, and notes each request it took or refused.
struct Wire {
    receiver: Option<Arc<Transfers>>,
    sender: Partner,
    refuse_once: Mutex<HashSet<u64>>,
    unreachable: bool,
    no_completion: AtomicBool,
    seen: Mutex<Vec<String>>,
}

impl Wire {
    fn new(receiver: Option<Arc<Transfers>>, sender: Partner) -> Self {
        Self {
            receiver,
            sender,
            refuse_once: Mutex::default(),
            unreachable: false,
            no_completion: AtomicBool::new(false),
            seen: Mutex::default(),
        }
    }

    fn note(&self, what: String) {
        self.seen.lock().unwrap().push(what);
    }

    /// What the wire saw since the last look.
    fn seen(&self) -> Vec<String> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }

    /// The receiver, or why it cannot be reached.
    fn receiver(&self) -> Result<&Arc<Transfers>, PartnerError> {
        match (&self.receiver, self.unreachable) {
            (Some(receiver), false) => Ok(receiver),
            _ => Err(PartnerError::Unreachable("connection refused".into())),
        }
    }
}

/// A receiving gateway's refusal as its routes would answer it.
fn refused(err: GatewayError) -> PartnerError {
    let (refusal, status) = match err {
        GatewayError::Conflict(_) => (Refusal::Conflict, 409),
        GatewayError::Unavailable { .. } => (Refusal::NotNow, 503),
        _ => (Refusal::Refused, 400),
    };
    PartnerError::Refused { refusal, status, detail: err.to_string() }
}

impl PartnerClient for Wire {
    fn offer<'a>(&'a self, _partner: &'a Partner, offer: String) -> BoxFuture<'a, Result<Progress, PartnerError>> {
        Box::pin(async move {
            let offer: Offer = serde_json::from_str(&offer).unwrap();
            let progress = self.receiver()?.offered(&self.sender, offer).await.map_err(refused)?;
            self.note(format!("offer: written {}", progress.written));
            Ok(progress)
        })
    }

    fn chunk<'a>(
        &'a self,
        _partner: &'a Partner,
        transfer: &'a str,
        offset: u64,
        bytes: Bytes,
    ) -> BoxFuture<'a, Result<Progress, PartnerError>> {
        Box::pin(async move {
            if self.refuse_once.lock().unwrap().remove(&offset) {
                self.note(format!("chunk {offset}: refused, busy"));
                return Err(PartnerError::Refused { refusal: Refusal::NotNow, status: 503, detail: "busy".into() });
            }
            let progress = self.receiver()?.chunk(&self.sender, transfer, offset, bytes).await.map_err(refused)?;
            self.note(format!("chunk {offset}"));
            Ok(progress)
        })
    }

    fn complete<'a>(
        &'a self,
        _partner: &'a Partner,
        transfer: &'a str,
    ) -> BoxFuture<'a, Result<Progress, PartnerError>> {
        Box::pin(async move {
            if self.no_completion.load(Ordering::SeqCst) {
                self.note("complete: unreachable".into());
                return Err(PartnerError::Unreachable("connection refused".into()));
            }
            let progress = self.receiver()?.complete(&self.sender, transfer).await.map_err(refused)?;
            self.note(format!("complete: {:?}", progress.stage));
            Ok(progress)
        })
    }

    fn progress<'a>(
        &'a self,
        _partner: &'a Partner,
        transfer: &'a str,
    ) -> BoxFuture<'a, Result<Progress, PartnerError>> {
        Box::pin(async move { self.receiver()?.progress_of(&self.sender, transfer).await.map_err(refused) })
    }

    fn post<'a>(
        &'a self,
        _partner: &'a Partner,
        path: &'a str,
        _body: String,
    ) -> BoxFuture<'a, Result<(), PartnerError>> {
        Box::pin(async move {
            self.receiver()?;
            self.note(format!("post {path}"));
            Ok(())
        })
    }
}

/// The events of transfer `id`'s evidences as `gateway` keeps them, in ladder order.
async fn ladder(gateway: &Gateway, id: &str) -> Vec<String> {
    gateway.catalog().transfer_evidences(id).await.unwrap().into_iter().map(|evidence| evidence.event).collect()
}

/// A sent chunk refused as busy fails the step; the next step offers again, is told how far the receiver has
/// written (the chunk before the refused one, not yet synced: nothing durable), and sends from there, so the chunk
/// taken is not sent again; the bundle then verifies there, is delivered, and the delivery is logged here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_refused_midway_resumes_from_the_offset_the_receiver_reports_and_is_delivered() {
    let (sending, receiving) = (Side::open("sender.example").await, Side::open("receiver.example").await);
    let payload = custodia_tests::pseudo_random_bytes(CHUNK_BYTES as usize + 1000, 7);
    let (clerk, artefact) = sending.clerk_with(&payload).await;
    let receiver = receiving.transfers(&sending, Arc::new(Wire::new(None, sending.as_partner())));
    assert!(receiver.hold_the_duty().await);
    let wire = Arc::new(Wire::new(Some(receiver.clone()), sending.as_partner()));
    wire.refuse_once.lock().unwrap().insert(CHUNK_BYTES);
    let sender = sending.transfers(&receiving, wire.clone());

    // Submitted while off duty, so that no driver runs: its steps are taken here, one by one.
    let purpose = Label::new("mutual legal assistance").unwrap();
    let view = sender.send(&clerk, &artefact, "receiver.example", &purpose).await.unwrap();
    assert_eq!(view.stage, "sending");
    assert!(sender.hold_the_duty().await);

    assert_eq!(sender.drive_once(&view.id).await, Some(TIMING.retry), "a refused chunk fails the step");
    let mut seen = wire.seen();
    seen.sort();
    assert_eq!(seen, ["chunk 0", "chunk 8388608: refused, busy", "offer: written 0"]);
    let row = sending.gateway.catalog().transfer(&view.id).await.unwrap().unwrap();
    assert_eq!((row.stage.as_str(), row.received), ("sending", 0), "nothing durable there yet");
    assert_eq!(ladder(&sending.gateway, &view.id).await, ["SubmissionAcceptance", "RelayAcceptance"]);

    assert!(sender.hold_the_duty().await && receiver.hold_the_duty().await);
    assert_eq!(sender.drive_once(&view.id).await, Some(Duration::ZERO), "the transfer moved on");
    assert_eq!(
        wire.seen(),
        [format!("offer: written {CHUNK_BYTES}"), format!("chunk {CHUNK_BYTES}"), "complete: Delivered".into()],
        "sent again from the offset the receiver reported, never from the start"
    );
    let row = sending.gateway.catalog().transfer(&view.id).await.unwrap().unwrap();
    assert_eq!((row.stage.as_str(), row.received), ("delivered", payload.len() as i64));
    let delivered = ["SubmissionAcceptance", "RelayAcceptance", "Delivery"];
    assert_eq!(ladder(&sending.gateway, &view.id).await, delivered);
    assert_eq!(ladder(&receiving.gateway, &view.id).await, delivered);
    let received = receiving.gateway.catalog().transfer(&view.id).await.unwrap().unwrap();
    let taken = receiving.gateway.catalog().artefact(received.artefact_id.as_deref().unwrap()).await.unwrap().unwrap();
    assert_eq!(taken.sha256, Sha256::of(&payload).to_hex(), "the payload taken into custody is the one sent");

    // Delivered: the driver now asks, at longer intervals, for the retrieval.
    assert_eq!(sender.drive_once(&view.id).await, Some(TIMING.retry * super::ASKS_APART));
}

/// A partner that cannot be reached past the relay timeout: the sender issues `RelayFailure` itself, and the
/// transfer's driver ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_partner_past_the_relay_timeout_gets_a_relay_failure_from_the_sender() {
    let (sending, receiving) = (Side::open("sender.example").await, Side::open("receiver.example").await);
    let (clerk, artefact) = sending.clerk_with(b"a small artefact").await;
    let wire = Arc::new(Wire { unreachable: true, ..Wire::new(None, sending.as_partner()) });
    let mut sender = sending.transfers(&receiving, wire.clone());
    Arc::get_mut(&mut sender).unwrap().timing.relay = Duration::ZERO;

    let purpose = Label::new("mutual legal assistance").unwrap();
    let view = sender.send(&clerk, &artefact, "receiver.example", &purpose).await.unwrap();
    assert!(sender.hold_the_duty().await);
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(sender.drive_once(&view.id).await, Some(TIMING.retry));
    assert!(wire.seen().is_empty(), "nothing reached the partner");
    let row = sending.gateway.catalog().transfer(&view.id).await.unwrap().unwrap();
    assert_eq!(row.stage, "failed");
    assert_eq!(ladder(&sending.gateway, &view.id).await, ["SubmissionAcceptance", "RelayFailure"]);
    assert_eq!(sender.drive_once(&view.id).await, None, "a failed transfer is not driven");
}

/// The receiving gateway closes a delivered transfer's retrieval (a member downloads it) while its log's store
/// fails, and is stopped once the transaction that sequenced the `Retrieval`'s record and moved the transfer on has
/// committed, before it could keep the evidence with its proof (its task dropped, as a kill would). The evidence
/// was kept in that transaction, pending: the sender asking meanwhile is sent the proven rungs only, and once the
/// store answers again the duty holder's sweep completes it, and the sender's next ask receives the `Retrieval`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retrieval_whose_gateway_stops_before_its_proof_is_completed_by_the_sweep_and_reaches_the_sender() {
    let log_store = Arc::new(FailingStore::default());
    let sending = Side::open("sender.example").await;
    let receiving = Side::open_on("receiver.example", Some(log_store.clone())).await;
    let (clerk, artefact) = sending.clerk_with(b"a small artefact").await;
    let receiver = receiving.transfers(&sending, Arc::new(Wire::new(None, sending.as_partner())));
    assert!(receiver.hold_the_duty().await);
    let wire = Arc::new(Wire::new(Some(receiver.clone()), sending.as_partner()));
    let sender = sending.transfers(&receiving, wire.clone());
    let purpose = Label::new("mutual legal assistance").unwrap();
    let view = sender.send(&clerk, &artefact, "receiver.example", &purpose).await.unwrap();
    assert!(sender.hold_the_duty().await);
    assert_eq!(sender.drive_once(&view.id).await, Some(Duration::ZERO), "delivered");
    let delivered = ["SubmissionAcceptance", "RelayAcceptance", "Delivery"];
    assert_eq!(ladder(&sending.gateway, &view.id).await, delivered);

    // A member there downloads it while the log's store fails; the gateway is stopped once the transfer moved on.
    let received = receiving.gateway.catalog().transfer(&view.id).await.unwrap().unwrap();
    let received = ArtefactId::new(received.artefact_id.unwrap()).unwrap();
    let member = Account {
        id: crate::gateway::new_id("acct"),
        username: "judge".into(),
        display_name: "Judge".into(),
        password_hash: "!".into(),
        is_admin: false,
        jurisdiction: "IT".into(),
    };
    receiving.gateway.catalog().create_account(&member, &receiving.gateway.now().to_string()).await.unwrap();
    let member = Principal::new(&member, Channel::Session);
    log_store.fail_puts.store(true, Ordering::SeqCst);
    let closing = tokio::spawn({
        let receiver = receiver.clone();
        async move { receiver.retrieved(&member, &received).await }
    });
    let stage = || async { receiving.gateway.catalog().transfer(&view.id).await.unwrap().unwrap().stage };
    for _ in 0..6000 {
        if stage().await != "delivered" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    closing.abort();
    let _ = closing.await;
    assert_eq!(stage().await, "retrieved", "the transaction that moved it committed");
    let kept = receiving.gateway.catalog().transfer_evidences(&view.id).await.unwrap();
    assert_eq!(
        kept.iter().map(|kept| kept.event.as_str()).collect::<Vec<_>>(),
        [&delivered[..], &["Retrieval"]].concat()
    );
    assert!(kept[3].is_pending(), "kept without its proof: {:?}", kept[3]);
    receiver.sweep().await.unwrap();
    assert_eq!(receiver.evidences_pending(), 1, "a sweep while the store fails leaves it pending, and counts it");
    assert!(kept[..3].iter().all(|kept| kept.own.is_some()));
    let shown = receiver.view(&received_row(&receiving, &view.id).await).await.unwrap();
    assert!(shown.evidences[3].own.is_none() && shown.evidences[3].pending, "shown as pending, not as logged");
    let told = receiver.progress(&received_row(&receiving, &view.id).await).await.unwrap();
    assert_eq!(told.stage, custodia_partners::transfer::Stage::Delivered, "nor told to the sender as retrieved");

    // The sender asks: it is sent what is proven, and the transfer stays delivered there.
    assert_eq!(sender.drive_once(&view.id).await, Some(TIMING.retry * super::ASKS_APART));
    let sent = sending.gateway.catalog().transfer(&view.id).await.unwrap().unwrap();
    assert_eq!(sent.stage, "delivered");
    assert_eq!(ladder(&sending.gateway, &view.id).await, delivered);

    // The store answers again: the duty holder's sweep completes the evidence, and the sender's next ask gets it.
    log_store.fail_puts.store(false, Ordering::SeqCst);
    for _ in 0..5 {
        receiver.sweep().await.unwrap();
        if receiving.gateway.catalog().pending_transfer_evidences().await.unwrap().is_empty() {
            break;
        }
    }
    let kept = receiving.gateway.catalog().transfer_evidences(&view.id).await.unwrap();
    assert!(!kept[3].is_pending() && kept[3].own.is_some(), "completed with its proof: {:?}", kept[3]);
    assert_eq!(receiver.evidences_pending(), 0);
    let told = receiver.progress(&received_row(&receiving, &view.id).await).await.unwrap();
    assert_eq!(told.stage, custodia_partners::transfer::Stage::Retrieved);
    assert_eq!(sender.drive_once(&view.id).await, Some(Duration::ZERO), "the transfer moved on at the sender");
    let sent = sending.gateway.catalog().transfer(&view.id).await.unwrap().unwrap();
    assert_eq!(sent.stage, "retrieved");
    assert_eq!(ladder(&sending.gateway, &view.id).await, [&delivered[..], &["Retrieval"]].concat());
    assert_eq!(sender.drive_once(&view.id).await, None, "a retrieved transfer is not driven");
}

/// The receiving gateway, restarted once every chunk was durable (so nothing of the payload was hashed as it
/// arrived), cannot read the payload it staged (a directory where its file was: EISDIR on the first read). That
/// is its own failure, not the bundle's: the `NonDelivery` it signs, logs and sends says `storage-failed`, never
/// `payload-invalid`, which would blame the partner in signed evidence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staged_payload_unreadable_here_is_a_storage_failure_not_an_invalid_payload() {
    let (sending, receiving) = (Side::open("sender.example").await, Side::open("receiver.example").await);
    let payload = custodia_tests::pseudo_random_bytes(3000, 11);
    let (clerk, artefact) = sending.clerk_with(&payload).await;
    let receiver = receiving.transfers(&sending, Arc::new(Wire::new(None, sending.as_partner())));
    assert!(receiver.hold_the_duty().await);
    let wire = Arc::new(Wire::new(Some(receiver.clone()), sending.as_partner()));
    wire.no_completion.store(true, Ordering::SeqCst);
    let sender = sending.transfers(&receiving, wire.clone());
    let purpose = Label::new("mutual legal assistance").unwrap();
    let view = sender.send(&clerk, &artefact, "receiver.example", &purpose).await.unwrap();
    assert!(sender.hold_the_duty().await);
    assert_eq!(sender.drive_once(&view.id).await, Some(TIMING.retry), "the request to finish did not get through");
    assert_eq!(wire.seen(), ["offer: written 0", "chunk 0", "complete: unreachable"]);
    assert_eq!(received_row(&receiving, &view.id).await.received, payload.len() as i64, "all of it durable there");

    // As after a restart: nothing of the payload was hashed in this process. Its staged file cannot be read.
    receiver.arriving.lock().unwrap().clear();
    let staged = receiver.staging(&view.id);
    std::fs::remove_file(&staged).unwrap();
    std::fs::create_dir(&staged).unwrap();

    wire.no_completion.store(false, Ordering::SeqCst);
    assert!(sender.hold_the_duty().await && receiver.hold_the_duty().await);
    assert_eq!(sender.drive_once(&view.id).await, Some(Duration::ZERO), "the transfer moved on");
    assert_eq!(wire.seen(), ["offer: written 3000", "complete: Failed"]);
    let failed = ["SubmissionAcceptance", "RelayAcceptance", "NonDelivery"];
    assert_eq!(ladder(&receiving.gateway, &view.id).await, failed);
    assert_eq!(ladder(&sending.gateway, &view.id).await, failed);
    assert_eq!(received_row(&receiving, &view.id).await.stage, "failed");
    let kept = receiving.gateway.catalog().transfer_evidences(&view.id).await.unwrap();
    let logged: custodia_partners::transfer::Logged = serde_json::from_str(kept[2].own.as_deref().unwrap()).unwrap();
    let evidence = super::unverified(&logged).unwrap();
    assert_eq!(evidence.reason, Some(NegativeReason::StorageFailed), "not the partner's fault: {evidence:?}");
}

/// A staged file shorter than the bytes counted as received ends the payload early for the verifier, and is kept
/// apart as this gateway's failure; one longer is read only as far as the payload goes.
#[test]
fn a_staged_payload_is_read_to_its_counted_length_and_a_short_one_is_a_failure_here() {
    use std::io::Read as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("xfer.part");
    std::fs::write(&path, b"abc").unwrap();
    let mut failed = None;
    let mut read = Vec::new();
    let mut payload = super::StagedPayload { file: std::fs::File::open(&path).unwrap(), left: 5, failed: &mut failed };
    let told = payload.read_to_end(&mut read).unwrap_err();
    assert_eq!((told.kind(), read.as_slice()), (std::io::ErrorKind::UnexpectedEof, &b"abc"[..]));
    assert_eq!(failed.map(|kept| kept.kind()), Some(std::io::ErrorKind::UnexpectedEof), "kept as this gateway's");

    let mut failed = None;
    let mut read = Vec::new();
    let mut payload = super::StagedPayload { file: std::fs::File::open(&path).unwrap(), left: 2, failed: &mut failed };
    payload.read_to_end(&mut read).unwrap();
    assert_eq!((read.as_slice(), failed.is_none()), (&b"ab"[..], true));
}

#[test]
fn an_outcome_report_withholds_its_note_from_debug() {
    let report = super::OutcomeReport {
        id: "out-1".into(),
        outcome: super::OutcomeKind::Other,
        note: Some("Maria Rossi testified".into()),
    };
    let shown = format!("{report:?}");
    assert!(!shown.contains("Maria") && shown.contains("out-1"), "{shown}");
}

async fn received_row(side: &Side, id: &str) -> custodia_catalog::TransferRow {
    side.gateway.catalog().transfer(id).await.unwrap().unwrap()
}
