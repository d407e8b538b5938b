//! The court's own words: rights notices and oaths come from the files the court edits (`CUSTODIA_TEXTS_DIR`). The
//! judge presents them before the step: they are shown to the witness (the interpreter's oath to the interpreter)
//! over the room's WebSocket in their page's language (or the one the judge chooses), the judge's checklist says
//! they were shown, and only then is the notice given or the oath sworn; the minutes say which wording was shown
//! and sworn by its SHA-256, the digest of the court's own file. Words awaiting their step are shown again to a
//! witness (or the judge) who comes back on a new connection, and no longer once the step is taken. A malformed
//! texts directory stops the gateway at start-up, naming the file. The hearing's contact (the registry's phone or
//! e-mail) reaches the hearing's participants and the court, and nothing public.

mod support;

use std::time::Duration;

use custodia_core::Sha256;
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use support::{As, TestGateway, serve_on_loopback};

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const CASE: &str = "case-t";
const CONTACT: &str = "Cancelleria, +39 095 555 0101, cancelleria.catania@giustizia.example";

/// The next message on a room socket whose type is `wanted`, skipping `state` broadcasts and anything else.
async fn next_of(socket: &mut Socket, wanted: &str) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(60), socket.next())
            .await
            .unwrap_or_else(|_| panic!("a {wanted} message within a minute"))
            .expect("the room is open")
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["type"] == wanted {
                return value;
            }
            assert_ne!(value["type"], "refused", "{value}");
            assert_ne!(value["type"], "error", "{value}");
        }
    }
}

async fn send(socket: &mut Socket, message: Value) {
    socket.send(message.to_string().into()).await.unwrap();
}

fn custom_texts(dir: &std::path::Path) -> [(String, Vec<u8>); 4] {
    let fr = dir.join("fr");
    std::fs::create_dir_all(&fr).unwrap();
    let files = [
        ("rights_notice.txt", "Tribunal de Catane : vous pouvez refuser de répondre.\nDites la vérité.\n"),
        ("oath.txt", "Je jure de dire la vérité.\n"),
        ("affirmation.txt", "J'affirme solennellement, devant le tribunal de Catane, dire la vérité.\n"),
        ("interpreter_oath.txt", "Je jure de traduire fidèlement, devant le tribunal de Catane.\n"),
    ];
    files.map(|(name, words)| {
        std::fs::write(fr.join(name), words).unwrap();
        (name.to_owned(), words.as_bytes().to_vec())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_witness_is_shown_the_courts_own_words_and_the_minutes_name_them_by_digest() {
    let texts = tempfile::tempdir().unwrap();
    let [(_, notice), _, (_, affirmation), _] = custom_texts(texts.path());
    // The Italian texts are the embedded ones: the directory names only French.
    let interpreter_oath = include_bytes!("../../hearings/texts/it/interpreter_oath.txt");
    let texts_dir = texts.path().to_path_buf();
    let gw = TestGateway::start_with(move |config| config.texts_dir = Some(texts_dir)).await;
    let (clerk_id, clerk) = gw.person("clerk.t", "IT").await;
    let (pm_id, pm) = gw.person("pm.t", "IT").await;
    gw.case(CASE).await;
    gw.member(CASE, &clerk_id, "clerk").await;
    gw.member(CASE, &pm_id, "prosecutor").await;
    let clerk_as = Some(As::Session(&clerk));

    let schedule = json!({"scheduled_for": "2026-12-01T09:00:00Z", "place": "Aula 2",
        "identity_check_before_oath": false, "contact": CONTACT});
    let reply = gw.call("POST", &format!("/api/v1/cases/{CASE}/hearings"), clerk_as, schedule).await;
    assert_eq!(reply.status, 201, "{}", String::from_utf8_lossy(&reply.body));
    let uri = format!("/api/v1/cases/{CASE}/hearings/{}", reply.json()["id"].as_str().unwrap());
    let invite = |role: &'static str| {
        let (gw, uri) = (&gw, format!("{uri}/invites"));
        async move {
            let body = json!({"role": role, "admit_on_join": role == "judge"});
            let reply = gw.call("POST", &uri, clerk_as, body).await;
            assert_eq!(reply.status, 201, "{}", String::from_utf8_lossy(&reply.body));
            reply.json()["secret"].as_str().unwrap().to_owned()
        }
    };
    let (judge_secret, witness_secret) = (invite("judge").await, invite("witness").await);
    let interpreter_secret = invite("interpreter").await;
    let observer_secret = invite("observer").await;
    assert_eq!(gw.call("POST", &format!("{uri}/open"), clerk_as, json!({})).await.status, 200);

    // The court sees the contact; another member of the case does not.
    assert_eq!(gw.get(&uri, clerk_as).await.json()["contact"], CONTACT);
    assert_eq!(gw.get(&uri, Some(As::Session(&pm))).await.json()["contact"], Value::Null);

    let port = serve_on_loopback(&gw).await;
    let url = format!("ws://127.0.0.1:{port}/api/v1/room");
    let (mut judge, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    send(&mut judge, json!({"type": "join", "invite": judge_secret, "language": "it"})).await;
    let welcome = next_of(&mut judge, "welcome").await;
    assert_eq!(welcome["contact"], CONTACT, "{welcome}");
    // The witness's page speaks French (the invite's language, or their browser's): it says so on joining.
    let (mut witness, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    send(&mut witness, json!({"type": "join", "invite": witness_secret, "language": "fr"})).await;
    let welcome = next_of(&mut witness, "welcome").await;
    assert_eq!(welcome["contact"], CONTACT, "the participant's page shows whom to call: {welcome}");
    let w = welcome["participant"].as_str().unwrap().to_owned();
    // The interpreter's page speaks Italian.
    let (mut interpreter, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    send(&mut interpreter, json!({"type": "join", "invite": interpreter_secret, "language": "it"})).await;
    let i = next_of(&mut interpreter, "welcome").await["participant"].as_str().unwrap().to_owned();

    send(&mut judge, json!({"type": "admit", "participant": w})).await;
    send(&mut judge, json!({"type": "admit", "participant": i})).await;
    send(&mut judge, json!({"type": "start_session"})).await;
    while next_of(&mut judge, "state").await["phase"] != "in_session" {}

    // Nothing is given or sworn before its words were shown: refused by the hearing's rules.
    send(&mut judge, json!({"type": "rights_notice", "person": w})).await;
    let refused = next_of(&mut judge, "refused").await;
    assert_eq!((&refused["action"], &refused["problem"]), (&json!("rights_notice"), &json!("text_not_presented")));
    // A language the court has no texts in is refused, and nothing is recorded.
    let before = gw.ledger_size();
    send(&mut judge, json!({"type": "present_text", "person": w, "wording": "rights_notice", "language": "de"})).await;
    let error = next_of(&mut judge, "error").await;
    assert!(error["detail"].as_str().unwrap().contains("no texts in de"), "{error}");
    assert_eq!(gw.ledger_size(), before);

    // No language given: the witness's page's, French, from the court's file, shown before the notice is given.
    send(&mut judge, json!({"type": "present_text", "person": w, "wording": "rights_notice"})).await;
    let shown = next_of(&mut witness, "text").await;
    assert_eq!(shown["kind"], "rights_notice");
    assert_eq!(shown["language"], "fr");
    assert_eq!(shown["words"].as_str().unwrap().as_bytes(), notice.as_slice());
    assert_eq!(shown["sha256"], Sha256::of(&notice).to_hex());
    let judge_saw = next_of(&mut judge, "text").await;
    assert_eq!(judge_saw, shown, "the judge sees what the witness was shown");
    // The judge's checklist says that it was shown, in which language and which words.
    let checklist = loop {
        let state = next_of(&mut judge, "state").await;
        if !state["checklist"]["texts_presented"].as_array().unwrap().is_empty() {
            break state["checklist"].clone();
        }
    };
    let presented = &checklist["texts_presented"][0];
    assert_eq!((&presented["person"], &presented["wording"]), (&json!(w), &json!("rights_notice")), "{checklist}");
    assert_eq!(presented["text"], json!({"language": "fr", "sha256": Sha256::of(&notice).to_hex()}));
    assert_eq!(checklist["rights_notices"], json!([]), "shown is not yet given: {checklist}");
    send(&mut judge, json!({"type": "rights_notice", "person": w})).await;

    // The oath's form needs its own words: the affirmation, shown in the language the judge chose.
    send(&mut judge, json!({"type": "oath", "witness": w, "form": "affirmation"})).await;
    assert_eq!(next_of(&mut judge, "refused").await["problem"], "text_not_presented");
    send(&mut judge, json!({"type": "present_text", "person": w, "wording": "affirmation", "language": "fr"})).await;
    let shown = next_of(&mut witness, "text").await;
    assert_eq!(shown["kind"], "affirmation");
    assert_eq!(shown["words"].as_str().unwrap().as_bytes(), affirmation.as_slice());
    send(&mut judge, json!({"type": "oath", "witness": w, "form": "affirmation"})).await;

    // The interpreter's oath goes to the interpreter, in Italian, their page's language; not to the witness.
    send(&mut judge, json!({"type": "present_text", "person": i, "wording": "interpreter_oath"})).await;
    let shown = next_of(&mut interpreter, "text").await;
    assert_eq!((&shown["kind"], &shown["language"]), (&json!("interpreter_oath"), &json!("it")), "{shown}");
    assert_eq!(shown["words"].as_str().unwrap().as_bytes(), interpreter_oath.as_slice());
    send(&mut judge, json!({"type": "swear_interpreter", "interpreter": i, "languages": "fr / it"})).await;
    send(&mut witness, json!({"type": "ping"})).await;
    loop {
        let message = tokio::time::timeout(Duration::from_secs(60), witness.next()).await.unwrap().unwrap().unwrap();
        let tokio_tungstenite::tungstenite::Message::Text(text) = message else { continue };
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_ne!(value["kind"], "interpreter_oath", "the witness is not shown the interpreter's oath");
        if value["type"] == "pong" {
            break;
        }
    }

    // A channel for the sworn interpreter: the main room learns whether its interpreter is there (if not, its
    // listeners hear the floor); someone waiting in the lobby does not learn where the interpreter is.
    let (mut waiting, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    send(&mut waiting, json!({"type": "join", "invite": observer_secret, "language": "fr"})).await;
    next_of(&mut waiting, "welcome").await;
    send(&mut judge, json!({"type": "open_channel", "interpreter": i, "language": "fr", "mode": "simultaneous"})).await;
    until_pong(&mut judge).await;
    let channel_seen = |messages: Vec<Value>| {
        let latest = messages.into_iter().rev().find(|m| m["type"] == "state");
        latest.map(|state| state["channels"].clone()).unwrap_or(Value::Null)
    };
    let in_room = channel_seen(until_pong(&mut witness).await);
    assert_eq!(in_room[0]["interpreting"], true, "{in_room}");
    let in_lobby = channel_seen(until_pong(&mut waiting).await);
    let told = in_lobby.as_array().into_iter().flatten().any(|channel| channel.get("interpreting").is_some());
    assert!(!told, "the lobby learnt where the interpreter is: {in_lobby}");
    send(&mut judge, json!({"type": "end"})).await;

    // The signed minutes name the wording by the digest of the court's file, and its language.
    let mut hearing = Value::Null;
    for _ in 0..600 {
        hearing = gw.get(&uri, clerk_as).await.json();
        if hearing["minutes_artefact"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let minutes_id = hearing["minutes_artefact"].as_str().unwrap_or_else(|| panic!("no minutes: {hearing}"));
    let content =
        gw.get(&format!("/api/v1/artefacts/{minutes_id}/content?purpose=trial%20preparation"), clerk_as).await;
    assert_eq!(content.status, 200, "{}", String::from_utf8_lossy(&content.body));
    let minutes = content.json();
    let notice_digest = Sha256::of(&notice).to_hex();
    let affirmation_digest = Sha256::of(&affirmation).to_hex();
    assert_eq!(minutes["rights_notices"][0]["text"], json!({"language": "fr", "sha256": notice_digest}), "{minutes}");
    assert_eq!(minutes["oaths"][0]["text"], json!({"language": "fr", "sha256": affirmation_digest}), "{minutes}");
    assert_eq!(minutes["oaths"][0]["form"], "affirmation");
    let interpreter_digest = Sha256::of(interpreter_oath).to_hex();
    assert_eq!(minutes["interpreters"][0]["text"], json!({"language": "it", "sha256": interpreter_digest}));
    let presented: Vec<(&str, &str)> = minutes["texts_presented"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["wording"].as_str().unwrap(), p["text"]["language"].as_str().unwrap()))
        .collect();
    assert_eq!(presented, [("rights_notice", "fr"), ("affirmation", "fr"), ("interpreter_oath", "it")], "{minutes}");

    // The contact is in no record and not in the minutes; the records commit to the wording's digest, never
    // showing it in clear. Nothing logs a contact: its `Debug` withholds it.
    let phone = "555 0101";
    assert!(!String::from_utf8_lossy(&content.body).contains(phone));
    let mut presentations = 0;
    for index in 0..gw.ledger_size() {
        let record = gw.ledger_record(index).await;
        presentations += usize::from(record["event"]["kind"] == "text_presented");
        let record = record.to_string();
        let digests = [notice_digest.as_str(), affirmation_digest.as_str(), interpreter_digest.as_str()];
        for secret in [phone, "\"fr\"", "\"it\""].into_iter().chain(digests) {
            assert!(!record.contains(secret), "{secret} in {record}");
        }
    }
    assert_eq!(presentations, 3, "each presentation is on the record, by its kind only");
    let request: custodia_hearings::live::ScheduleRequest =
        serde_json::from_value(json!({"scheduled_for": "2026-12-01T09:00:00Z", "place": "Aula 2", "contact": CONTACT}))
            .unwrap();
    assert!(!format!("{request:?}").contains(phone));
}

/// Everything that reaches `socket` until the gateway answers a ping: what it sent before, in order.
async fn until_pong(socket: &mut Socket) -> Vec<Value> {
    send(socket, json!({"type": "ping"})).await;
    let mut messages = Vec::new();
    loop {
        let message = next_of_any(socket).await;
        if message["type"] == "pong" {
            return messages;
        }
        messages.push(message);
    }
}

async fn next_of_any(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(60), socket.next())
            .await
            .expect("a message within a minute")
            .expect("the room is open")
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn words_awaiting_their_step_are_shown_again_to_a_witness_who_comes_back_and_not_once_it_is_taken() {
    let gw = TestGateway::start().await;
    let (clerk_id, clerk) = gw.person("clerk.r", "IT").await;
    gw.case(CASE).await;
    gw.member(CASE, &clerk_id, "clerk").await;
    let clerk_as = Some(As::Session(&clerk));
    let schedule = json!({"scheduled_for": "2026-12-01T09:00:00Z", "place": "Aula 2",
        "identity_check_before_oath": false});
    let reply = gw.call("POST", &format!("/api/v1/cases/{CASE}/hearings"), clerk_as, schedule).await;
    assert_eq!(reply.status, 201, "{}", String::from_utf8_lossy(&reply.body));
    let uri = format!("/api/v1/cases/{CASE}/hearings/{}", reply.json()["id"].as_str().unwrap());
    let mut secrets = Vec::new();
    for role in ["judge", "witness"] {
        let body = json!({"role": role, "admit_on_join": role == "judge"});
        let reply = gw.call("POST", &format!("{uri}/invites"), clerk_as, body).await;
        assert_eq!(reply.status, 201, "{}", String::from_utf8_lossy(&reply.body));
        secrets.push(reply.json()["secret"].as_str().unwrap().to_owned());
    }
    assert_eq!(gw.call("POST", &format!("{uri}/open"), clerk_as, json!({})).await.status, 200);
    let port = serve_on_loopback(&gw).await;
    let url = format!("ws://127.0.0.1:{port}/api/v1/room");
    let open = || async { tokio_tungstenite::connect_async(&url).await.unwrap().0 };

    let mut judge = open().await;
    send(&mut judge, json!({"type": "join", "invite": secrets[0], "language": "it"})).await;
    let judge_credential = next_of(&mut judge, "welcome").await["credential"].as_str().unwrap().to_owned();
    // The witness's page speaks Arabic.
    let mut witness = open().await;
    send(&mut witness, json!({"type": "join", "invite": secrets[1], "language": "ar"})).await;
    let welcome = next_of(&mut witness, "welcome").await;
    let w = welcome["participant"].as_str().unwrap().to_owned();
    let credential = welcome["credential"].as_str().unwrap().to_owned();
    send(&mut judge, json!({"type": "admit", "participant": w})).await;
    send(&mut judge, json!({"type": "start_session"})).await;
    while next_of(&mut judge, "state").await["phase"] != "in_session" {}

    send(&mut judge, json!({"type": "present_text", "person": w, "wording": "rights_notice"})).await;
    let notice = next_of(&mut witness, "text").await;
    assert_eq!((&notice["kind"], &notice["language"]), (&json!("rights_notice"), &json!("ar")), "{notice}");
    assert_eq!(
        notice["words"].as_str().unwrap().as_bytes(),
        include_bytes!("../../hearings/texts/ar/rights_notice.txt")
    );
    next_of(&mut judge, "text").await;

    // The witness's page goes away before the notice is given (a reload): the judge sees them gone.
    witness.close(None).await.unwrap();
    drop(witness);
    loop {
        let state = next_of(&mut judge, "state").await;
        let entry = state["participants"].as_array().unwrap().iter().find(|p| p["id"] == json!(w)).cloned();
        if entry.is_some_and(|entry| entry["connected"] == false) {
            break;
        }
    }
    // Back with their credential, in their page's language: the welcome, then the same words again.
    let mut witness = open().await;
    send(&mut witness, json!({"type": "rejoin", "credential": credential, "language": "ar"})).await;
    let first = next_of_any(&mut witness).await;
    assert_eq!(first["type"], "welcome", "the welcome comes first: {first}");
    assert_eq!(next_of(&mut witness, "text").await, notice, "the words presented are shown again");

    // From a second tab while the first is still open: the first steps aside, the second gets the words.
    let mut second = open().await;
    send(&mut second, json!({"type": "rejoin", "credential": credential, "language": "ar"})).await;
    next_of(&mut witness, "replaced").await;
    next_of(&mut second, "welcome").await;
    assert_eq!(next_of(&mut second, "text").await, notice);
    let mut witness = second;

    // Given, the notice is not shown again.
    send(&mut judge, json!({"type": "rights_notice", "person": w})).await;
    loop {
        let state = next_of(&mut judge, "state").await;
        if !state["checklist"]["rights_notices"].as_array().unwrap().is_empty() {
            break;
        }
    }
    // The oath is presented; the judge's own page reloads too, and gets the words it presented back.
    send(&mut judge, json!({"type": "present_text", "person": w, "wording": "oath"})).await;
    let oath = next_of(&mut witness, "text").await;
    assert_eq!((&oath["kind"], &oath["language"]), (&json!("oath"), &json!("ar")), "{oath}");
    next_of(&mut judge, "text").await;
    drop(judge);
    let mut judge = open().await;
    send(&mut judge, json!({"type": "rejoin", "credential": judge_credential, "language": "it"})).await;
    next_of(&mut judge, "welcome").await;
    assert_eq!(next_of(&mut judge, "text").await, oath, "the judge sees again what awaits the witness");

    let mut reload = open().await;
    send(&mut reload, json!({"type": "rejoin", "credential": credential, "language": "ar"})).await;
    next_of(&mut reload, "welcome").await;
    let texts: Vec<Value> = until_pong(&mut reload).await.into_iter().filter(|m| m["type"] == "text").collect();
    assert_eq!(texts, [oath], "only the oath awaits its step: {texts:?}");
    drop(witness);
    let mut witness = reload;

    // Sworn: nothing awaits, and a page that comes back is shown nothing.
    send(&mut judge, json!({"type": "oath", "witness": w, "form": "oath"})).await;
    loop {
        let state = next_of(&mut judge, "state").await;
        if !state["checklist"]["oaths"].as_array().unwrap().is_empty() {
            break;
        }
    }
    witness.close(None).await.unwrap();
    drop(witness);
    let mut witness = open().await;
    send(&mut witness, json!({"type": "rejoin", "credential": credential, "language": "ar"})).await;
    next_of(&mut witness, "welcome").await;
    let after = until_pong(&mut witness).await;
    assert!(after.iter().all(|m| m["type"] != "text"), "nothing is shown once sworn: {after:?}");
    assert!(after.iter().all(|m| m["type"] != "refused" && m["type"] != "error"), "{after:?}");
    send(&mut judge, json!({"type": "end"})).await;
}

#[test]
fn a_malformed_texts_directory_stops_the_gateway_at_start_up_naming_the_file() {
    let data = tempfile::tempdir().unwrap();
    let texts = tempfile::tempdir().unwrap();
    custom_texts(texts.path());
    std::fs::write(texts.path().join("fr/oath.txt"), b"Je jure \x00 de dire la verite.\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_custodia"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("CUSTODIA_DATA_DIR", data.path())
        .env("CUSTODIA_TEXTS_DIR", texts.path())
        .output()
        .unwrap();
    assert!(!output.status.success(), "the gateway started with a malformed text");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("fr/oath.txt") && stderr.contains("U+0000"), "{stderr}");
    assert!(!data.path().join("keys").exists(), "nothing is made before the configuration is checked");
}
