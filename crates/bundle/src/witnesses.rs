//! The witnesses' cosignatures on a bundle's checkpoint (c2sp.org/tlog-cosignature), judged by a witness policy
//! (c2sp.org/tlog-policy): the one the reader pinned, or else the bundle's own, which is reported as such.
//!
//! Each signature line is judged on its own ([`Policy::judge_lines`]): a witness's valid cosignature counts once;
//! a forged, duplicated or wrong-key line does not count and fails the check, since no gateway writes one. The
//! quorum must be met by a checkpoint that covers every record: the bundle's own checkpoint, or an older cosigned
//! one ([`layout::WITNESSED_CHECKPOINT`]) with the consistency proof from it to the bundle's checkpoint, in which
//! case records at or beyond its size are named as not yet witnessed. Under a pinned policy anything short of
//! that fails; under the bundle's own, it is said plainly and the verdict is qualified.

use custodia_ledger::{LogVerifier, SignedCheckpoint};
use custodia_witness::{LineVerdict, Policy};

use crate::layout;
use crate::printable::echoed;
use crate::verification::{Part, Verification, Witnessed};

/// The files witnessing reads from a bag.
pub(crate) struct WitnessFiles<'a> {
    pub policy: Option<&'a [u8]>,
    pub checkpoint: &'a [u8],
    pub older: Option<&'a [u8]>,
    pub consistency: Option<&'a [u8]>,
}

/// A cosignature's time, as the witness's clock had it, in RFC 3339.
fn when(timestamp: u64) -> String {
    i64::try_from(timestamp)
        .ok()
        .and_then(|seconds| jiff::Timestamp::from_second(seconds).ok())
        .map_or_else(|| format!("{timestamp} s after the epoch"), |time| time.to_string())
}

/// Checks the witnesses of a bag whose checkpoint is signed by `key`, whose records are `records` (ledger indexes),
/// under the reader's `pinned` policy or else the bag's own. A bag with neither a policy nor witnessing files is not
/// judged (format 1, or a gateway without witnesses), unless a policy was pinned.
pub(crate) fn check(
    files: &WitnessFiles<'_>,
    key: &LogVerifier,
    pinned: Option<&Policy>,
    records: &[u64],
    report: &mut Verification,
) {
    if pinned.is_none() && files.policy.is_none() && files.older.is_none() && files.consistency.is_none() {
        return;
    }
    let before = report.checks.iter().filter(|c| !c.passed).count();
    let own;
    let (policy, whose) = match (pinned, files.policy) {
        (Some(policy), _) => (policy, "the policy you pinned"),
        (None, Some(bytes)) => {
            match std::str::from_utf8(bytes)
                .map_err(|err| err.to_string())
                .and_then(|text| Policy::parse(text).map_err(|err| err.to_string()))
            {
                Ok(policy) => own = policy,
                Err(err) => {
                    report.fail(Part::Witnesses, format!("{}: {err}", layout::WITNESS_POLICY));
                    return;
                }
            }
            (&own, "the bundle's policy, not one you pinned")
        }
        (None, None) => {
            report.fail(
                Part::Witnesses,
                format!("the bundle has witnessing files but no witness policy ({})", layout::WITNESS_POLICY),
            );
            return;
        }
    };
    let pinned = pinned.is_some();
    if !policy.logs().iter().any(|log| log.to_string() == key.to_string()) {
        report.fail(Part::Witnesses, format!("{whose} is not a policy for this log: it does not name {key}"));
        report.witnesses = Some(Witnessed {
            pinned,
            witnessed: false,
            summary: format!("not witnessed: {whose} does not name this log's key"),
        });
        return;
    }
    let Ok(latest) = SignedCheckpoint::open(files.checkpoint, std::slice::from_ref(key)) else {
        // The checkpoint's own check says why.
        return;
    };
    // The cosigned checkpoint: the bag's own, or an older one consistent with it.
    let (note, covered) = match (files.older, files.consistency) {
        (None, None) => (files.checkpoint, latest.checkpoint.size),
        (Some(older), Some(proof)) => {
            let Ok(earlier) = SignedCheckpoint::open(older, std::slice::from_ref(key)) else {
                report.fail(
                    Part::Witnesses,
                    format!("{} is not a checkpoint signed by this log", layout::WITNESSED_CHECKPOINT),
                );
                return;
            };
            let (m, n) = (earlier.checkpoint.size, latest.checkpoint.size);
            let consistent =
                crate::consistency::proves(proof, (m, &earlier.checkpoint.root), (n, &latest.checkpoint.root));
            if !consistent {
                report.fail(
                    Part::Witnesses,
                    format!(
                        "{} does not prove that the cosigned checkpoint (size {m}) is a prefix of {} (size {n}): \
                         nothing is witnessed",
                        layout::WITNESS_CONSISTENCY,
                        layout::CHECKPOINT
                    ),
                );
                return;
            }
            report.pass(
                Part::Witnesses,
                format!("the cosigned checkpoint of size {m} is a prefix of the bundle's checkpoint of size {n}"),
            );
            (older, m)
        }
        _ => {
            report.fail(
                Part::Witnesses,
                format!(
                    "{} and {} come together, and the bundle has only one",
                    layout::WITNESSED_CHECKPOINT,
                    layout::WITNESS_CONSISTENCY
                ),
            );
            return;
        }
    };
    let now = u64::try_from(jiff::Timestamp::now().as_second()).unwrap_or(0);
    let judged = match policy.judge_lines(note, now) {
        Ok(judged) => judged,
        Err(err) => {
            report.fail(Part::Witnesses, format!("the cosigned checkpoint: {err}"));
            return;
        }
    };
    for line in &judged.lines {
        match line {
            LineVerdict::Log { .. } => {}
            LineVerdict::Counted { witness, cosignature } => report.pass(
                Part::Witnesses,
                format!(
                    "witness {} ({}) cosigned the checkpoint of size {covered} at {}",
                    echoed(witness),
                    echoed(&cosignature.name),
                    when(cosignature.timestamp)
                ),
            ),
            LineVerdict::FromTheFuture { witness, cosignature } => report.fail(
                Part::Witnesses,
                format!(
                    "witness {}'s cosignature is dated {}, more than {} minutes after this computer's clock: no \
                     honest witness's clock is that far ahead, so it is not counted",
                    echoed(witness),
                    when(cosignature.timestamp),
                    custodia_witness::MAX_CLOCK_AHEAD_SECONDS / 60
                ),
            ),
            LineVerdict::Forged { witness } => report.fail(
                Part::Witnesses,
                format!(
                    "a cosignature line under witness {}'s key does not verify over this checkpoint: forged or \
                     altered, not counted",
                    echoed(witness)
                ),
            ),
            LineVerdict::Duplicate { witness } => report.fail(
                Part::Witnesses,
                format!("witness {} cosigns twice: a duplicated line, counted once", echoed(witness)),
            ),
            LineVerdict::WrongKey { witness } => report.fail(
                Part::Witnesses,
                format!(
                    "a cosignature line carries witness {}'s name but another key than {whose} gives it: not \
                     counted",
                    echoed(witness)
                ),
            ),
            LineVerdict::Unknown { name } => report.pass(
                Part::Witnesses,
                format!("a cosignature by {}, whose key is not in {whose}: not counted", echoed(name)),
            ),
            LineVerdict::Malformed => report.fail(Part::Witnesses, "a signature line of the checkpoint is malformed"),
        }
    }
    let cosigners: Vec<String> = judged
        .counted()
        .map(|(witness, cosignature)| format!("{} at {}", echoed(witness), when(cosignature.timestamp)))
        .collect();
    let cosigned = if cosigners.is_empty() { "no witness".to_owned() } else { cosigners.join(", ") };
    let unwitnessed: Vec<String> = records.iter().filter(|&&index| index >= covered).map(ToString::to_string).collect();
    let clean = report.checks.iter().filter(|c| !c.passed).count() == before;
    let witnessed = clean && judged.satisfied && unwitnessed.is_empty();
    let summary = if !policy.asks_for_witnesses() {
        format!(
            "NOT witnessed: {whose} asks for no witness (quorum none), so nothing was witnessed; the gateway's \
             signature alone vouches for the log"
        )
    } else if witnessed {
        format!("witnessed under {whose}: its quorum is met by {cosigned}, on a checkpoint that covers every record")
    } else if !judged.satisfied {
        format!("NOT witnessed under {whose}: its quorum is not met (cosigned by {cosigned})")
    } else if !unwitnessed.is_empty() {
        format!(
            "partly witnessed under {whose}: its quorum ({cosigned}) cosigned the log up to size {covered}; records \
             {} are newer and NOT yet witnessed (the gateway's signature alone vouches for them)",
            unwitnessed.join(", ")
        )
    } else {
        format!("NOT witnessed under {whose}: a cosignature line is bad (see above)")
    };
    // A policy that asks for no witness witnesses nothing: said plainly, and not a failure of the pinned policy,
    // which asked for exactly that.
    let witnessed = witnessed && policy.asks_for_witnesses();
    if !policy.asks_for_witnesses() && clean {
        report.pass(Part::Witnesses, summary.clone());
    } else if !witnessed && clean {
        if pinned {
            report.fail(Part::Witnesses, summary.clone());
        } else {
            report.pass(Part::Witnesses, summary.clone());
        }
    } else if witnessed {
        report.pass(Part::Witnesses, summary.clone());
    }
    report.witnesses = Some(Witnessed { pinned, witnessed, summary });
}

#[cfg(test)]
mod tests {
    use custodia_ledger::merkle::{leaf_hash, node_hash};
    use custodia_ledger::{Checkpoint, LogSigner};
    use custodia_witness::CosignerKey;

    use super::*;
    use crate::verification::Verdict;

    /// A log of two entries, two witnesses, and a policy that needs both.
    struct World {
        log: LogSigner,
        w1: CosignerKey,
        w2: CosignerKey,
    }

    impl World {
        fn new() -> Self {
            Self {
                log: LogSigner::generate("example.test/log").unwrap(),
                w1: CosignerKey::generate("w1.example/witness").unwrap(),
                w2: CosignerKey::generate("w2.example/witness").unwrap(),
            }
        }

        fn policy(&self, quorum: &str) -> String {
            format!(
                "log {}\nwitness one {}\nwitness two {}\ngroup both all one two\nquorum {quorum}\n",
                self.log.verifier(),
                self.w1.verifier(),
                self.w2.verifier()
            )
        }

        /// The log's checkpoint at size 1 or 2, cosigned by `cosigners`.
        fn note(&self, size: u64, cosigners: &[&CosignerKey]) -> Vec<u8> {
            let root = match size {
                1 => leaf_hash(b"zero"),
                _ => node_hash(&leaf_hash(b"zero"), &leaf_hash(b"one")),
            };
            let checkpoint = self.log.sign(&Checkpoint::new("example.test/log", size, root)).unwrap();
            let mut note = checkpoint.note().to_vec();
            for (at, key) in cosigners.iter().enumerate() {
                let line = key.cosign(checkpoint.checkpoint.body().as_bytes(), 1_700_000_000 + at as u64).unwrap();
                note.extend_from_slice(line.as_bytes());
            }
            note
        }

        fn judge(&self, files: &WitnessFiles<'_>, pinned: Option<&Policy>, records: &[u64]) -> Verification {
            let mut report = Verification::default();
            check(files, &self.log.verifier(), pinned, records, &mut report);
            report
        }
    }

    fn files<'a>(policy: Option<&'a [u8]>, checkpoint: &'a [u8]) -> WitnessFiles<'a> {
        WitnessFiles { policy, checkpoint, older: None, consistency: None }
    }

    fn failures(report: &Verification) -> Vec<&str> {
        report.checks.iter().filter(|c| !c.passed).map(|c| c.detail.as_str()).collect()
    }

    #[test]
    fn a_bundle_without_witnessing_is_not_judged_unless_a_policy_is_pinned() {
        let world = World::new();
        let note = world.note(2, &[]);
        let report = world.judge(&files(None, &note), None, &[0, 1]);
        assert!(report.checks.is_empty() && report.witnesses.is_none());
        let pinned = Policy::parse(&world.policy("both")).unwrap();
        let report = world.judge(&files(None, &note), Some(&pinned), &[0, 1]);
        assert_eq!(report.verdict(), Verdict::Invalid);
        assert!(failures(&report)[0].contains("NOT witnessed under the policy you pinned"), "{report}");
    }

    #[test]
    fn the_quorum_is_judged_under_the_pinned_policy_or_else_the_bundles_own() {
        let world = World::new();
        let policy = world.policy("both");
        let note = world.note(2, &[&world.w1, &world.w2]);
        let own = world.judge(&files(Some(policy.as_bytes()), &note), None, &[0, 1]);
        assert_eq!(own.verdict(), Verdict::Valid, "{own}");
        let witnessed = own.witnesses.clone().unwrap();
        assert!(!witnessed.pinned && witnessed.witnessed);
        assert!(witnessed.summary.contains("the bundle's policy, not one you pinned"), "{}", witnessed.summary);
        assert!(format!("{own}").contains("not one you pinned (check again with --policy"), "{own}");
        let cosigned: Vec<&str> = own.checks.iter().map(|c| c.detail.as_str()).collect();
        assert!(
            cosigned.contains(
                &"witness one (w1.example/witness) cosigned the checkpoint of size 2 at 2023-11-14T22:13:20Z"
            ),
            "{cosigned:?}"
        );

        let pinned = Policy::parse(&policy).unwrap();
        let report = world.judge(&files(Some(policy.as_bytes()), &note), Some(&pinned), &[0, 1]);
        let witnessed = report.witnesses.clone().unwrap();
        assert!(witnessed.pinned && witnessed.witnessed, "{report}");
        assert!(!format!("{report}").contains("not one you pinned"), "{report}");

        // Only one of the two: not witnessed. Under the bundle's own policy that is said; under a pin it fails.
        let half = world.note(2, &[&world.w2]);
        let own = world.judge(&files(Some(policy.as_bytes()), &half), None, &[0, 1]);
        assert_eq!(own.verdict(), Verdict::Valid);
        assert!(own.witnesses.as_ref().unwrap().summary.starts_with("NOT witnessed under the bundle's policy"));
        let report = world.judge(&files(Some(policy.as_bytes()), &half), Some(&pinned), &[0, 1]);
        assert_eq!(report.failed_parts(), [Part::Witnesses], "{report}");
        // A pinned policy of "any" is met by one.
        let any =
            Policy::parse(&world.policy("one").replace("quorum one", "group some any one two\nquorum some")).unwrap();
        assert_eq!(world.judge(&files(None, &half), Some(&any), &[0, 1]).verdict(), Verdict::Valid);
        // A policy for another log proves nothing of this one.
        let stranger = World::new();
        let theirs = Policy::parse(&stranger.policy("both")).unwrap();
        let report = world.judge(&files(None, &note), Some(&theirs), &[0, 1]);
        assert!(failures(&report)[0].contains("is not a policy for this log"), "{report}");
        // A malformed policy in the bundle is named.
        let report = world.judge(&files(Some(b"witness"), &note), None, &[0, 1]);
        assert!(failures(&report)[0].starts_with("data/witness/policy.txt: policy line 1"), "{report}");
    }

    #[test]
    fn forged_duplicated_and_wrong_key_cosignatures_do_not_count_and_are_named() {
        let world = World::new();
        let pinned = Policy::parse(&world.policy("both")).unwrap();
        let note = String::from_utf8(world.note(2, &[&world.w1, &world.w2])).unwrap();
        let w2_line = note.lines().last().unwrap().to_owned();
        let (head, encoded) = w2_line.rsplit_once(' ').unwrap();
        let mut raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded).unwrap();
        raw[30] ^= 0x40;
        let forged = format!("{head} {}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &raw));
        let impostor = CosignerKey::generate("w2.example/witness").unwrap();
        let body = note.split_once("\n\n").unwrap().0.to_owned() + "\n";
        let wrong_key = impostor.cosign(body.as_bytes(), 1_700_000_009).unwrap();
        let w1_line = note.lines().nth(note.lines().count() - 2).unwrap().to_owned();
        for (edited, named) in [
            (note.replace(&w2_line, &forged), "witness two's key does not verify over this checkpoint: forged"),
            (note.replace(&w2_line, &w1_line), "witness one cosigns twice"),
            (note.replace(&format!("{w2_line}\n"), &wrong_key), "carries witness two's name but another key"),
        ] {
            let report = world.judge(&files(None, edited.as_bytes()), Some(&pinned), &[0, 1]);
            assert_eq!(report.failed_parts(), [Part::Witnesses], "{report}");
            assert!(failures(&report).iter().any(|f| f.contains(named)), "{named}: {report}");
            assert!(!report.witnesses.unwrap().witnessed);
        }
    }

    #[test]
    fn a_policy_that_asks_for_no_witness_is_said_to_witness_nothing() {
        let world = World::new();
        let policy = world.policy("none");
        let note = world.note(2, &[]);
        for pinned in [None, Some(Policy::parse(&policy).unwrap())] {
            let report = world.judge(&files(Some(policy.as_bytes()), &note), pinned.as_ref(), &[0, 1]);
            assert_eq!(report.verdict(), Verdict::Valid, "{report}");
            let witnessed = report.witnesses.clone().unwrap();
            assert!(!witnessed.witnessed, "{report}");
            assert!(witnessed.summary.starts_with("NOT witnessed: "), "{}", witnessed.summary);
            assert!(witnessed.summary.contains("asks for no witness (quorum none), so nothing was witnessed"));
            assert!(!witnessed.summary.contains("met by no witness"), "{}", witnessed.summary);
        }
    }

    #[test]
    fn a_cosignature_from_the_future_does_not_count_and_names_stay_printable() {
        let world = World::new();
        let policy = world.policy("both").replace(" one", " one\u{202e}eno");
        let pinned = Policy::parse(&policy).unwrap();
        let checkpoint = world
            .log
            .sign(&Checkpoint::new("example.test/log", 2, node_hash(&leaf_hash(b"zero"), &leaf_hash(b"one"))))
            .unwrap();
        let body = checkpoint.checkpoint.body();
        for timestamp in [32_503_680_000, 1 << 63, u64::MAX] {
            let mut note = checkpoint.note().to_vec();
            note.extend_from_slice(world.w1.cosign(body.as_bytes(), timestamp).unwrap().as_bytes());
            note.extend_from_slice(world.w2.cosign(body.as_bytes(), 1_700_000_000).unwrap().as_bytes());
            let report = world.judge(&files(None, &note), Some(&pinned), &[0, 1]);
            assert_eq!(report.failed_parts(), [Part::Witnesses], "{report}");
            let said = format!("{report}");
            assert!(said.contains("more than 10 minutes after this computer's clock"), "{said}");
            assert!(said.contains("witness one\\u{202e}eno's cosignature is dated"), "{said}");
            assert!(!said.contains('\u{202e}'), "{said}");
            assert!(!report.witnesses.unwrap().witnessed);
        }
    }

    #[test]
    fn an_older_cosigned_checkpoint_witnesses_only_the_records_it_covers() {
        let world = World::new();
        let policy = world.policy("both");
        let pinned = Policy::parse(&policy).unwrap();
        let (older, latest) = (world.note(1, &[&world.w1, &world.w2]), world.note(2, &[]));
        let judge = |proof: &str, pin: Option<&Policy>, records: &[u64]| {
            let files = WitnessFiles {
                policy: Some(policy.as_bytes()),
                checkpoint: &latest,
                older: Some(&older),
                consistency: Some(proof.as_bytes()),
            };
            world.judge(&files, pin, records)
        };
        let proof = format!("{}\n", leaf_hash(b"one").to_base64());
        let own = judge(&proof, None, &[0, 1]);
        assert_eq!(own.verdict(), Verdict::Valid, "{own}");
        let summary = &own.witnesses.as_ref().unwrap().summary;
        assert!(
            summary.contains("cosigned the log up to size 1; records 1 are newer and NOT yet witnessed"),
            "{summary}"
        );
        // Under a pin, a record not yet witnessed is not enough; records all below the cosigned size are.
        assert_eq!(judge(&proof, Some(&pinned), &[0, 1]).failed_parts(), [Part::Witnesses]);
        assert_eq!(judge(&proof, Some(&pinned), &[0]).verdict(), Verdict::Valid);
        // A proof that does not hold witnesses nothing; an older checkpoint without its proof is named.
        let wrong = format!("{}\n", leaf_hash(b"two").to_base64());
        let report = judge(&wrong, None, &[0]);
        assert!(failures(&report)[0].contains("does not prove that the cosigned checkpoint (size 1) is a prefix"));
        let alone = WitnessFiles {
            policy: Some(policy.as_bytes()),
            checkpoint: &latest,
            older: Some(&older),
            consistency: None,
        };
        assert!(failures(&world.judge(&alone, None, &[0]))[0].contains("come together"));
    }
}
