//! The whole story in real browsers (web/tests/story.mjs, driven by playwright-core with Debian's chromium)
//! against the real `custodia` binary: a clerk schedules a hearing and invites people from the console, a witness
//! joins from a phone and waits in the lobby, the judge admits them from inside the room and they see each other,
//! the hearing is recorded and ended, the prosecutor verifies, plays and downloads a recording's court bundle on
//! the portal, and the verification page accepts it and rejects a tampered copy; then, in a hearing of its own, the
//! judge orders protective measures for a witness in the console, the witness's page (in Italian) says which are
//! active, and counsel's page reads only the pseudonym; an interpreter joins that hearing, the console will not open
//! a channel for her until the judge has sworn her in (and says why), the judge swears her in and opens a
//! simultaneous channel into Italian from the console, the witness chooses it on their page, where it is named in
//! Italian (and the gateway's state for them says so), and the judge closes it. At each of those steps axe-core
//! audits the page for WCAG 2.1 A/AA; a serious or critical violation fails the story.
//!
//! Needs chromium, node and npm (`scripts/setup-system.sh test`); playwright-core is pinned by
//! web/package-lock.json and installed with `npm ci` on first run. Without chromium the test fails: it never skips.
//! Screenshots of every page at every step are saved under target/web-screenshots/.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

mod support;

const CHROMIUM: &str = "/usr/bin/chromium";
const SETUP: &str = "run scripts/setup-system.sh test to install chromium, nodejs and npm";

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web")
}

/// Runs a command to completion with its output captured, or kills it and fails after `limit`.
fn run(command: &mut Command, limit: Duration) -> Output {
    support::run_for(command, limit, SETUP)
}

/// Installs the pinned playwright-core and axe-core (and the build tools beside them), unless they already are.
fn install_playwright() {
    support::npm_ci(&web_dir(), "node_modules/playwright-core/package.json", SETUP);
    support::npm_ci(&web_dir(), "node_modules/axe-core/package.json", SETUP);
}

#[test]
fn a_hearing_from_invitation_to_verified_bundle_in_real_browsers() {
    assert!(Path::new(CHROMIUM).exists(), "{CHROMIUM} is missing; {SETUP}");
    let node = run(Command::new("node").arg("--version"), Duration::from_secs(30));
    assert!(node.status.success(), "node does not run; {SETUP}");
    install_playwright();

    let data = tempfile::tempdir().unwrap();
    let (_server, port) = support::spawn_gateway(data.path(), &[]);
    let password = std::fs::read_to_string(data.path().join("keys/initial-admin-password")).unwrap();
    let screenshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/web-screenshots");
    let _ = std::fs::remove_dir_all(&screenshots);
    let work = data.path().join("story");

    let mut story = Command::new("node");
    story.current_dir(web_dir()).arg("tests/story.mjs").args([
        "--base",
        &format!("http://127.0.0.1:{port}"),
        "--admin-password",
        password.trim(),
        "--out",
        screenshots.to_str().unwrap(),
        "--work",
        work.to_str().unwrap(),
    ]);
    // A guard against a story that hangs, not a measure of speed: on a loaded 2-core machine the whole story (a
    // hearing with five browsers, recording, reconnections, verification) has taken over 420 s.
    let output = run(&mut story, Duration::from_secs(1200));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the story failed (screenshots in {}):\n{stdout}\n{}",
        screenshots.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("story: every step passed"), "{stdout}");
    // The story's log (with axe-core's notes on moderate and minor findings): shown with `--nocapture`.
    eprintln!("{stdout}");

    // What Chromium sent is in the bundle as recorded, without transcoding: ffprobe reads VP8 and Opus, and the
    // bundle verifies offline with the CLI too, under the gateway's key.
    let bundle = stdout.lines().find_map(|line| line.strip_prefix("bundle saved as ")).expect("the bundle's path");
    let skey = std::fs::read_to_string(data.path().join("keys/gateway.key")).unwrap();
    let key = custodia_ledger::LogSigner::from_skey(&skey).unwrap().verifier().to_string();
    let verified = run(
        Command::new(env!("CARGO_BIN_EXE_custodia")).args(["verify", bundle, "--trusted-key", &key]),
        Duration::from_secs(60),
    );
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stdout));
    let mut archive = tar::Archive::new(std::fs::File::open(bundle).unwrap());
    let mut payload = archive
        .entries()
        .unwrap()
        .map(Result::unwrap)
        .find(|entry| entry.path().unwrap().to_string_lossy().contains("data/payload/"))
        .expect("a payload in the bundle");
    let segment = data.path().join("segment.webm");
    std::io::copy(&mut payload, &mut std::fs::File::create(&segment).unwrap()).unwrap();
    let (codecs, duration) = support::probe_media(&segment);
    assert_eq!(codecs, ["opus", "vp8"], "Chromium's recording");
    assert!(duration > 1.0, "Chromium's recording lasts {duration} s");
}
