//! Who may do what, through the HTTP API.
//!
//! Every case role, a non-member, an administrator who is not a member and an unauthenticated caller, against
//! every endpoint of the evidence API; then API tokens, the privacy of the public log, use policies, and bad input
//! refused precisely without leaving anything behind.
//!
//! The expected outcome of each call is derived from `custodia_core::permits` plus the provider rule
//! ([`expected`]); [`the_derived_table_agrees_with_hand_written_spot_checks`] pins a few cells by hand so that the
//! derivation is not checked only against itself.

mod support;

use axum::http::header;
use custodia_core::{Action, Role, permits};
use serde_json::{Value, json};
use support::{As, Reply, TestGateway};

const CASE: &str = "case-roles";
const PURPOSE: &str = "trial%20preparation";
/// The role of the account that provides the evidence the matrix acts on.
const PROVIDER: Role = Role::Prosecutor;

fn open_policy() -> Value {
    json!({
        "tlp": "TLP:CLEAR",
        "provider": "IT: Procura di Roma",
        "permitted_purposes": [],
        "permitted_recipients": [],
        "permitted_jurisdictions": [],
        "onward_transfer": "permitted"
    })
}

fn policy(tlp: &str) -> Value {
    let mut policy = open_policy();
    policy["tlp"] = json!(tlp);
    policy
}

/// How an action reads in a refusal ("download artefact"), written out here rather than borrowed from the gateway.
fn words(action: Action) -> String {
    action.as_str().replace('_', " ")
}

/// How a refusal record's committed action opens: the action's code.
fn code(action: Action) -> String {
    action.as_str().to_owned()
}

fn problem_uri(kind: &str) -> String {
    format!("https://custodia.invalid/problems/{kind}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Member(Role),
    NonMember,
    /// An administrator who is not a member of the case.
    Admin,
    Anonymous,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    CaseDetail,
    ListArtefacts,
    Upload,
    ArtefactDetail,
    ListWidenRequests,
    Download,
    ExportArtefact,
    ExportCase,
    Timeline,
    SetPolicy,
    CorrectPolicy,
    RequestWidening,
    DecideWidening,
    ReportOutcome,
    ListOutcomes,
    AddMember,
    RemoveMember,
    ScheduleHearing,
    ListHearings,
    ViewHearing,
    IssueInvite,
    RevokeInvite,
    OpenHearing,
    CloseHearing,
    SendTransfer,
}

impl Endpoint {
    /// In the order the matrix calls them: `AddMember` before `RemoveMember`, so that a caller allowed both leaves
    /// the case as it found it.
    const ALL: [Self; 25] = [
        Self::CaseDetail,
        Self::ListArtefacts,
        Self::Upload,
        Self::ArtefactDetail,
        Self::ListWidenRequests,
        Self::Download,
        Self::ExportArtefact,
        Self::ExportCase,
        Self::Timeline,
        Self::SetPolicy,
        Self::CorrectPolicy,
        Self::RequestWidening,
        Self::DecideWidening,
        Self::ReportOutcome,
        Self::ListOutcomes,
        Self::AddMember,
        Self::RemoveMember,
        Self::ScheduleHearing,
        Self::ListHearings,
        Self::ViewHearing,
        Self::IssueInvite,
        Self::RevokeInvite,
        Self::OpenHearing,
        Self::CloseHearing,
        Self::SendTransfer,
    ];

    const fn action(self) -> Action {
        match self {
            Self::CaseDetail => Action::ViewCase,
            Self::ListArtefacts => Action::ListArtefacts,
            Self::Upload => Action::UploadArtefact,
            Self::ArtefactDetail | Self::ListWidenRequests => Action::ViewArtefact,
            Self::Download => Action::DownloadArtefact,
            Self::ExportArtefact | Self::ExportCase => Action::ExportArtefact,
            Self::Timeline => Action::ViewTimeline,
            Self::SetPolicy => Action::SetPolicy,
            Self::CorrectPolicy => Action::CorrectPolicy,
            Self::RequestWidening => Action::RequestWiderUse,
            Self::DecideWidening => Action::DecideWiderUse,
            Self::ReportOutcome => Action::FileOutcome,
            Self::ListOutcomes => Action::ViewOutcomes,
            Self::AddMember | Self::RemoveMember => Action::ManageMembers,
            Self::ListHearings | Self::ViewHearing => Action::ViewCase,
            Self::ScheduleHearing | Self::IssueInvite | Self::RevokeInvite | Self::OpenHearing | Self::CloseHearing => {
                Action::RunHearings
            }
            Self::SendTransfer => Action::TransferArtefact,
        }
    }

    const fn success(self) -> u16 {
        match self {
            Self::Upload | Self::RequestWidening | Self::ReportOutcome | Self::ScheduleHearing | Self::IssueInvite => {
                201
            }
            Self::AddMember | Self::RemoveMember | Self::RevokeInvite => 204,
            Self::SendTransfer => 202,
            _ => 200,
        }
    }

    /// Only the account that provided the artefact may do this, whatever its role permits.
    const fn provider_only(self) -> bool {
        matches!(self, Self::SetPolicy | Self::DecideWidening)
    }

    const fn is_membership(self) -> bool {
        matches!(self, Self::AddMember | Self::RemoveMember)
    }

    /// Acts on one hearing (and, to revoke, one of its invites), made fresh for each call by the clerk.
    const fn needs_hearing(self) -> bool {
        matches!(
            self,
            Self::ViewHearing | Self::IssueInvite | Self::RevokeInvite | Self::OpenHearing | Self::CloseHearing
        )
    }

    /// The token scope the call needs, written out here rather than borrowed from the gateway.
    const fn scope(self) -> &'static str {
        match self {
            Self::CaseDetail
            | Self::ListArtefacts
            | Self::ArtefactDetail
            | Self::ListWidenRequests
            | Self::Download
            | Self::Timeline
            | Self::ListOutcomes
            | Self::ListHearings
            | Self::ViewHearing => "read",
            Self::Upload | Self::ExportArtefact | Self::ExportCase | Self::RequestWidening | Self::ReportOutcome => {
                "write"
            }
            Self::SetPolicy
            | Self::CorrectPolicy
            | Self::DecideWidening
            | Self::AddMember
            | Self::RemoveMember
            | Self::ScheduleHearing
            | Self::IssueInvite
            | Self::RevokeInvite
            | Self::OpenHearing
            | Self::CloseHearing
            | Self::SendTransfer => "manage",
        }
    }

    /// What a token must carry for the call, in the order the gateway checks it: each action and the scope it
    /// needs. Scheduling a hearing also needs what uploading needs, since the hearing's output enters custody in
    /// the scheduler's name: a token that may not upload schedules nothing.
    fn needs(self) -> Vec<(Action, &'static str)> {
        let mut needs = vec![(self.action(), self.scope())];
        if self == Self::ScheduleHearing {
            needs.push((Action::UploadArtefact, Self::Upload.scope()));
        }
        needs
    }

    /// Acts on the artefact, so that a refusal is recorded against it (and shows in its timeline).
    const fn about_artefact(self) -> bool {
        matches!(
            self,
            Self::ArtefactDetail
                | Self::ListWidenRequests
                | Self::Download
                | Self::ExportArtefact
                | Self::Timeline
                | Self::SetPolicy
                | Self::CorrectPolicy
                | Self::RequestWidening
                | Self::DecideWidening
                | Self::ReportOutcome
                | Self::ListOutcomes
                | Self::SendTransfer
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Ok(u16),
    Refused(u16, &'static str),
}

/// What the gateway must answer `who` on `endpoint`, for an artefact provided by a [`PROVIDER`].
fn expected(who: Who, endpoint: Endpoint) -> Expect {
    let role = match who {
        Who::Anonymous => return Expect::Refused(401, "unauthenticated"),
        // Need to know: whether or not the case exists, it is not found.
        Who::NonMember => return Expect::Refused(404, "not-found"),
        Who::Admin if endpoint.is_membership() => return Expect::Ok(endpoint.success()),
        Who::Admin => return Expect::Refused(404, "not-found"),
        Who::Member(role) => role,
    };
    let is_provider = role == PROVIDER;
    if endpoint == Endpoint::ListOutcomes && is_provider {
        // Outcome reports go back to the provider, whatever its role.
        Expect::Ok(endpoint.success())
    } else if !permits(role, endpoint.action()) {
        Expect::Refused(403, "role-forbidden")
    } else if endpoint.provider_only() && !is_provider {
        Expect::Refused(403, "provider-only")
    } else {
        Expect::Ok(endpoint.success())
    }
}

/// Compares a reply with what was expected, saying precisely what differs.
fn check(who: Who, endpoint: Endpoint, reply: &Reply) -> Result<(), String> {
    let body = String::from_utf8_lossy(&reply.body);
    let status = reply.status.as_u16();
    match expected(who, endpoint) {
        Expect::Ok(want) if status == want => Ok(()),
        Expect::Ok(want) => Err(format!("expected {want}, got {status} {body}")),
        Expect::Refused(want, kind) => {
            let problem: Value = serde_json::from_slice(&reply.body).unwrap_or_default();
            if status != want || problem["type"] != problem_uri(kind) {
                return Err(format!("expected {want} {kind}, got {status} {body}"));
            }
            if reply.headers.get(header::CONTENT_TYPE).is_none_or(|v| v != "application/problem+json") {
                return Err(format!("refusal is not application/problem+json: {:?}", reply.headers));
            }
            let detail = problem["detail"].as_str().unwrap_or_default();
            match who {
                Who::Member(role) if kind == "role-forbidden" => {
                    let names = format!("as {role} in this case you may not {}", words(endpoint.action()));
                    if detail.contains(&names) { Ok(()) } else { Err(format!("detail {detail:?} lacks {names:?}")) }
                }
                _ => Ok(()),
            }
        }
    }
}

struct Person {
    id: String,
    username: String,
    session: String,
}

/// The ids a call acts on: the real case and artefact, or made-up ones.
struct Target {
    case: String,
    artefact: String,
    /// A widening request to decide on; `None` asks the provider for a fresh pending one.
    request: Option<String>,
    /// A hearing and one of its pending invites; `None` asks the clerk for a fresh one.
    hearing: Option<(String, String)>,
}

/// A case with one member in each role, an outsider, a spare account for membership changes, and an artefact
/// that the [`PROVIDER`] uploaded and put under an open policy.
struct World {
    gateway: TestGateway,
    members: Vec<(Role, Person)>,
    outsider: Person,
    spare: Person,
    /// A second clerk who makes the hearings the matrix acts on, so that the clerk under test keeps their budget
    /// of console steps for the calls being checked.
    usher: Person,
    artefact: String,
    /// A scheduled hearing with a pending invite, for the calls that are refused.
    shared_hearing: (String, String),
}

impl World {
    async fn new() -> Self {
        // One partner gateway is pinned (unreachable), so that sending to it is a call like any other.
        let registry = tempfile::NamedTempFile::new().unwrap();
        let partner_log = custodia_ledger::LogSigner::generate("partner.custodia.test/log").unwrap();
        let partner = json!({ "partners": [{
            "name": "partner-gw", "jurisdiction": "TN", "base_url": "http://127.0.0.1:9",
            "log_vkey": partner_log.verifier().to_string(), "witness_vkey": partner_log.verifier().to_string(),
            "request_key": "/RckOFqgx1tk+3jNYC+h2ZH96/drE8WO1wLqyDXp9hg=",
        }]});
        std::fs::write(registry.path(), partner.to_string()).unwrap();
        let gateway = TestGateway::start_with(|config| {
            config.partners.registry_file = Some(registry.path().to_path_buf());
        })
        .await;
        gateway.case(CASE).await;
        let mut members = Vec::new();
        for role in Role::ALL {
            let jurisdiction = if matches!(role, Role::Witness | Role::RemoteSiteOfficer) { "DE" } else { "IT" };
            let person = Self::person(&gateway, &format!("{role}.person"), jurisdiction).await;
            gateway.member(CASE, &person.id, role.as_str()).await;
            members.push((role, person));
        }
        let outsider = Self::person(&gateway, "outsider.person", "FR").await;
        let spare = Self::person(&gateway, "spare.person", "IT").await;
        let usher = Self::person(&gateway, "usher.person", "IT").await;
        gateway.member(CASE, &usher.id, "clerk").await;
        let mut world = Self {
            gateway,
            members,
            outsider,
            spare,
            usher,
            artefact: String::new(),
            shared_hearing: Default::default(),
        };
        world.shared_hearing = world.fresh_hearing().await;
        let provider = world.member(PROVIDER).session.clone();
        let provider = As::Session(&provider);
        let reply = world.gateway.upload(CASE, &format!("purpose={PURPOSE}"), provider, b"exhibit 1".to_vec()).await;
        assert_eq!(reply.status, 201, "{}", String::from_utf8_lossy(&reply.body));
        world.artefact = reply.json()["artefact"].as_str().unwrap().to_owned();
        let uri = format!("/api/v1/artefacts/{}/policy", world.artefact);
        let reply = world.gateway.call("PUT", &uri, Some(provider), open_policy()).await;
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
        world
    }

    async fn person(gateway: &TestGateway, username: &str, jurisdiction: &str) -> Person {
        let (id, session) = gateway.person(username, jurisdiction).await;
        Person { id, username: username.to_owned(), session }
    }

    fn callers(&self) -> Vec<Who> {
        let mut callers: Vec<Who> = Role::ALL.into_iter().map(Who::Member).collect();
        callers.extend([Who::NonMember, Who::Admin, Who::Anonymous]);
        callers
    }

    fn member(&self, role: Role) -> &Person {
        self.members.iter().find(|(r, _)| *r == role).map(|(_, person)| person).unwrap()
    }

    fn account(&self, who: Who) -> Option<&str> {
        match who {
            Who::Member(role) => Some(&self.member(role).id),
            Who::NonMember => Some(&self.outsider.id),
            Who::Admin | Who::Anonymous => None,
        }
    }

    fn session(&self, who: Who) -> Option<&str> {
        match who {
            Who::Member(role) => Some(&self.member(role).session),
            Who::NonMember => Some(&self.outsider.session),
            Who::Admin => Some(&self.gateway.admin),
            Who::Anonymous => None,
        }
    }

    fn real(&self) -> Target {
        Target { case: CASE.into(), artefact: self.artefact.clone(), request: None, hearing: None }
    }

    fn made_up() -> Target {
        Target {
            case: "case-ghost".into(),
            artefact: "art-ghost".into(),
            request: Some("wr-ghost".into()),
            hearing: Some(("h-ghost".into(), "inv-ghost".into())),
        }
    }

    /// A fresh scheduled hearing with one pending invite, made by the second clerk.
    async fn fresh_hearing(&self) -> (String, String) {
        let clerk = As::Session(&self.usher.session);
        let schedule = json!({ "scheduled_for": "2026-12-01T09:00:00Z", "place": "Aula 1" });
        let reply = self.gateway.call("POST", &format!("/api/v1/cases/{CASE}/hearings"), Some(clerk), schedule).await;
        assert_eq!(reply.status, 201, "{}", String::from_utf8_lossy(&reply.body));
        let hearing = reply.json()["id"].as_str().unwrap().to_owned();
        let uri = format!("/api/v1/cases/{CASE}/hearings/{hearing}/invites");
        let reply = self.gateway.call("POST", &uri, Some(clerk), json!({ "role": "witness" })).await;
        assert_eq!(reply.status, 201, "{}", String::from_utf8_lossy(&reply.body));
        (hearing, reply.json()["invite"].as_str().unwrap().to_owned())
    }

    /// A fresh pending request for wider use of the artefact, made by the provider.
    async fn pending_request(&self) -> String {
        let uri = format!("/api/v1/artefacts/{}/widen-requests", self.artefact);
        let provider = As::Session(&self.member(PROVIDER).session);
        let reply = self.gateway.call("POST", &uri, Some(provider), json!({ "purposes": ["appeal"] })).await;
        assert_eq!(reply.status, 201, "{}", String::from_utf8_lossy(&reply.body));
        reply.json()["id"].as_str().unwrap().to_owned()
    }

    async fn call(&self, who: Who, endpoint: Endpoint, target: &Target) -> Reply {
        self.call_as(self.session(who).map(As::Session), endpoint, target).await
    }

    async fn call_as(&self, auth: Option<As<'_>>, endpoint: Endpoint, target: &Target) -> Reply {
        let gateway = &self.gateway;
        let (case, art) = (&target.case, &target.artefact);
        let member_uri = format!("/api/v1/cases/{case}/members/{}", self.spare.id);
        match endpoint {
            Endpoint::CaseDetail => gateway.get(&format!("/api/v1/cases/{case}"), auth).await,
            Endpoint::ListArtefacts => gateway.get(&format!("/api/v1/cases/{case}/artefacts"), auth).await,
            Endpoint::Upload => {
                let uri = format!("/api/v1/cases/{case}/artefacts?purpose={PURPOSE}&filename=statement.txt");
                gateway.send_bytes("POST", &uri, auth, &[("content-type", "text/plain")], "a statement").await
            }
            Endpoint::ArtefactDetail => gateway.get(&format!("/api/v1/artefacts/{art}?purpose={PURPOSE}"), auth).await,
            Endpoint::ListWidenRequests => gateway.get(&format!("/api/v1/artefacts/{art}/widen-requests"), auth).await,
            Endpoint::Download => {
                gateway.get(&format!("/api/v1/artefacts/{art}/content?purpose={PURPOSE}"), auth).await
            }
            Endpoint::ExportArtefact => {
                let uri = format!("/api/v1/artefacts/{art}/exports?purpose={PURPOSE}");
                gateway.send_bytes("POST", &uri, auth, &[], "").await
            }
            Endpoint::ExportCase => {
                let uri = format!("/api/v1/cases/{case}/exports?purpose={PURPOSE}");
                gateway.send_bytes("POST", &uri, auth, &[], "").await
            }
            Endpoint::Timeline => gateway.get(&format!("/api/v1/artefacts/{art}/timeline"), auth).await,
            Endpoint::SetPolicy => {
                gateway.call("PUT", &format!("/api/v1/artefacts/{art}/policy"), auth, open_policy()).await
            }
            Endpoint::CorrectPolicy => {
                // The same open policy again: a correction the matrix makes leaves the artefact as it was.
                let uri = format!("/api/v1/artefacts/{art}/policy/correction");
                gateway.call("PUT", &uri, auth, open_policy()).await
            }
            Endpoint::RequestWidening => {
                let uri = format!("/api/v1/artefacts/{art}/widen-requests");
                gateway.call("POST", &uri, auth, json!({ "purposes": ["appeal"] })).await
            }
            Endpoint::DecideWidening => {
                let request = match &target.request {
                    Some(id) => id.clone(),
                    None => self.pending_request().await,
                };
                let uri = format!("/api/v1/widen-requests/{request}/decision");
                gateway.call("POST", &uri, auth, json!({ "approve": true })).await
            }
            Endpoint::ReportOutcome => {
                let body = json!({ "outcome": "used_at_hearing", "note": "shown to the jury" });
                gateway.call("POST", &format!("/api/v1/artefacts/{art}/outcomes"), auth, body).await
            }
            Endpoint::ListOutcomes => gateway.get(&format!("/api/v1/artefacts/{art}/outcomes"), auth).await,
            Endpoint::SendTransfer => {
                // To the one partner pinned, unreachable: a transfer sent stays sending in the background.
                let body = json!({ "partner": "partner-gw", "purpose": "trial preparation" });
                gateway.call("POST", &format!("/api/v1/artefacts/{art}/transfers"), auth, body).await
            }
            Endpoint::AddMember => gateway.call("PUT", &member_uri, auth, json!({ "role": "witness" })).await,
            Endpoint::RemoveMember => gateway.delete(&member_uri, auth).await,
            Endpoint::ScheduleHearing => {
                let schedule = json!({ "scheduled_for": "2026-12-01T09:00:00Z", "place": "Aula 2" });
                gateway.call("POST", &format!("/api/v1/cases/{case}/hearings"), auth, schedule).await
            }
            Endpoint::ListHearings => gateway.get(&format!("/api/v1/cases/{case}/hearings"), auth).await,
            Endpoint::ViewHearing
            | Endpoint::IssueInvite
            | Endpoint::RevokeInvite
            | Endpoint::OpenHearing
            | Endpoint::CloseHearing => {
                let (hearing, invite) = match &target.hearing {
                    Some(made) => made.clone(),
                    None => self.fresh_hearing().await,
                };
                let uri = format!("/api/v1/cases/{case}/hearings/{hearing}");
                match endpoint {
                    Endpoint::ViewHearing => gateway.get(&uri, auth).await,
                    Endpoint::IssueInvite => {
                        gateway.call("POST", &format!("{uri}/invites"), auth, json!({ "role": "judge" })).await
                    }
                    Endpoint::RevokeInvite => gateway.delete(&format!("{uri}/invites/{invite}"), auth).await,
                    Endpoint::OpenHearing => gateway.send_bytes("POST", &format!("{uri}/open"), auth, &[], "").await,
                    _ => gateway.send_bytes("POST", &format!("{uri}/close"), auth, &[], "").await,
                }
            }
        }
    }

    /// Calls `endpoint` with a target whose pending request (if any) exists before the ledger is measured.
    async fn call_real(&self, who: Who, endpoint: Endpoint) -> (Reply, u64) {
        // Only a clerk's console step uses its hearing up (opens, closes it, revokes its invite); everyone else is
        // refused and can share one.
        let uses_up = who == Who::Member(Role::Clerk);
        self.call_real_as(self.session(who).map(As::Session), endpoint, uses_up).await
    }

    async fn call_real_as(&self, auth: Option<As<'_>>, endpoint: Endpoint, uses_up: bool) -> (Reply, u64) {
        let mut target = self.real();
        if endpoint == Endpoint::DecideWidening {
            target.request = Some(self.pending_request().await);
        }
        if endpoint.needs_hearing() {
            target.hearing = Some(if uses_up { self.fresh_hearing().await } else { self.shared_hearing.clone() });
        }
        let before = self.gateway.ledger_size();
        let reply = self.call_as(auth, endpoint, &target).await;
        if endpoint == Endpoint::CloseHearing && reply.status == 200 {
            self.minutes_taken(&target.hearing.as_ref().unwrap().0).await;
        }
        (reply, before)
    }

    /// Waits until a closed hearing's minutes are in custody, so that their records land before the next call.
    async fn minutes_taken(&self, hearing: &str) {
        let clerk = As::Session(&self.usher.session);
        let uri = format!("/api/v1/cases/{CASE}/hearings/{hearing}");
        for _ in 0..600 {
            if !self.gateway.get(&uri, Some(clerk)).await.json()["minutes_artefact"].is_null() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("no minutes in custody 30 s after the end");
    }
}

#[tokio::test]
async fn every_caller_against_every_endpoint() {
    let world = World::new().await;
    let mut wrong = Vec::new();
    // Identical refusals (same member, action, artefact and code) within a minute are one record and a count, so
    // a second endpoint refused for the same action may add none.
    let mut recorded = std::collections::BTreeSet::new();
    for who in world.callers() {
        for endpoint in Endpoint::ALL {
            let (reply, before) = world.call_real(who, endpoint).await;
            if let Err(why) = check(who, endpoint, &reply) {
                wrong.push(format!("{who:?} {endpoint:?}: {why}"));
                continue;
            }
            // A member refused by their role leaves a custody record naming the action.
            if let (Who::Member(_), Expect::Refused(_, "role-forbidden")) = (who, expected(who, endpoint)) {
                let after = world.gateway.ledger_size();
                let key = (format!("{who:?}"), code(endpoint.action()));
                if after == before && recorded.contains(&key) {
                    continue;
                }
                if after != before + 1 {
                    let mut left = Vec::new();
                    for index in before..after {
                        left.push(world.gateway.ledger_record(index).await["event"]["type"].to_string());
                    }
                    wrong.push(format!(
                        "{who:?} {endpoint:?}: refusal left {} records, not 1: {left:?}",
                        after - before
                    ));
                    continue;
                }
                recorded.insert(key);
                let record = world.gateway.ledger_record(before).await;
                let event = &record["event"];
                let recorded = event["type"] == "access_refused"
                    && world.gateway.opened(before, "action").await == Some(code(endpoint.action()))
                    && !record.to_string().contains(&code(endpoint.action()))
                    && record["actor"] == world.account(who).unwrap()
                    && world.gateway.opened(before, "case").await.as_deref() == Some(CASE)
                    && event["code"] == "role_forbids";
                if !recorded {
                    wrong.push(format!("{who:?} {endpoint:?}: refusal recorded as {record}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{} calls answered wrongly:\n{}", wrong.len(), wrong.join("\n"));
}

/// A few cells written out by hand, so that a change to `permits` or to the provider rule shows up here.
#[test]
fn the_derived_table_agrees_with_hand_written_spot_checks() {
    use Endpoint as E;
    use Expect::{Ok, Refused};
    use Who::{Admin, Anonymous, Member, NonMember};
    let spot_checks = [
        (Member(Role::Clerk), E::AddMember, Ok(204)),
        (Member(Role::Clerk), E::Download, Ok(200)),
        (Member(Role::Clerk), E::SetPolicy, Refused(403, "provider-only")),
        (Member(Role::Clerk), E::DecideWidening, Refused(403, "provider-only")),
        (Member(Role::Clerk), E::RequestWidening, Refused(403, "role-forbidden")),
        (Member(Role::Clerk), E::CorrectPolicy, Refused(403, "role-forbidden")),
        (Member(Role::Judge), E::CorrectPolicy, Ok(200)),
        (Member(Role::Prosecutor), E::CorrectPolicy, Refused(403, "role-forbidden")),
        (Admin, E::CorrectPolicy, Refused(404, "not-found")),
        (Member(Role::Judge), E::Download, Ok(200)),
        (Member(Role::Judge), E::ExportCase, Ok(200)),
        (Member(Role::Judge), E::Upload, Refused(403, "role-forbidden")),
        (Member(Role::Judge), E::ReportOutcome, Refused(403, "role-forbidden")),
        (Member(Role::Prosecutor), E::SetPolicy, Ok(200)),
        (Member(Role::Prosecutor), E::DecideWidening, Ok(200)),
        (Member(Role::Prosecutor), E::AddMember, Refused(403, "role-forbidden")),
        (Member(Role::Defence), E::Download, Ok(200)),
        (Member(Role::Defence), E::RequestWidening, Ok(201)),
        (Member(Role::Defence), E::SetPolicy, Refused(403, "role-forbidden")),
        (Member(Role::Interpreter), E::ArtefactDetail, Ok(200)),
        (Member(Role::Interpreter), E::Download, Refused(403, "role-forbidden")),
        (Member(Role::Interpreter), E::ExportArtefact, Refused(403, "role-forbidden")),
        (Member(Role::Witness), E::Upload, Ok(201)),
        (Member(Role::Witness), E::ListArtefacts, Refused(403, "role-forbidden")),
        (Member(Role::RemoteSiteOfficer), E::Upload, Ok(201)),
        (Member(Role::RemoteSiteOfficer), E::Timeline, Refused(403, "role-forbidden")),
        (Member(Role::Auditor), E::Timeline, Ok(200)),
        (Member(Role::Auditor), E::Download, Refused(403, "role-forbidden")),
        (Member(Role::Auditor), E::ListOutcomes, Refused(403, "role-forbidden")),
        (NonMember, E::CaseDetail, Refused(404, "not-found")),
        (Admin, E::RemoveMember, Ok(204)),
        (Admin, E::Download, Refused(404, "not-found")),
        (Anonymous, E::Upload, Refused(401, "unauthenticated")),
        (Member(Role::Clerk), E::ScheduleHearing, Ok(201)),
        (Member(Role::Clerk), E::RevokeInvite, Ok(204)),
        (Member(Role::Judge), E::OpenHearing, Refused(403, "role-forbidden")),
        (Member(Role::Judge), E::ViewHearing, Ok(200)),
        (Member(Role::Witness), E::ListHearings, Ok(200)),
        (Member(Role::Witness), E::IssueInvite, Refused(403, "role-forbidden")),
        (Member(Role::Prosecutor), E::ScheduleHearing, Refused(403, "role-forbidden")),
        (Admin, E::CloseHearing, Refused(404, "not-found")),
    ];
    for (who, endpoint, want) in spot_checks {
        assert_eq!(expected(who, endpoint), want, "{who:?} {endpoint:?}");
    }
}

/// A non-member gets the same answer about a real case, artefact or request as about made-up ones, and leaves
/// the same trace in the public log: a difference in either would tell them the case exists.
#[tokio::test]
async fn non_members_learn_nothing_about_what_exists() {
    let world = World::new().await;
    let real = world.real();
    let made_up = World::made_up();
    let mut wrong = Vec::new();
    for endpoint in Endpoint::ALL {
        let (reply, before) = world.call_real(Who::NonMember, endpoint).await;
        let real_growth = world.gateway.ledger_size() - before;
        let before = world.gateway.ledger_size();
        let ghost = world.call(Who::NonMember, endpoint, &made_up).await;
        let ghost_growth = world.gateway.ledger_size() - before;
        let shape = |reply: &Reply, target: &Target| {
            let mut text = String::from_utf8_lossy(&reply.body).into_owned();
            for (id, placeholder) in [(&target.case, "CASE"), (&target.artefact, "ARTEFACT")] {
                text = text.replace(id.as_str(), placeholder);
            }
            (reply.status, mask_request_ids(&text))
        };
        assert_eq!(shape(&reply, &real), shape(&ghost, &made_up), "{endpoint:?}");
        reply.assert_problem(404, "not-found", "");
        // One rule, as ARCHITECTURE.md says it: a non-member's probe is never a custody record (it goes to the
        // operator's log only), about a real case or a made-up one.
        if real_growth != 0 || ghost_growth != 0 {
            wrong.push(format!(
                "{endpoint:?}: {real_growth} records about the real case, {ghost_growth} about a made-up one"
            ));
        }
    }
    assert!(wrong.is_empty(), "a non-member's probe reached the public log:\n{}", wrong.join("\n"));
}

/// Replaces widening request ids (`wr-...`) with a placeholder.
fn mask_request_ids(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("wr-") {
        out.push_str(&rest[..at]);
        out.push_str("REQUEST");
        rest = rest[at + 3..].trim_start_matches(|c: char| c.is_ascii_alphanumeric());
    }
    out.push_str(rest);
    out
}

/// The provider rule with other providers: a witness sees the outcome reports on their own statement but sets no
/// policy (their role comes first); a clerk who provided evidence manages its policy and the prosecutor may not.
#[tokio::test]
async fn providers_act_on_their_own_evidence_only() {
    let world = World::new().await;
    let gateway = &world.gateway;
    let session = |role| As::Session(&world.member(role).session);
    let upload = |role| async move {
        let reply = gateway.upload(CASE, &format!("purpose={PURPOSE}"), session(role), b"own".to_vec()).await;
        assert_eq!(reply.status, 201, "{}", String::from_utf8_lossy(&reply.body));
        reply.json()["artefact"].as_str().unwrap().to_owned()
    };

    let statement = upload(Role::Witness).await;
    let outcomes = format!("/api/v1/artefacts/{statement}/outcomes");
    let reply = gateway.call("POST", &outcomes, Some(session(Role::Clerk)), json!({ "outcome": "conviction" })).await;
    assert_eq!(reply.status, 201, "{}", String::from_utf8_lossy(&reply.body));
    let reply = gateway.get(&outcomes, Some(session(Role::Witness))).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.json()[0]["outcome"], "conviction");
    let elsewhere = format!("/api/v1/artefacts/{}/outcomes", world.artefact);
    gateway.get(&elsewhere, Some(session(Role::Witness))).await.assert_problem(403, "role-forbidden", "as witness");
    let policy_uri = format!("/api/v1/artefacts/{statement}/policy");
    let reply = gateway.call("PUT", &policy_uri, Some(session(Role::Witness)), open_policy()).await;
    reply.assert_problem(403, "role-forbidden", "as witness in this case you may not set policy");

    let exhibit = upload(Role::Clerk).await;
    let policy_uri = format!("/api/v1/artefacts/{exhibit}/policy");
    let reply = gateway.call("PUT", &policy_uri, Some(session(Role::Prosecutor)), open_policy()).await;
    reply.assert_problem(403, "provider-only", "set the use policy");
    let reply = gateway.call("PUT", &policy_uri, Some(session(Role::Clerk)), open_policy()).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let widen = format!("/api/v1/artefacts/{exhibit}/widen-requests");
    let reply = gateway.call("POST", &widen, Some(session(Role::Defence)), json!({ "purposes": ["appeal"] })).await;
    assert_eq!(reply.status, 201, "{}", String::from_utf8_lossy(&reply.body));
    let decision = format!("/api/v1/widen-requests/{}/decision", reply.json()["id"].as_str().unwrap());
    let approve = json!({ "approve": false });
    let reply = gateway.call("POST", &decision, Some(session(Role::Prosecutor)), approve.clone()).await;
    reply.assert_problem(403, "provider-only", "decide on wider use");
    let reply = gateway.call("POST", &decision, Some(session(Role::Clerk)), approve.clone()).await;
    assert_eq!((reply.status.as_u16(), &reply.json()["status"]), (200, &json!("refused")));
    gateway.call("POST", &decision, Some(session(Role::Clerk)), approve).await.assert_problem(409, "conflict", "");
}

/// Every refusal of a member on an existing case is a custody record, and one about an artefact is in that
/// artefact's timeline, whether the role or the provider rule refused it.
#[tokio::test]
async fn refusals_about_an_artefact_are_in_its_timeline() {
    let world = World::new().await;
    let refusals = [
        (Role::Interpreter, Endpoint::Download),
        (Role::Auditor, Endpoint::Download),
        (Role::Witness, Endpoint::Timeline),
        (Role::Judge, Endpoint::ReportOutcome),
        (Role::Clerk, Endpoint::SetPolicy),
        (Role::Clerk, Endpoint::DecideWidening),
    ];
    for (role, endpoint) in refusals {
        let (reply, _) = world.call_real(Who::Member(role), endpoint).await;
        assert!(matches!(expected(Who::Member(role), endpoint), Expect::Refused(403, _)), "{role} {endpoint:?}");
        check(Who::Member(role), endpoint, &reply).unwrap();
    }

    let clerk = As::Session(&world.member(Role::Clerk).session);
    let timeline = world.gateway.get(&format!("/api/v1/artefacts/{}/timeline", world.artefact), Some(clerk)).await;
    assert_eq!(timeline.status, 200);
    let timeline = timeline.json();
    let in_timeline = |role: Role, endpoint: Endpoint| {
        timeline["records"].as_array().unwrap().iter().any(|entry| {
            let (record, openings) = (&entry["record"], &entry["openings"]);
            let event = &record["event"];
            event["type"] == "access_refused"
                && openings["action"]["text"] == code(endpoint.action())
                && event["artefact"] == world.artefact.as_str()
                && record["actor"] == world.member(role).id.as_str()
        })
    };
    let missing: Vec<String> = refusals
        .into_iter()
        .filter(|(role, endpoint)| !in_timeline(*role, *endpoint))
        .map(|(role, endpoint)| format!("{role} {endpoint:?} ({:?})", expected(Who::Member(role), endpoint)))
        .collect();
    let events: Vec<&Value> =
        timeline["records"].as_array().unwrap().iter().map(|entry| &entry["record"]["event"]).collect();
    assert!(
        missing.is_empty(),
        "refusals missing from the artefact's timeline: {missing:?}\ntimeline events: {events:?}"
    );
}

async fn token(gateway: &TestGateway, session: &str, scopes: &[&str], seconds: i64) -> (String, String) {
    let body = json!({ "scopes": scopes, "expires_in_seconds": seconds });
    let reply = gateway.call("POST", "/api/v1/tokens", Some(As::Session(session)), body).await;
    assert_eq!(reply.status, 201, "{}", String::from_utf8_lossy(&reply.body));
    let json = reply.json();
    (json["id"].as_str().unwrap().to_owned(), json["token"].as_str().unwrap().to_owned())
}

/// Every endpoint a clerk's role permits (the provider's own aside), the hearing console's included, through API
/// tokens of each scope: a token does only what its scopes name, whatever the role allows; a refusal names the
/// missing scope and is on the record like a role refusal. A read-only token runs no hearing, and a `manage` token
/// without `write` schedules none (its output could not enter custody).
#[tokio::test]
async fn every_scope_against_every_endpoint_a_clerk_may_use() {
    let world = World::new().await;
    let clerk = world.member(Role::Clerk);
    let mut wrong = Vec::new();
    let mut hearing_refusals_recorded = 0;
    // Identical refusals (same member, action, artefact and code) within a minute are one record and a count, so
    // a later call refused for the same action, by any of the clerk's tokens, may add none.
    let mut recorded = std::collections::BTreeSet::new();
    for scopes in [&["read"][..], &["write"], &["manage"], &["write", "manage"]] {
        let (_, secret) = token(&world.gateway, &clerk.session, scopes, 3600).await;
        let name = scopes.join("+");
        for endpoint in Endpoint::ALL {
            if !permits(Role::Clerk, endpoint.action()) || endpoint.provider_only() {
                continue;
            }
            let lacking = endpoint.needs().into_iter().find(|(_, scope)| !scopes.contains(scope));
            let (reply, before) = world.call_real_as(Some(As::Token(&secret)), endpoint, lacking.is_none()).await;
            let status = reply.status.as_u16();
            let body = String::from_utf8_lossy(&reply.body);
            let Some((action, scope)) = lacking else {
                if status != endpoint.success() {
                    wrong.push(format!("{name} {endpoint:?}: expected {}, got {status} {body}", endpoint.success()));
                }
                continue;
            };
            let problem: Value = serde_json::from_slice(&reply.body).unwrap_or_default();
            let detail = problem["detail"].as_str().unwrap_or_default();
            if status != 403 || problem["type"] != problem_uri("insufficient-scope") || !detail.contains(scope) {
                wrong.push(format!(
                    "{name} {endpoint:?}: expected 403 insufficient-scope ({scope}), got {status} {body}"
                ));
                continue;
            }
            // A count of earlier identical refusals whose minute has closed may be written first; it stands for
            // those, not for this one.
            let mut added = Vec::new();
            for index in before..world.gateway.ledger_size() {
                let record = world.gateway.ledger_record(index).await;
                if record.get("repeated").is_none() {
                    added.push((record, world.gateway.opened(index, "action").await));
                }
            }
            let key = (code(action), endpoint.about_artefact());
            if added.is_empty() && recorded.contains(&key) {
                continue;
            }
            let [(record, opened_action)] = added.as_slice() else {
                wrong.push(format!("{name} {endpoint:?}: the refusal left {} records, not 1", added.len()));
                continue;
            };
            let artefact = if endpoint.about_artefact() { json!(world.artefact) } else { Value::Null };
            let event = &record["event"];
            let as_expected = event["type"] == "access_refused"
                && opened_action.as_deref() == Some(code(action).as_str())
                && event["code"] == "missing_scope"
                && event["artefact"] == artefact
                && record["actor"] == clerk.id.as_str();
            if !as_expected {
                wrong.push(format!("{name} {endpoint:?}: refusal recorded as {record}"));
            }
            recorded.insert(key);
            hearing_refusals_recorded += usize::from(action == Action::RunHearings);
        }
    }
    assert!(wrong.is_empty(), "{} calls answered wrongly:\n{}", wrong.len(), wrong.join("\n"));
    assert!(hearing_refusals_recorded >= 1, "no refused hearing step is on the record");
}

#[tokio::test]
async fn api_tokens_are_scoped_revocable_and_expire() {
    let gateway = TestGateway::start().await;
    gateway.case(CASE).await;
    let (prosecutor, session) = gateway.person("token.person", "IT").await;
    gateway.member(CASE, &prosecutor, "prosecutor").await;
    let case_uri = format!("/api/v1/cases/{CASE}");
    let query = format!("purpose={PURPOSE}");

    let (_, read) = token(&gateway, &session, &["read"], 3600).await;
    assert_eq!(gateway.get(&case_uri, Some(As::Token(&read))).await.status, 200);
    let reply = gateway.upload(CASE, &query, As::Token(&read), b"x".to_vec()).await;
    reply.assert_problem(403, "insufficient-scope", "write");

    let (write_id, write) = token(&gateway, &session, &["read", "write"], 3600).await;
    let reply = gateway.upload(CASE, &query, As::Token(&write), b"x".to_vec()).await;
    assert_eq!(reply.status, 201, "{}", String::from_utf8_lossy(&reply.body));
    let artefact = reply.json()["artefact"].as_str().unwrap().to_owned();
    let policy_uri = format!("/api/v1/artefacts/{artefact}/policy");
    let reply = gateway.call("PUT", &policy_uri, Some(As::Token(&write)), open_policy()).await;
    reply.assert_problem(403, "insufficient-scope", "manage");

    // Tokens are for machines that people sign in to set up: a token mints no token, and no administrator acts
    // through one.
    let body = json!({ "scopes": ["read"], "expires_in_seconds": 3600 });
    let reply = gateway.call("POST", "/api/v1/tokens", Some(As::Token(&write)), body).await;
    reply.assert_problem(403, "session-only", "make API tokens");
    let (_, admin_token) = token(&gateway, &gateway.admin, &["read", "write", "manage"], 3600).await;
    let body = json!({ "id": "case-other", "title": "R v Other" });
    let reply = gateway.call("POST", "/api/v1/cases", Some(As::Token(&admin_token)), body).await;
    reply.assert_problem(403, "session-only", "create cases");
    for body in [
        json!({ "scopes": [], "expires_in_seconds": 3600 }),
        json!({ "scopes": ["read"], "expires_in_seconds": 59 }),
        json!({ "scopes": ["root"], "expires_in_seconds": 3600 }),
    ] {
        let reply = gateway.call("POST", "/api/v1/tokens", Some(As::Session(&session)), body.clone()).await;
        reply.assert_problem(400, "bad-input", "");
    }

    let forged = format!("cst_{}", "A".repeat(43));
    gateway.get(&case_uri, Some(As::Token(&forged))).await.assert_problem(401, "unauthenticated", "");
    gateway.get(&case_uri, Some(As::Session("forged-session"))).await.assert_problem(401, "unauthenticated", "");

    // Someone else cannot revoke the token, nor can another token of its owner's (a leaked read-only token must not
    // end the owner's other machines' access); its owner can, and then it is refused as revoked. A token may
    // revoke itself.
    let revoke = format!("/api/v1/tokens/{write_id}");
    gateway.delete(&revoke, Some(As::Session(&gateway.admin))).await.assert_problem(404, "not-found", "");
    let (reader_id, reader) = token(&gateway, &session, &["read"], 3600).await;
    gateway.delete(&revoke, Some(As::Token(&reader))).await.assert_problem(403, "session-only", "revoke another");
    assert_eq!(gateway.get(&case_uri, Some(As::Token(&write))).await.status, 200, "not revoked by the reader");
    let reader_revokes_itself = format!("/api/v1/tokens/{reader_id}");
    assert_eq!(gateway.delete(&reader_revokes_itself, Some(As::Token(&reader))).await.status, 204);
    gateway.get(&case_uri, Some(As::Token(&reader))).await.assert_problem(401, "token-revoked", "");
    assert_eq!(gateway.delete(&revoke, Some(As::Session(&session))).await.status, 204);
    gateway.get(&case_uri, Some(As::Token(&write))).await.assert_problem(401, "token-revoked", "");

    let (_, short) = token(&gateway, &session, &["read"], 60).await;
    assert_eq!(gateway.get(&case_uri, Some(As::Token(&short))).await.status, 200);
    gateway.clock.advance(61);
    gateway.get(&case_uri, Some(As::Token(&short))).await.assert_problem(401, "token-expired", "");
    assert_eq!(gateway.get(&case_uri, Some(As::Session(&session))).await.status, 200, "sessions last longer");
}

/// A provider sees outcome reports on its evidence whatever its role, but a token still needs the read scope.
#[tokio::test]
async fn a_provider_reads_outcome_reports_only_with_the_read_scope() {
    let world = World::new().await;
    let witness = world.member(Role::Witness);
    let reply =
        world.gateway.upload(CASE, &format!("purpose={PURPOSE}"), As::Session(&witness.session), b"s".to_vec()).await;
    let statement = reply.json()["artefact"].as_str().unwrap().to_owned();
    let outcomes = format!("/api/v1/artefacts/{statement}/outcomes");
    assert_eq!(world.gateway.get(&outcomes, Some(As::Session(&witness.session))).await.status, 200);
    let (_, write_only) = token(&world.gateway, &witness.session, &["write"], 3600).await;
    world.gateway.get(&outcomes, Some(As::Token(&write_only))).await.assert_problem(403, "insufficient-scope", "read");
}

/// The log is public: it names accounts by opaque id only, never by username or display name, and no secret
/// that authenticated a call ever reaches it.
#[tokio::test]
async fn the_public_log_names_no_one() {
    let world = World::new().await;
    let gateway = &world.gateway;
    let witness = world.member(Role::Witness);
    let (_, secret) = token(gateway, &witness.session, &["read", "write"], 3600).await;
    let reply = gateway.upload(CASE, &format!("purpose={PURPOSE}"), As::Token(&secret), b"my statement".to_vec()).await;
    assert_eq!(reply.status, 201, "{}", String::from_utf8_lossy(&reply.body));
    for who in world.callers() {
        for endpoint in Endpoint::ALL {
            world.call_real(who, endpoint).await;
        }
    }
    let entries: Vec<Vec<u8>> =
        gateway.files_under("log/tile/entries").iter().map(|path| std::fs::read(path).unwrap()).collect();
    let contains =
        |needle: &str| entries.iter().any(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()));
    assert!(contains(&witness.id), "the scan should find the witness's opaque id in the log");
    let mut secrets = vec![secret.clone(), gateway.admin.clone(), "Administrator".to_owned()];
    for person in world.members.iter().map(|(_, person)| person).chain([&world.outsider, &world.spare]) {
        secrets.extend([
            person.username.clone(),
            format!("{} name", person.username),
            person.session.clone(),
            format!("{}-correct-horse-battery", person.username),
        ]);
    }
    let leaked: Vec<&String> = secrets.iter().filter(|needle| contains(needle)).collect();
    assert!(leaked.is_empty(), "the public log contains {leaked:?}");
}

/// Restrictions the provider sets hold on every read, and a refused use is recorded against the artefact.
#[tokio::test]
async fn use_policies_are_enforced_and_refusals_recorded() {
    let gateway = TestGateway::start().await;
    gateway.case(CASE).await;
    let (provider, session) = gateway.person("provider.person", "IT").await;
    gateway.member(CASE, &provider, "prosecutor").await;
    let auth = As::Session(&session);
    let red = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(policy("TLP:RED").to_string())
    };
    let uri = format!("/api/v1/cases/{CASE}/artefacts?purpose={PURPOSE}");
    let headers = [("content-type", "video/webm"), ("custodia-use-policy", red.as_str())];
    let reply = gateway.send_bytes("POST", &uri, Some(auth), &headers, "red evidence").await;
    assert_eq!(reply.status, 201, "{}", String::from_utf8_lossy(&reply.body));
    let artefact = reply.json()["artefact"].as_str().unwrap().to_owned();
    let content = format!("/api/v1/artefacts/{artefact}/content?purpose={PURPOSE}");
    let detail = format!("/api/v1/artefacts/{artefact}?purpose={PURPOSE}");

    // TLP:RED: its description is looked at in the gateway; no byte of its content leaves, whatever the client
    // says it will do with them: playing, a range, or a download are all refused, and each refusal is recorded.
    let reply = gateway.get(&detail, Some(auth)).await;
    assert_eq!((reply.status.as_u16(), &reply.json()["policy"]["tlp"]), (200, &json!("TLP:RED")));
    let listed = gateway.get(&format!("/api/v1/cases/{CASE}/artefacts"), Some(auth)).await.json();
    assert_eq!(listed[0]["tlp"], "TLP:RED", "{listed}");
    let ranged = [("range", "bytes=0-3")];
    let before = gateway.ledger_size();
    let asking = [
        gateway.get(&format!("{content}&access=play"), Some(auth)).await,
        gateway.send_bytes("GET", &format!("{content}&access=play"), Some(auth), &ranged, "").await,
        gateway.send_bytes("GET", &content, Some(auth), &ranged, "").await,
        gateway.get(&format!("{content}&access=download"), Some(auth)).await,
    ];
    for reply in &asking {
        reply.assert_problem(403, "use-restricted", "TLP:RED");
        assert!(!String::from_utf8_lossy(&reply.body).contains("red evidence"));
    }
    let mut refusals = 0;
    for index in before..gateway.ledger_size() {
        let record = gateway.ledger_record(index).await;
        assert_ne!(record["event"]["type"], "artefact_accessed", "{record}");
        if record["event"]["type"] == "access_refused" {
            assert_eq!(record["event"]["artefact"], artefact.as_str(), "{record}");
            assert_eq!(gateway.opened(index, "action").await, Some(code(Action::DownloadArtefact)), "{record}");
            assert_eq!(record["event"]["code"], "policy_tlp", "{record}");
            assert!(record.get("repeated").is_none(), "{record}");
            refusals += 1;
        }
    }
    // The four are one refusal (same member, action, artefact and code) within a minute: one record, then a count.
    assert_eq!(refusals, 1, "the refused plays are on the record, once");
    // Once the minute has passed, the next refused download writes the count of the three repeats, then itself.
    gateway.clock.advance(61);
    let before = gateway.ledger_size();
    gateway.get(&content, Some(auth)).await.assert_problem(403, "use-restricted", "TLP:RED");
    assert_eq!(gateway.ledger_size(), before + 2);
    let count = gateway.ledger_record(before).await;
    let record = gateway.ledger_record(before + 1).await;
    for (index, record) in [(before, &count), (before + 1, &record)] {
        assert_eq!(record["event"]["type"], "access_refused", "{record}");
        assert_eq!(record["event"]["artefact"], artefact.as_str(), "{record}");
        assert_eq!(gateway.opened(index, "action").await, Some(code(Action::DownloadArtefact)), "{record}");
        assert_eq!(record["event"]["code"], "policy_tlp", "{record}");
    }
    assert_eq!(count["repeated"]["count"], asking.len() - 1, "{count}");
    assert!(record.get("repeated").is_none(), "{record}");

    // A purpose the provider did not permit.
    let mut only_trial = open_policy();
    only_trial["permitted_purposes"] = json!(["trial preparation"]);
    let policy_uri = format!("/api/v1/artefacts/{artefact}/policy");
    assert_eq!(gateway.call("PUT", &policy_uri, Some(auth), only_trial).await.status, 200);
    assert_eq!(gateway.get(&content, Some(auth)).await.status, 200);
    let other = format!("/api/v1/artefacts/{artefact}/content?purpose=another%20case");
    gateway.get(&other, Some(auth)).await.assert_problem(403, "use-restricted", "another case");

    // An expiring policy warns, then lapses.
    let mut expiring = open_policy();
    let in_an_hour = gateway.clock.now().checked_add(jiff::SignedDuration::from_hours(1)).unwrap();
    expiring["expires_at"] = json!(in_an_hour.to_string());
    assert_eq!(gateway.call("PUT", &policy_uri, Some(auth), expiring).await.status, 200);
    let reply = gateway.get(&detail, Some(auth)).await;
    assert_eq!(reply.status, 200);
    assert!(reply.json()["warnings"][0].as_str().unwrap().contains("lapses"), "{}", reply.json());
    gateway.clock.advance(2 * 3600);
    gateway.get(&content, Some(auth)).await.assert_problem(403, "use-restricted", "lapsed");
    gateway.get(&detail, Some(auth)).await.assert_problem(403, "use-restricted", "lapsed");
}

/// An RFC 9530 digest of 32 zero bytes, which no test upload has.
const ZEROS_DIGEST: &str = "sha-256=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:";

/// Bad input gets a precise 4xx, and a refused upload leaves no object, no artefact and no custody record.
#[tokio::test]
async fn bad_input_is_refused_precisely_and_leaves_nothing() {
    let gateway = &TestGateway::start().await;
    gateway.case(CASE).await;
    let (prosecutor, session) = gateway.person("input.person", "IT").await;
    gateway.member(CASE, &prosecutor, "prosecutor").await;
    let auth = As::Session(&session);
    let before = gateway.ledger_size();
    let upload = |query: String, headers: Vec<(&'static str, &'static str)>| {
        let uri = format!("/api/v1/cases/{CASE}/artefacts?purpose={PURPOSE}{query}");
        async move { gateway.send_bytes("POST", &uri, Some(auth), &headers, "the real bytes").await }
    };
    let other_sha256 = custodia_core::Sha256::of(b"other bytes");
    let refused_uploads = [
        (upload(format!("&sha256={}", other_sha256.to_hex()), vec![]).await, 422, "digest-mismatch"),
        (upload(String::new(), vec![("repr-digest", ZEROS_DIGEST)]).await, 422, "digest-mismatch"),
        (upload(String::new(), vec![("repr-digest", "md5=:AAAA:")]).await, 400, "bad-input"),
        (upload("&filename=..%2F..%2Fetc%2Fpasswd".into(), vec![]).await, 400, "bad-input"),
        (upload("&filename=.hidden".into(), vec![]).await, 400, "bad-input"),
        (upload("&filename=a%5Cb".into(), vec![]).await, 400, "bad-input"),
        (upload(String::new(), vec![("custodia-use-policy", "not base64!")]).await, 400, "bad-input"),
        (upload(String::new(), vec![("custodia-use-policy", "e30=")]).await, 400, "bad-input"),
        // A right-to-left override ("statement<RLO>fdp.exe" reads "statementexe.pdf"), a zero-width space.
        (upload("&filename=statement%E2%80%AEfdp.exe".into(), vec![]).await, 400, "bad-input"),
        (upload("&filename=exhibit%E2%80%8B1.pdf".into(), vec![]).await, 400, "bad-input"),
    ];
    for (reply, status, kind) in &refused_uploads {
        reply.assert_problem(*status, kind, "");
    }
    refused_uploads[3].0.assert_problem(400, "bad-input", "filename");
    refused_uploads[8].0.assert_problem(400, "bad-input", "U+202E");
    refused_uploads[9].0.assert_problem(400, "bad-input", "U+200B");
    let no_purpose = format!("/api/v1/cases/{CASE}/artefacts");
    let reply = gateway.send_bytes("POST", &no_purpose, Some(auth), &[], "bytes").await;
    reply.assert_problem(400, "bad-input", "purpose");
    assert_eq!(gateway.files_under("objects/objects"), Vec::<std::path::PathBuf>::new());
    assert_eq!(gateway.files_under("objects/staging"), Vec::<std::path::PathBuf>::new());
    assert_eq!(gateway.get(&no_purpose, Some(auth)).await.json(), json!([]));
    assert_eq!(gateway.ledger_size(), before, "a refused upload was recorded");

    let reply = gateway.upload(CASE, &format!("purpose={PURPOSE}"), auth, b"0123456789".to_vec()).await;
    let artefact = reply.json()["artefact"].as_str().unwrap().to_owned();
    let policy_uri = format!("/api/v1/artefacts/{artefact}/policy");
    let before = gateway.ledger_size();
    let json_body = |body: String, content_type: &'static str| {
        let uri = policy_uri.clone();
        async move { gateway.send_bytes("PUT", &uri, Some(auth), &[("content-type", content_type)], body).await }
    };
    let mut huge = open_policy();
    huge["provider"] = json!("x".repeat(100 * 1024));
    let mut unknown_field = open_policy();
    unknown_field["colour"] = json!("red");
    let mut bad_tlp = open_policy();
    bad_tlp["tlp"] = json!("TLP:WHITE");
    let mut bad_onward = open_policy();
    bad_onward["onward_transfer"] = json!("allowed");
    for (reply, status, kind) in [
        (json_body(huge.to_string(), "application/json").await, 413, "too-large"),
        (json_body("{\"tlp\":".into(), "application/json").await, 400, "bad-input"),
        (json_body(open_policy().to_string(), "text/plain").await, 415, "unsupported-media-type"),
        (json_body(unknown_field.to_string(), "application/json").await, 400, "bad-input"),
        (json_body(bad_tlp.to_string(), "application/json").await, 400, "bad-input"),
        (json_body(bad_onward.to_string(), "application/json").await, 400, "bad-input"),
    ] {
        reply.assert_problem(status, kind, "");
    }

    for uri in [format!("/api/v1/artefacts/{artefact}/content"), format!("/api/v1/artefacts/{artefact}")] {
        gateway.get(&uri, Some(auth)).await.assert_problem(400, "bad-input", "purpose");
    }
    let content = format!("/api/v1/artefacts/{artefact}/content?purpose={PURPOSE}");
    gateway.get(&format!("{content}&access=print"), Some(auth)).await.assert_problem(400, "bad-input", "access");
    let ranged = |range: &'static str| {
        let request = TestGateway::request("GET", &content, Some(auth)).header(header::RANGE, range);
        gateway.send(request.body(Default::default()).unwrap())
    };
    let reply = ranged("bytes=20-30").await;
    reply.assert_problem(416, "bad-range", "10 bytes");
    assert_eq!(reply.headers[header::CONTENT_RANGE], "bytes */10");
    assert_eq!(gateway.ledger_size(), before, "a malformed request was recorded");
    let reply = ranged("bytes=2-4").await;
    assert_eq!((reply.status.as_u16(), reply.body.as_slice()), (206, &b"234"[..]));
    assert_eq!(reply.headers[header::CONTENT_RANGE], "bytes 2-4/10");

    let outcomes = format!("/api/v1/artefacts/{artefact}/outcomes");
    let reply = gateway.call("POST", &outcomes, Some(auth), json!({ "outcome": "acquitted" })).await;
    reply.assert_problem(400, "bad-input", "");
    let membership = format!("/api/v1/cases/{CASE}/members/{prosecutor}");
    let reply = gateway.call("PUT", &membership, Some(As::Session(&gateway.admin)), json!({ "role": "usher" })).await;
    reply.assert_problem(400, "bad-input", "");
}

/// A case that has a clerk keeps one: the last clerk can neither demote nor remove themself, nor be removed by an
/// administrator; with a second clerk in the case, either may go.
#[tokio::test]
async fn a_case_keeps_its_last_clerk() {
    let gateway = TestGateway::start().await;
    gateway.case(CASE).await;
    let (clerk, session) = gateway.person("only.clerk", "IT").await;
    gateway.member(CASE, &clerk, "clerk").await;
    let clerk_auth = Some(As::Session(&session));
    let admin = Some(As::Session(&gateway.admin));
    let own = format!("/api/v1/cases/{CASE}/members/{clerk}");
    let before = gateway.ledger_size();
    let reply = gateway.call("PUT", &own, clerk_auth, json!({ "role": "judge" })).await;
    reply.assert_problem(409, "conflict", "at least one clerk");
    gateway.delete(&own, clerk_auth).await.assert_problem(409, "conflict", "at least one clerk");
    gateway.delete(&own, admin).await.assert_problem(409, "conflict", "at least one clerk");
    assert_eq!(gateway.get(&format!("/api/v1/cases/{CASE}"), clerk_auth).await.json()["role"], "clerk");
    assert_eq!(gateway.ledger_size(), before, "a change that did not happen is not on the record");

    let (second, _) = gateway.person("second.clerk", "IT").await;
    let uri = format!("/api/v1/cases/{CASE}/members/{second}");
    assert_eq!(gateway.call("PUT", &uri, clerk_auth, json!({ "role": "clerk" })).await.status, 204);
    assert_eq!(gateway.call("PUT", &own, clerk_auth, json!({ "role": "judge" })).await.status, 204);
    // Now the second clerk is the last one.
    gateway.delete(&uri, admin).await.assert_problem(409, "conflict", "at least one clerk");
}

/// Two clerks, and each taken away at the same moment (one removed, the other given another role): only one
/// change can happen, and only that one reaches the ledger. Checking the last clerk in the catalog after the
/// record was appended put a record of a change that never happened beside the one that did.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_changes_that_would_leave_no_clerk_record_only_the_one_made() {
    let gateway = TestGateway::start().await;
    gateway.case(CASE).await;
    let admin = Some(As::Session(&gateway.admin));
    let (first, _) = gateway.person("first.clerk", "IT").await;
    let (second, _) = gateway.person("second.clerk", "IT").await;
    let uri = |account: &str| format!("/api/v1/cases/{CASE}/members/{account}");
    let members = || async {
        let rows = gateway.state.gateway.catalog().members(CASE).await.unwrap();
        rows.into_iter().map(|row| (row.account_id, row.role)).collect::<std::collections::BTreeMap<_, _>>()
    };
    for round in 0..12 {
        for account in [&first, &second] {
            assert_eq!(gateway.call("PUT", &uri(account), admin, json!({ "role": "clerk" })).await.status, 204);
        }
        let before = gateway.ledger_size();
        let (taken, other) = if round % 2 == 0 { (&first, &second) } else { (&second, &first) };
        let (taken_uri, other_uri) = (uri(taken), uri(other));
        let (removed, changed) = tokio::join!(
            gateway.delete(&taken_uri, admin),
            gateway.call("PUT", &other_uri, admin, json!({ "role": "judge" })),
        );
        let statuses = [removed.status.as_u16(), changed.status.as_u16()];
        assert!(matches!(statuses, [204, 409] | [409, 204]), "round {round}: {statuses:?}");
        let added: Vec<Value> = {
            let mut added = Vec::new();
            for index in before..gateway.ledger_size() {
                added.push(gateway.ledger_record(index).await);
            }
            added
        };
        let [record] = added.as_slice() else {
            panic!("round {round}: {} records for one change: {added:?}", added.len())
        };
        let now = members().await;
        assert_eq!(now.values().filter(|role| *role == "clerk").count(), 1, "round {round}: {now:?}");
        let (member, change) = if statuses[0] == 204 { (taken, "removed") } else { (other, "role_changed") };
        assert_eq!(
            (record["event"]["member"].as_str(), record["event"]["change"].as_str()),
            (Some(member.as_str()), Some(change))
        );
        // Put back the member a removal took, for the next round.
        if statuses[0] == 204 {
            assert!(!now.contains_key(taken.as_str()), "round {round}: {now:?}");
        } else {
            assert_eq!(now.get(other.as_str()).map(String::as_str), Some("judge"), "round {round}: {now:?}");
        }
    }
}
