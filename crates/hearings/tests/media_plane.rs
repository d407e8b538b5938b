//! The live hearing carries out its state machine's effects on a media plane (`custodia_hearings::media_plane`). A
//! plane that only remembers what it was told stands in for the WebRTC room here, so the adapter between the rules
//! and the media is tested without any WebRTC peer and without HTTP: [`Hearings`] is driven directly, over a
//! [`Gateway`] on the embedded defaults (a SQLite catalog, a local directory for the objects and the custody log,
//! in a temporary directory). It checks who is let into the room, where each is, who is recorded, and that a
//! removed participant's connection is closed.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use custodia_catalog::{Account, Case, Catalog};
use custodia_core::{CaseId, Label};
use custodia_hearing::HearingRole;
use custodia_hearings::live::{ConsoleStep, Hearings, InviteRequest, Outbox, RECEIVE_SLOTS, RoomStep, ScheduleRequest};
use custodia_hearings::media_plane::{MediaPlane, MediaPlanes};
use custodia_hearings::room_messages::RoomMessage;
use custodia_hearings::texts::CourtTexts;
use custodia_hearings::turn::IceServers;
use custodia_ledger::{Log, LogOptions, LogSigner};
use custodia_recorder::engine::EngineError;
use custodia_recorder::masking::MaskerFactory;
use custodia_recorder::segmenter::RecordingSummary;
use custodia_recorder::sfu::{AudioFrom, Connected, Offered, Protection, RecorderFactory, RoomCounters, Zone};
use custodia_service::clock::Clock;
use custodia_service::gateway::Gateway;
use custodia_service::identity::{Channel, Principal};
use custodia_store::ArtefactStore;
use futures::future::BoxFuture;
use serde_json::{Value, json};

/// A gateway on the embedded defaults in `dir`, as `custodia serve` opens one with no database or bucket
/// configured: a SQLite catalog, and the objects and the custody log in local directories.
async fn embedded_gateway(dir: &std::path::Path) -> Gateway {
    let catalog = Catalog::connect(&format!("sqlite://{}?mode=rwc", dir.join("catalog.db").display())).await.unwrap();
    let signer = LogSigner::generate("custodia.test").unwrap();
    let log_signer = LogSigner::from_skey(signer.expose_secret()).unwrap();
    let coordination = catalog.log_coordination();
    let log = Log::open_local_coordinated(&dir.join("log"), log_signer, LogOptions::default(), coordination, None)
        .await
        .unwrap();
    let objects = dir.join("objects");
    let artefacts = ArtefactStore::local(&objects).unwrap();
    let manifests = Arc::new(object_store::local::LocalFileSystem::new_with_prefix(&objects).unwrap());
    Gateway::new(catalog, artefacts, manifests, log, &signer, Clock::default(), 1 << 30)
}

/// A clerk of `case`, signed in.
async fn clerk_of(gateway: &Gateway, case: &str) -> Principal {
    let catalog = gateway.catalog();
    let now = gateway.now().to_string();
    let account = Account {
        id: custodia_service::gateway::new_id("acct"),
        username: "clerk.plane".into(),
        display_name: "Clerk".into(),
        password_hash: "!".into(),
        is_admin: false,
        jurisdiction: "IT".into(),
    };
    catalog.create_account(&account, &now).await.unwrap();
    catalog.create_case(&Case { id: case.into(), title: "Case".into(), created_at: now }).await.unwrap();
    catalog.set_member(case, &account.id, "clerk").await.unwrap();
    Principal::new(&account, Channel::Session)
}

/// What the planes were told, in order, as `member: what`.
#[derive(Default)]
struct Told(Mutex<Vec<String>>);

impl Told {
    fn say(&self, member: &str, what: String) {
        self.0.lock().unwrap().push(format!("{member}: {what}"));
    }

    fn about(&self, member: &str) -> Vec<String> {
        let prefix = format!("{member}: ");
        self.0.lock().unwrap().iter().filter_map(|line| line.strip_prefix(&prefix).map(str::to_owned)).collect()
    }

    /// The latest thing `member`'s plane was told that starts with `what`.
    fn latest(&self, member: &str, what: &str) -> Option<String> {
        self.about(member).into_iter().rev().find(|line| line.starts_with(what))
    }

    fn opened(&self) -> Vec<String> {
        self.about("plane")
    }
}

struct RememberingPlanes(Arc<Told>);

impl MediaPlanes for RememberingPlanes {
    fn open(
        &self,
        label: &str,
        slots: usize,
        _recorders: Arc<dyn RecorderFactory>,
        _maskers: Arc<dyn MaskerFactory>,
    ) -> Arc<dyn MediaPlane> {
        self.0.say("plane", format!("opened for {label} with {slots} slots"));
        Arc::new(RememberingPlane { told: self.0.clone(), slots })
    }
}

struct RememberingPlane {
    told: Arc<Told>,
    slots: usize,
}

/// This plane carries no media, so a connection is refused as the engine would refuse one it cannot take.
fn no_media() -> EngineError {
    EngineError::Engine("this plane carries no media")
}

impl MediaPlane for RememberingPlane {
    fn slots(&self) -> usize {
        self.slots
    }

    fn add_member(&self, member: &str, slot: usize) {
        self.told.say(member, format!("added in slot {slot}"));
    }

    fn member_count(&self) -> usize {
        let told = self.told.0.lock().unwrap();
        let added = told.iter().filter(|line| line.contains(": added in slot ")).count();
        added - told.iter().filter(|line| line.ends_with(": removed")).count()
    }

    fn remove_member<'a>(&'a self, member: &'a str) -> BoxFuture<'a, ()> {
        self.told.say(member, "removed".into());
        Box::pin(async {})
    }

    fn disconnect<'a>(&'a self, member: &'a str) -> BoxFuture<'a, ()> {
        self.told.say(member, "disconnected".into());
        Box::pin(async {})
    }

    fn set_zone(&self, member: &str, zone: Zone) {
        self.told.say(member, format!("zone {zone:?}"));
    }

    fn set_muted(&self, member: &str, muted: bool) {
        self.told.say(member, format!("muted {muted}"));
    }

    fn set_recorded(&self, member: &str, recorded: bool) {
        self.told.say(member, format!("recorded {recorded}"));
    }

    fn set_audio_from(&self, member: &str, from: Option<AudioFrom>) {
        self.told.say(member, format!("hears {}", if from.is_some() { "some" } else { "everyone in the zone" }));
    }

    fn set_protection(&self, member: &str, protection: Option<Protection>) {
        self.told.say(member, format!("protected {}", protection.is_some()));
    }

    fn set_video_from(&self, member: &str, slots: Option<BTreeSet<usize>>) {
        self.told.say(member, format!("sees {slots:?}"));
    }

    fn packets_received(&self, _member: &str) -> Option<u64> {
        None
    }

    fn counters(&self) -> RoomCounters {
        RoomCounters::default()
    }

    fn finish_recordings(&self) -> BoxFuture<'_, Vec<(String, RecordingSummary)>> {
        self.told.say("plane", "recordings finished".into());
        Box::pin(async { Vec::new() })
    }

    fn connect<'a>(&'a self, _member: &'a str, _offer: &'a str) -> BoxFuture<'a, Result<Connected, EngineError>> {
        Box::pin(async { Err(no_media()) })
    }

    fn accept<'a>(&'a self, _offer: &'a str) -> BoxFuture<'a, Result<Offered, EngineError>> {
        Box::pin(async { Err(no_media()) })
    }

    fn attach<'a>(&'a self, _member: &'a str, _offered: Offered) -> BoxFuture<'a, Result<Connected, EngineError>> {
        Box::pin(async { Err(no_media()) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hearing_tells_its_media_plane_who_is_in_the_room_where_and_who_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = embedded_gateway(dir.path()).await;
    let told = Arc::new(Told::default());
    let hearings = Hearings::new(
        gateway.clone(),
        Arc::new(RememberingPlanes(told.clone())),
        Arc::new(IceServers::default()),
        Arc::new(CourtTexts::embedded()),
        dir.path().join("recordings"),
        dir.path().join("quarantine"),
        // No plane here starts a masking pipeline, so the program is never run.
        "custodia".into(),
    );
    assert!(hearings.host().await, "alone on SQLite, it hosts the hearings");
    let case = CaseId::new("case-plane").unwrap();
    let clerk = clerk_of(&gateway, case.as_str()).await;

    let schedule = ScheduleRequest {
        scheduled_for: "2027-03-03T09:00:00Z".parse().unwrap(),
        place: Label::new("Aula 3").unwrap(),
        identity_check_before_oath: false,
        contact: None,
    };
    let live = hearings.schedule(&clerk, &case, schedule).await.unwrap();
    let id = live.id().to_string();
    assert_eq!(told.opened(), [format!("opened for {id} with {RECEIVE_SLOTS} slots")]);
    let mut secrets = Vec::new();
    for (role, admit_on_join) in [(HearingRole::Judge, true), (HearingRole::Witness, false)] {
        let (live, by) = hearings.find_to_run(&clerk, &case, &id).await.unwrap();
        let invite =
            InviteRequest { role, display_name: None, language: None, expires_in_seconds: 86_400, admit_on_join };
        secrets.push(hearings.invite(by, &live, invite).await.unwrap().secret);
    }
    let (live, by) = hearings.find_to_run(&clerk, &case, &id).await.unwrap();
    hearings.console(by, &live, ConsoleStep::Open).await.unwrap();

    let judge = hearings.enter(&secrets[0], None, None).await.unwrap();
    let (page, mut witness_sees, _) = Outbox::channel();
    let witness = hearings.enter(&secrets[1], Some(page), None).await.unwrap();
    let (live, by) = (&judge.hearing, &judge.participant);
    let (judge_id, witness_id) = (judge.participant.as_str(), witness.participant.as_str());
    let step = |step: Value| serde_json::from_value::<RoomStep>(step).unwrap();

    // Admitted on joining, the judge is in the main room; the witness waits in the lobby, where no media reaches.
    let judge_told = told.about(judge_id);
    assert!(judge_told.iter().any(|line| line.starts_with("added in slot")), "{judge_told:?}");
    assert_eq!(told.latest(judge_id, "zone").as_deref(), Some("zone Some(0)"));
    let witness_told = told.about(witness_id);
    assert!(witness_told.iter().any(|line| line.starts_with("added in slot")), "{witness_told:?}");
    assert!(!witness_told.contains(&"zone Some(0)".to_owned()), "in the lobby: {witness_told:?}");

    live.act(by, step(json!({ "type": "admit", "participant": witness_id }))).await.unwrap();
    let witness_told = told.about(witness_id);
    assert_eq!(told.latest(witness_id, "zone").as_deref(), Some("zone Some(0)"));
    assert!(
        !witness_told.contains(&"recorded true".to_owned()),
        "nothing is recorded before the session: {witness_told:?}"
    );

    live.act(by, step(json!({ "type": "start_session" }))).await.unwrap();
    live.act(by, step(json!({ "type": "start_recording" }))).await.unwrap();
    for member in [judge_id, witness_id] {
        let lines = told.about(member);
        assert_eq!(told.latest(member, "recorded").as_deref(), Some("recorded true"), "{member}: {lines:?}");
    }

    // Removed, the witness is no longer recorded, and their connection is closed.
    live.act(by, step(json!({ "type": "remove", "participant": witness_id }))).await.unwrap();
    let witness_told = told.about(witness_id);
    let after_removal: Vec<&String> =
        witness_told.iter().skip_while(|line| line.as_str() != "recorded true").skip(1).collect();
    assert!(after_removal.contains(&&"recorded false".to_owned()), "{witness_told:?}");
    assert!(after_removal.iter().any(|line| *line == "disconnected" || *line == "removed"), "{witness_told:?}");
    let judge_told = told.about(judge_id);
    assert!(!judge_told.contains(&"disconnected".to_owned()), "the judge stays: {judge_told:?}");
    // Their page was told so last, and its socket closes after it.
    let mut last = None;
    while let Ok(message) = witness_sees.try_recv() {
        last = Some(message);
    }
    assert!(matches!(last, Some(RoomMessage::Removed)), "{last:?}");
    assert!(last.is_some_and(|message| message.is_final()));
}
