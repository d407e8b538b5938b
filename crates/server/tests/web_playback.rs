//! The portal player's watchdog (web/src/lib/playback.js, `keepPlaying`), run by node against a stand-in video
//! element that stalls on command (web/tests/playback.mjs): a stalled player with media ahead is sought where it
//! stands, then moved on 0.04, 0.1 and 0.2 s and no further, each skip counted and announced; a seek by someone
//! else, or two seconds of play, gives the tries back; a starved, paused or ended player is never moved; one stalled
//! in a sliver of media before another hole is moved to where media is held; a hole at a seam is jumped. Chromium stalls for real only now and then on a loaded machine, so the browser story
//! (`web_story.rs`) cannot make it happen; it says how often its players were moved on.
//!
//! Needs node (`scripts/setup-system.sh test`); it fails, never skips, without it.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

#[test]
fn the_player_moves_a_stalled_recording_on_without_skipping_silently() {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web");
    let output = support::run_for(
        Command::new("node").arg("tests/playback.mjs").current_dir(&web),
        Duration::from_secs(300),
        "run scripts/setup-system.sh test to install nodejs",
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    // Every case ran and passed, however many there are.
    assert!(stdout.contains("playback: all ") && !stdout.contains("FAILED"), "{stdout}");
}
