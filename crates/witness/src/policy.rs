//! Which cosignatures make a checkpoint trustworthy: a policy in c2sp.org/tlog-policy form.
//!
//! ```text
//! # comments start with '#'
//! log <vkey> [url]
//! witness <name> <vkey> [url]
//! group <name> <k|any|all> <member>...
//! quorum <name|none>
//! ```
//!
//! Names are defined before they are used, and there is exactly one `quorum`. Sigsum writes keys as raw hex: a hex
//! log key is the log `sigsum.org/v1/tree/<hex SHA-256 of the key>`, and a hex witness key's cosigner name is the
//! policy's name for that witness. One key never serves two witnesses, and a witness key is never a log key.

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

use crate::cosignature::{Cosignature, CosignatureError, CosignerVerifier};
use custodia_ledger::{CheckpointError, LogVerifier, SignedCheckpoint};

/// Why a policy file was refused, with its line number (from 1).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    #[error("policy line {line}: {reason}")]
    Line { line: usize, reason: String },
    /// A log's key (`what`: "log") or a witness's ("witness") that does not parse.
    #[error("policy line {line}: bad {what} key: {source}")]
    BadKey { line: usize, what: &'static str, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("the policy has no `quorum` line")]
    NoQuorum,
    #[error("the policy names no log")]
    NoLog,
    #[error("the checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("a cosignature: {0}")]
    Cosignature(#[from] CosignatureError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Threshold {
    Count(usize),
    All,
}

#[derive(Debug, Clone)]
struct Group {
    threshold: Threshold,
    members: Vec<String>,
}

/// A parsed policy.
#[derive(Debug, Clone)]
pub struct Policy {
    logs: Vec<LogVerifier>,
    witnesses: BTreeMap<String, CosignerVerifier>,
    /// The URL prefix of each witness that has one (`<prefix>/add-checkpoint`, c2sp.org/tlog-witness).
    witness_urls: BTreeMap<String, String>,
    groups: BTreeMap<String, Group>,
    /// The groups' names in the order the policy defines them: each names only what comes before it, so the quorum
    /// is judged in one pass over this order, each group once (no recursion: a chain of thousands of groups costs
    /// no stack, and groups that share members cost no more than their members).
    group_order: Vec<String>,
    /// `None` for `quorum none`: the log's signature alone suffices.
    quorum: Option<String>,
}

/// What a policy says of one checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyVerdict {
    pub origin: String,
    pub size: u64,
    /// Every configured witness that cosigned it, by the policy's name for that witness, with when.
    pub cosigned_by: Vec<(String, Cosignature)>,
    /// Whether the quorum is met.
    pub satisfied: bool,
}

/// What a policy makes of one signature line of a checkpoint note ([`Policy::judge_lines`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineVerdict {
    /// The signature of one of the policy's logs (checked with the checkpoint, not here).
    Log { name: String },
    /// A valid cosignature by the policy's witness `witness` (the policy's name for it): it counts.
    Counted { witness: String, cosignature: Cosignature },
    /// A line with the name and key ID of the policy's witness `witness` that does not verify over this checkpoint
    /// (or has a zero timestamp): forged or altered. It does not count.
    Forged { witness: String },
    /// A valid cosignature by `witness` dated more than [`MAX_CLOCK_AHEAD_SECONDS`] after the verifier's clock: no
    /// honest witness's clock is that far ahead (the collector refuses such a cosignature too). It does not count.
    FromTheFuture { witness: String, cosignature: Cosignature },
    /// A second valid line by a witness already counted: it counts once.
    Duplicate { witness: String },
    /// A line with the key name of the policy's witness `witness` but another key ID: signed with a key the policy
    /// does not give that witness. It does not count.
    WrongKey { witness: String },
    /// A line by a key the policy does not name: it does not count.
    Unknown { name: String },
    /// Not a signature line (`— <name> <base64>` with at least a key ID).
    Malformed,
}

/// What a policy makes of every signature line of a checkpoint note, in the note's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinesVerdict {
    pub origin: String,
    pub size: u64,
    pub lines: Vec<LineVerdict>,
    /// Whether the counted cosignatures meet the quorum.
    pub satisfied: bool,
}

impl LinesVerdict {
    /// The witnesses counted, by the policy's name, with their cosignatures.
    pub fn counted(&self) -> impl Iterator<Item = (&str, &Cosignature)> {
        self.lines.iter().filter_map(|line| match line {
            LineVerdict::Counted { witness, cosignature } => Some((witness.as_str(), cosignature)),
            _ => None,
        })
    }
}

/// How far a cosignature's time may be ahead of the verifier's clock and still count: ten minutes of clock skew.
pub const MAX_CLOCK_AHEAD_SECONDS: u64 = 600;

fn hex_key(text: &str) -> Option<VerifyingKey> {
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut raw = [0u8; 32];
    for (i, byte) in raw.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    VerifyingKey::from_bytes(&raw).ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The key of the `log` line `line`, in vkey form or as Sigsum's raw hex, and its raw public key.
fn log_key(line: usize, key: &str) -> Result<(LogVerifier, VerifyingKey), PolicyError> {
    let parsed = match hex_key(key) {
        Some(raw) => {
            let origin = format!("sigsum.org/v1/tree/{}", hex(&Sha256::digest(raw.as_bytes())));
            signed_note::new_ed25519_verifier_key(&origin, &raw).parse::<LogVerifier>()
        }
        None => key.parse::<LogVerifier>(),
    }
    .and_then(|log| log.public_key().map(|raw| (log, raw)));
    parsed.map_err(|err| PolicyError::BadKey { line, what: "log", source: err.into() })
}

/// The logs a witness witnesses: a file of `log <vkey> [url]` lines (the `log` lines of a policy), with comments.
/// Two entries for one origin are refused: a log has one key.
pub fn parse_log_list(text: &str) -> Result<Vec<LogVerifier>, PolicyError> {
    let mut logs: Vec<LogVerifier> = Vec::new();
    for (number, raw_line) in text.lines().enumerate() {
        let fail = |reason: String| PolicyError::Line { line: number + 1, reason };
        let content = raw_line.split('#').next().unwrap_or_default().trim();
        match content.split_whitespace().collect::<Vec<_>>().as_slice() {
            [] => {}
            ["log", key, rest @ ..] if rest.len() <= 1 => {
                let (log, _) = log_key(number + 1, key)?;
                if logs.iter().any(|known| known.name() == log.name()) {
                    return Err(fail(format!("the log {} is listed twice", log.name())));
                }
                logs.push(log);
            }
            _ => return Err(fail("not a `log <vkey> [url]` line".to_owned())),
        }
    }
    Ok(logs)
}

impl Policy {
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let mut policy = Self {
            logs: Vec::new(),
            witnesses: BTreeMap::new(),
            witness_urls: BTreeMap::new(),
            groups: BTreeMap::new(),
            group_order: Vec::new(),
            quorum: None,
        };
        let mut quorum_seen = false;
        let mut keys_seen: BTreeSet<[u8; 32]> = BTreeSet::new();
        for (number, raw_line) in text.lines().enumerate() {
            let line = number + 1;
            let fail = |reason: &str| PolicyError::Line { line, reason: reason.to_owned() };
            let content = raw_line.split('#').next().unwrap_or_default().trim();
            let words: Vec<&str> = content.split_whitespace().collect();
            match words.as_slice() {
                [] => {}
                ["log", key, rest @ ..] if rest.len() <= 1 => {
                    let (log, raw) = log_key(line, key)?;
                    if !keys_seen.insert(raw.to_bytes()) {
                        return Err(fail("this key is already in the policy"));
                    }
                    policy.logs.push(log);
                }
                ["witness", name, key, rest @ ..] if rest.len() <= 1 => {
                    if policy.witnesses.contains_key(*name) || policy.groups.contains_key(*name) {
                        return Err(fail("this name is already defined"));
                    }
                    let verifier = match hex_key(key) {
                        Some(raw) => CosignerVerifier::new(name, raw),
                        None => key.parse::<CosignerVerifier>(),
                    }
                    .map_err(|err| PolicyError::BadKey {
                        line,
                        what: "witness",
                        source: err.into(),
                    })?;
                    if !keys_seen.insert(verifier.public_key().to_bytes()) {
                        return Err(fail("one key may serve only one witness, and never a log"));
                    }
                    policy.witnesses.insert((*name).to_owned(), verifier);
                    if let [url] = rest {
                        // Only an HTTP(S) URL is asked: anything else (file:, a bare path) is a mistake.
                        let host = url
                            .strip_prefix("https://")
                            .or_else(|| url.strip_prefix("http://"))
                            .filter(|rest| !rest.is_empty() && !rest.starts_with('/'));
                        if host.is_none() {
                            return Err(fail("a witness URL must be http:// or https:// with a host"));
                        }
                        policy.witness_urls.insert((*name).to_owned(), (*url).to_owned());
                    }
                }
                ["group", name, threshold, members @ ..] if !members.is_empty() => {
                    if policy.witnesses.contains_key(*name) || policy.groups.contains_key(*name) {
                        return Err(fail("this name is already defined"));
                    }
                    let distinct: BTreeSet<&&str> = members.iter().collect();
                    if distinct.len() != members.len() {
                        return Err(fail("a group lists a member twice"));
                    }
                    if let Some(undefined) =
                        members.iter().find(|m| !policy.witnesses.contains_key(**m) && !policy.groups.contains_key(**m))
                    {
                        return Err(fail(&format!("{undefined} is not defined above")));
                    }
                    let threshold = match *threshold {
                        "all" => Threshold::All,
                        "any" => Threshold::Count(1),
                        k => match crate::request::parse_decimal(k).and_then(|k| usize::try_from(k).ok()) {
                            Some(k) if (1..=members.len()).contains(&k) => Threshold::Count(k),
                            _ => return Err(fail("the threshold must be any, all, or 1 to the number of members")),
                        },
                    };
                    let members = members.iter().map(|m| (*m).to_owned()).collect();
                    policy.groups.insert((*name).to_owned(), Group { threshold, members });
                    policy.group_order.push((*name).to_owned());
                }
                ["quorum", name] => {
                    if quorum_seen {
                        return Err(fail("a second quorum line"));
                    }
                    quorum_seen = true;
                    if *name != "none" {
                        if !policy.witnesses.contains_key(*name) && !policy.groups.contains_key(*name) {
                            return Err(fail(&format!("{name} is not defined above")));
                        }
                        policy.quorum = Some((*name).to_owned());
                    }
                }
                _ => return Err(fail("not a log, witness, group or quorum line")),
            }
        }
        if !quorum_seen {
            return Err(PolicyError::NoQuorum);
        }
        if policy.logs.is_empty() {
            return Err(PolicyError::NoLog);
        }
        Ok(policy)
    }

    pub fn logs(&self) -> &[LogVerifier] {
        &self.logs
    }

    /// The configured witnesses, by the policy's name for each.
    pub fn witnesses(&self) -> impl Iterator<Item = (&str, &CosignerVerifier)> {
        self.witnesses.iter().map(|(name, verifier)| (name.as_str(), verifier))
    }

    /// The URL prefix the policy gives for the witness `name`, if any.
    pub fn witness_url(&self, name: &str) -> Option<&str> {
        self.witness_urls.get(name).map(String::as_str)
    }

    /// Whether cosignatures by the witnesses named in `cosigners` (the policy's names) meet the quorum.
    pub fn quorum_met<'a>(&self, cosigners: impl IntoIterator<Item = &'a str>) -> bool {
        let signed: BTreeSet<&str> = cosigners.into_iter().collect();
        let Some(quorum) = self.quorum.as_deref() else { return true };
        // Each group once, in the order defined: its members (witnesses, or groups before it) are judged already.
        let mut met: BTreeMap<&str, bool> = BTreeMap::new();
        for name in &self.group_order {
            let group = &self.groups[name];
            let count = group
                .members
                .iter()
                .filter(|member| met.get(member.as_str()).copied().unwrap_or_else(|| signed.contains(member.as_str())))
                .count();
            let satisfied = match group.threshold {
                Threshold::All => count == group.members.len(),
                Threshold::Count(k) => count >= k,
            };
            met.insert(name.as_str(), satisfied);
        }
        met.get(quorum).copied().unwrap_or_else(|| signed.contains(quorum))
    }

    /// Whether the policy asks for any witness at all (`quorum none` does not).
    pub fn asks_for_witnesses(&self) -> bool {
        self.quorum.is_some()
    }

    /// Checks `note` against the policy: a log's signature, then each witness's cosignature, then the quorum.
    pub fn evaluate(&self, note: &[u8]) -> Result<PolicyVerdict, PolicyError> {
        let checkpoint = SignedCheckpoint::open(note, &self.logs)?;
        let mut cosigned_by = Vec::new();
        for (name, verifier) in &self.witnesses {
            if let Some(cosignature) = verifier.cosignature_on(note)? {
                cosigned_by.push((name.clone(), cosignature));
            }
        }
        let satisfied = self.quorum_met(cosigned_by.iter().map(|(name, _)| name.as_str()));
        Ok(PolicyVerdict {
            origin: checkpoint.checkpoint.origin,
            size: checkpoint.checkpoint.size,
            cosigned_by,
            satisfied,
        })
    }

    /// Judges each signature line of `note` on its own, after the log's signature: which witness's cosignature
    /// counts (each at most once), and which line is forged, duplicated, signed with a key the policy does not give
    /// its witness, or by a key the policy does not name; then whether the counted ones meet the quorum. Unlike
    /// [`Self::evaluate`], a bad line is reported, not an error, so a verifier can say which line is bad and why.
    /// A line is matched to a witness by key name and key ID together (two witnesses may share a key name), and a
    /// cosignature dated more than [`MAX_CLOCK_AHEAD_SECONDS`] after `now` (seconds since 1970) does not count.
    pub fn judge_lines(&self, note: &[u8], now: u64) -> Result<LinesVerdict, PolicyError> {
        let checkpoint = SignedCheckpoint::open(note, &self.logs)?;
        let text = std::str::from_utf8(note).map_err(|_| CosignatureError::MalformedNote)?;
        let (body, signatures) = text.split_once("\n\n").ok_or(CosignatureError::MalformedNote)?;
        let mut lines = Vec::new();
        let mut counted: BTreeSet<String> = BTreeSet::new();
        for line in signatures.lines() {
            let parsed =
                line.strip_prefix("\u{2014} ").and_then(|rest| rest.split_once(' ')).and_then(|(name, b64)| {
                    let raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).ok()?;
                    Some((name, u32::from_be_bytes(raw.get(..4)?.try_into().ok()?)))
                });
            let Some((name, key_id)) = parsed else {
                lines.push(LineVerdict::Malformed);
                continue;
            };
            if self.logs.iter().any(|log| log.name() == name && log.key_id() == key_id) {
                lines.push(LineVerdict::Log { name: name.to_owned() });
                continue;
            }
            let named = || self.witnesses.iter().filter(|(_, verifier)| verifier.name() == name);
            let Some((witness, verifier)) = named().find(|(_, verifier)| verifier.key_id() == key_id) else {
                match named().next() {
                    Some((witness, _)) => lines.push(LineVerdict::WrongKey { witness: witness.clone() }),
                    None => lines.push(LineVerdict::Unknown { name: name.to_owned() }),
                }
                continue;
            };
            let witness = witness.clone();
            // The line alone under the checkpoint's body: exactly what the witness signed, nothing else.
            let alone = format!("{body}\n\n{line}\n");
            match verifier.cosignature_on(alone.as_bytes()) {
                Ok(Some(cosignature)) if cosignature.timestamp > now.saturating_add(MAX_CLOCK_AHEAD_SECONDS) => {
                    lines.push(LineVerdict::FromTheFuture { witness, cosignature });
                }
                Ok(Some(_)) if counted.contains(&witness) => lines.push(LineVerdict::Duplicate { witness }),
                Ok(Some(cosignature)) => {
                    counted.insert(witness.clone());
                    lines.push(LineVerdict::Counted { witness, cosignature });
                }
                Ok(None) | Err(_) => lines.push(LineVerdict::Forged { witness }),
            }
        }
        let satisfied = self.quorum_met(counted.iter().map(String::as_str));
        Ok(LinesVerdict { origin: checkpoint.checkpoint.origin, size: checkpoint.checkpoint.size, lines, satisfied })
    }
}

#[cfg(test)]
mod tests {
    use custodia_ledger::merkle::empty_root;
    use custodia_ledger::{Checkpoint, Hash, LogSigner};

    use super::*;
    use crate::cosignature::CosignerKey;

    struct World {
        log: LogSigner,
        witnesses: Vec<CosignerKey>,
    }

    impl World {
        fn new() -> Self {
            let log = LogSigner::generate("example.test/log").unwrap();
            let witnesses = ["w1", "w2", "w3"].iter().map(|name| CosignerKey::generate(name).unwrap()).collect();
            Self { log, witnesses }
        }

        fn policy(&self, quorum: &str) -> String {
            let mut text = format!("# the test log\nlog {}\n", self.log.verifier());
            for key in &self.witnesses {
                text.push_str(&format!("witness {} {} https://{}.example/\n", key.name(), key.verifier(), key.name()));
            }
            text.push_str(&format!("group two-of-three 2 w1 w2 w3\n{quorum}\n"));
            text
        }

        fn note(&self, cosigners: &[usize]) -> Vec<u8> {
            let checkpoint = self.log.sign(&Checkpoint::new("example.test/log", 0, empty_root())).unwrap();
            let mut note = checkpoint.note().to_vec();
            for &i in cosigners {
                note.extend_from_slice(
                    self.witnesses[i]
                        .cosign(checkpoint.checkpoint.body().as_bytes(), 100 + i as u64)
                        .unwrap()
                        .as_bytes(),
                );
            }
            note
        }
    }

    #[test]
    fn two_of_three_needs_two() {
        let world = World::new();
        let policy = Policy::parse(&world.policy("quorum two-of-three")).unwrap();
        let one = policy.evaluate(&world.note(&[1])).unwrap();
        assert!(!one.satisfied);
        assert_eq!(one.cosigned_by.len(), 1);
        let two = policy.evaluate(&world.note(&[0, 2])).unwrap();
        assert!(two.satisfied);
        assert_eq!(
            two.cosigned_by.iter().map(|(n, c)| (n.as_str(), c.timestamp)).collect::<Vec<_>>(),
            [("w1", 100), ("w3", 102)]
        );
        assert_eq!(policy.witness_url("w2"), Some("https://w2.example/"));
        assert!(policy.quorum_met(["w1", "w3"]) && !policy.quorum_met(["w2"]));
        let none = Policy::parse(&world.policy("quorum none")).unwrap();
        assert!(none.evaluate(&world.note(&[])).unwrap().satisfied);
    }

    #[test]
    fn a_forged_cosignature_fails_the_whole_check() {
        let world = World::new();
        let policy = Policy::parse(&world.policy("quorum two-of-three")).unwrap();
        let note = String::from_utf8(world.note(&[0, 1])).unwrap();
        let line = note.lines().last().unwrap();
        // The same key ID and time, one bit of the signature changed.
        let (head, encoded) = line.rsplit_once(' ').unwrap();
        let mut raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded).unwrap();
        raw[20] ^= 1;
        let forged_line = format!("{head} {}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, raw));
        let forged = note.replace(line, &forged_line);
        assert!(matches!(policy.evaluate(forged.as_bytes()), Err(PolicyError::Cosignature(_))));
    }

    #[test]
    fn each_line_is_judged_and_only_valid_distinct_cosignatures_count() {
        let world = World::new();
        let policy = Policy::parse(&world.policy("quorum two-of-three")).unwrap();
        let note = String::from_utf8(world.note(&[0, 1])).unwrap();
        let judged = policy.judge_lines(note.as_bytes(), NOW).unwrap();
        assert!(judged.satisfied, "{judged:?}");
        assert_eq!(judged.lines[0], LineVerdict::Log { name: "example.test/log".into() });
        assert_eq!(judged.counted().map(|(w, c)| (w, c.timestamp)).collect::<Vec<_>>(), [("w1", 100), ("w2", 101)]);

        let lines: Vec<&str> = note.lines().collect();
        let (w1, w2) = (lines[lines.len() - 2], lines[lines.len() - 1]);
        // w2's line repeated: counted once, and named; the quorum then needs another witness.
        let duplicated = format!("{}{w1}\n{w1}\n", note.strip_suffix(&format!("{w1}\n{w2}\n")).unwrap());
        let judged = policy.judge_lines(duplicated.as_bytes(), NOW).unwrap();
        assert!(judged.lines.contains(&LineVerdict::Duplicate { witness: "w1".into() }), "{judged:?}");
        assert!(!judged.satisfied, "one witness twice is not two witnesses");

        // One bit of w2's signature changed: forged, not counted.
        let (head, encoded) = w2.rsplit_once(' ').unwrap();
        let mut raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded).unwrap();
        raw[20] ^= 1;
        let forged_line = format!("{head} {}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, raw));
        let judged = policy.judge_lines(note.replace(w2, &forged_line).as_bytes(), NOW).unwrap();
        assert!(judged.lines.contains(&LineVerdict::Forged { witness: "w2".into() }), "{judged:?}");
        assert!(!judged.satisfied);

        // w2's name with another key: not w2's cosignature. A stranger's key: not counted either.
        let impostor = CosignerKey::generate("w2").unwrap();
        let stranger = CosignerKey::generate("w9").unwrap();
        let checkpoint = SignedCheckpoint::open(note.as_bytes(), policy.logs()).unwrap();
        let body = checkpoint.checkpoint.body();
        let mut other = world.note(&[0]);
        other.extend_from_slice(impostor.cosign(body.as_bytes(), 7).unwrap().as_bytes());
        other.extend_from_slice(stranger.cosign(body.as_bytes(), 8).unwrap().as_bytes());
        let judged = policy.judge_lines(&other, NOW).unwrap();
        assert_eq!(
            judged.lines[1..],
            [
                LineVerdict::Counted {
                    witness: "w1".into(),
                    cosignature: world.witnesses[0].verifier().cosignature_on(&world.note(&[0])).unwrap().unwrap()
                },
                LineVerdict::WrongKey { witness: "w2".into() },
                LineVerdict::Unknown { name: "w9".into() },
            ]
        );
        assert!(!judged.satisfied);

        // A cosignature over another checkpoint (a line moved from one note to another) is forged here.
        let later = world.log.sign(&Checkpoint::new("example.test/log", 1, Hash([9; 32]))).unwrap();
        let mut moved = later.note().to_vec();
        moved.extend_from_slice(format!("{w1}\n").as_bytes());
        let judged = policy.judge_lines(&moved, NOW).unwrap();
        assert_eq!(judged.lines[1], LineVerdict::Forged { witness: "w1".into() });
        // Not signed by the log: refused whole.
        assert!(
            policy.judge_lines(note.replace("example.test/log\n0", "example.test/log\n1").as_bytes(), NOW).is_err()
        );
    }

    /// The verifier's clock in these tests: the cosignatures are dated 100 to 102 seconds after 1970.
    const NOW: u64 = 1_000;

    /// `levels` levels of two groups each that both name both groups of the level below (the reviewer's policy
    /// whose judging doubled per level), or a chain of `levels` groups each naming the one before.
    fn deep_policy(world: &World, levels: usize, shared: bool) -> String {
        let (log, w1) = (world.log.verifier(), world.witnesses[0].verifier());
        let mut text = format!("log {log}\nwitness w1 {w1}\ngroup g0 any w1\ngroup h0 all w1\n");
        for k in 1..=levels {
            if shared {
                text.push_str(&format!("group g{k} all g{} h{}\ngroup h{k} any g{} h{}\n", k - 1, k - 1, k - 1, k - 1));
            } else {
                text.push_str(&format!("group g{k} any g{}\n", k - 1));
            }
        }
        text.push_str(&format!("quorum g{levels}\n"));
        text
    }

    #[test]
    fn deep_and_shared_groups_are_judged_each_once_without_recursion() {
        let world = World::new();
        // 60 levels of shared members: 2^60 visits if each group were judged per path to it.
        let shared = Policy::parse(&deep_policy(&world, 60, true)).unwrap();
        assert!(shared.quorum_met(["w1"]) && !shared.quorum_met(["w2"]));
        let judged = shared.judge_lines(&world.note(&[0]), NOW).unwrap();
        assert!(judged.satisfied, "{judged:?}");
        // A chain of 30,000 groups: as deep as the stack that the reviewer's policy overflowed.
        let chain = Policy::parse(&deep_policy(&world, 30_000, false)).unwrap();
        assert!(chain.quorum_met(["w1"]) && !chain.quorum_met([]));
    }

    #[test]
    fn two_witnesses_with_one_key_name_are_told_apart_by_key_id() {
        let world = World::new();
        let one = CosignerKey::generate("dup.example/witness").unwrap();
        let two = CosignerKey::generate("dup.example/witness").unwrap();
        let text = format!(
            "log {}\nwitness one {}\nwitness two {}\ngroup both all one two\nquorum both\n",
            world.log.verifier(),
            one.verifier(),
            two.verifier()
        );
        let policy = Policy::parse(&text).unwrap();
        let checkpoint = world.log.sign(&Checkpoint::new("example.test/log", 0, empty_root())).unwrap();
        let body = checkpoint.checkpoint.body();
        let mut note = String::from_utf8(checkpoint.note().to_vec()).unwrap();
        note.push_str(&one.cosign(body.as_bytes(), 100).unwrap());
        note.push_str(&two.cosign(body.as_bytes(), 101).unwrap());
        let judged = policy.judge_lines(note.as_bytes(), NOW).unwrap();
        assert_eq!(judged.counted().map(|(witness, _)| witness).collect::<Vec<_>>(), ["one", "two"]);
        assert!(judged.satisfied);
        // A third key under that name is neither's: another key than the policy gives them.
        let stranger = CosignerKey::generate("dup.example/witness").unwrap();
        note.push_str(&stranger.cosign(body.as_bytes(), 102).unwrap());
        let judged = policy.judge_lines(note.as_bytes(), NOW).unwrap();
        assert_eq!(judged.lines[3], LineVerdict::WrongKey { witness: "one".into() });
    }

    #[test]
    fn a_cosignature_dated_ahead_of_the_verifiers_clock_does_not_count() {
        let world = World::new();
        let policy = Policy::parse(&world.policy("quorum w1")).unwrap();
        let checkpoint = world.log.sign(&Checkpoint::new("example.test/log", 0, empty_root())).unwrap();
        let body = checkpoint.checkpoint.body();
        for (timestamp, counts) in [
            (NOW + MAX_CLOCK_AHEAD_SECONDS, true),
            (NOW + MAX_CLOCK_AHEAD_SECONDS + 1, false),
            (32_503_680_000, false),
            (1 << 63, false),
            (u64::MAX, false),
        ] {
            let mut note = checkpoint.note().to_vec();
            note.extend_from_slice(world.witnesses[0].cosign(body.as_bytes(), timestamp).unwrap().as_bytes());
            let judged = policy.judge_lines(&note, NOW).unwrap();
            assert_eq!(judged.satisfied, counts, "{timestamp}");
            if !counts {
                assert!(
                    matches!(&judged.lines[1], LineVerdict::FromTheFuture { witness, cosignature }
                        if witness == "w1" && cosignature.timestamp == timestamp),
                    "{timestamp}: {judged:?}"
                );
            }
        }
    }

    #[test]
    fn sigsum_hex_keys_are_read() {
        let witness = CosignerKey::generate("sigsum-witness").unwrap();
        let log = LogSigner::generate("unused").unwrap();
        let log_hex = hex(log.verifier().public_key().unwrap().as_bytes());
        let text = format!(
            "log {log_hex}\nwitness sigsum-witness {}\nquorum sigsum-witness\n",
            hex(witness.verifier().public_key().as_bytes())
        );
        let policy = Policy::parse(&text).unwrap();
        assert!(policy.logs()[0].name().starts_with("sigsum.org/v1/tree/"));
        assert_eq!(policy.witnesses().next().unwrap().1, &witness.verifier());
    }

    #[test]
    fn malformed_policies_are_refused_with_their_line() {
        let world = World::new();
        let w1 = world.witnesses[0].verifier();
        let log = world.log.verifier();
        for (text, line) in [
            (format!("log {log}\nquorum w1\n"), Some(2)),
            (format!("log {log}\nwitness w1 {w1}\nwitness w1 {w1}\nquorum w1\n"), Some(3)),
            (
                format!(
                    "log {log}\nwitness w1 {w1}\nwitness w9 {}\nquorum w1\n",
                    w1.to_string().replacen("w1", "w9", 1)
                ),
                Some(3),
            ),
            (format!("log {log}\nwitness w1 {w1}\ngroup g 2 w1\nquorum g\n"), Some(3)),
            (format!("log {log}\nwitness w1 {w1}\ngroup g any w1 w1\nquorum g\n"), Some(3)),
            (format!("log {log}\nwitness w1 {w1}\nquorum w1\nquorum none\n"), Some(4)),
            (format!("log {log}\nwitness w1 {log}\nquorum w1\n"), Some(2)),
            (format!("log {log}\nwitness w1 {w1}\n"), None),
            ("quorum none\n".to_owned(), None),
            (format!("log {log}\nwitnesses w1 {w1}\nquorum none\n"), Some(2)),
            (format!("log {log}\nwitness w1 {w1} file:///etc/passwd\nquorum w1\n"), Some(2)),
            (format!("log {log}\nwitness w1 {w1} ftp://w1.example/\nquorum w1\n"), Some(2)),
            (format!("log {log}\nwitness w1 {w1} https://\nquorum w1\n"), Some(2)),
            (format!("log {log}\nwitness w1 {w1} /witness\nquorum w1\n"), Some(2)),
        ] {
            match (Policy::parse(&text), line) {
                (Err(PolicyError::Line { line: got, .. } | PolicyError::BadKey { line: got, .. }), Some(want)) => {
                    assert_eq!(got, want, "{text}")
                }
                (Err(PolicyError::NoQuorum | PolicyError::NoLog), None) => {}
                (other, _) => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_log_list_is_read_and_a_second_key_for_one_log_refused() {
        let one = LogSigner::generate("example.test/one").unwrap().verifier();
        let two = LogSigner::generate("example.test/two").unwrap().verifier();
        let again = LogSigner::generate("example.test/one").unwrap().verifier();
        let logs = parse_log_list(&format!("# partners\nlog {one} https://one.example/log/\n\nlog {two}\n")).unwrap();
        assert_eq!(logs.iter().map(LogVerifier::name).collect::<Vec<_>>(), ["example.test/one", "example.test/two"]);
        assert!(matches!(parse_log_list(&format!("log {one}\nlog {again}\n")), Err(PolicyError::Line { line: 2, .. })));
        assert!(matches!(parse_log_list("witness w1 abc\n"), Err(PolicyError::Line { line: 1, .. })));
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(text in "(?s).{0,300}") {
            let _ = Policy::parse(&text);
            let _ = parse_log_list(&text);
        }
    }
}
