//! Case bundles against a real log: one record for the whole export, each artefact bundle ending where the listing
//! says, proved against the case export record's checkpoint. Built with the crate's own writers, as the gateway
//! builds them, and forged the way an expert who wants a record hidden would: a record left off the end of a
//! history, a bundle proved against another checkpoint (swapped for another export's), a bundle holding a record
//! from after the export, and a bundle taken out of its case bundle.

use std::sync::Arc;

use custodia_bundle::{
    BundleRecord, BundleSource, BundleWriter, CaseBundleWriter, CaseListing, CaseRecord, ExportScope, ListedBundle,
    Part, Verification, WrittenBundle, padding, verify,
};
use custodia_core::{
    AccessKind, ActorId, ArtefactId, CaseId, CustodyEvent, CustodyRecord, Label, Manifest, Opening, Openings, Salt,
    Sha256, SignedManifest,
};
use custodia_ledger::{Log, LogOptions, LogSigner, LogVerifier, SignedCheckpoint, TlogProof};

const ORIGIN: &str = "test.custodia.invalid/log";

fn salt(text: &str) -> Salt {
    Salt::from_bytes(*Sha256::of(text.as_bytes()).as_bytes())
}

/// A log, the case's artefacts and the records appended about them.
struct World {
    log: Log,
    signer: LogSigner,
    case: CaseId,
    actor: ActorId,
    /// Every record appended: index, entry, openings.
    entries: Vec<(u64, Vec<u8>, Vec<u8>)>,
}

impl World {
    async fn new() -> Self {
        let signer = LogSigner::generate(ORIGIN).unwrap();
        let log = Log::open(
            Arc::new(object_store::memory::InMemory::new()),
            object_store::path::Path::from("log"),
            LogSigner::from_skey(signer.expose_secret()).unwrap(),
            LogOptions::default(),
        )
        .await
        .unwrap();
        Self {
            log,
            signer,
            case: CaseId::new("case-7").unwrap(),
            actor: ActorId::new("acct-1").unwrap(),
            entries: Vec::new(),
        }
    }

    /// Appends a record about the case made by `event`, chained to `prior`; its index.
    async fn append(
        &mut self,
        purpose: &str,
        prior: Option<u64>,
        event: impl FnOnce(&mut Openings) -> CustodyEvent,
    ) -> u64 {
        let mut openings = Openings::default();
        let case = Opening { salt: salt(&format!("case {}", self.entries.len())), text: self.case.to_string() };
        openings.insert("case", case.clone());
        let purpose = openings.commit("purpose", salt(purpose), purpose);
        let event = event(&mut openings);
        let at = jiff::Timestamp::now();
        let record = CustodyRecord {
            prior,
            ..CustodyRecord::new(case.commitment("case"), self.actor.clone(), at, purpose, event)
        };
        let entry = record.to_entry().unwrap();
        let index = self.log.append(entry.clone()).await.unwrap();
        self.entries.push((index, entry, openings.to_canonical()));
        index
    }

    fn manifest(&self, artefact: &ArtefactId, payload: &[u8]) -> SignedManifest {
        Manifest::new(
            artefact.clone(),
            self.case.clone(),
            salt(artefact.as_str()),
            Sha256::of(payload),
            payload.len() as u64,
            Label::new("application/octet-stream").unwrap(),
            jiff::Timestamp::now(),
            self.actor.clone(),
        )
        .sign(self.signer.signing_key())
        .unwrap()
    }

    async fn register(&mut self, artefact: &ArtefactId, payload: &[u8]) -> (SignedManifest, u64) {
        let manifest = self.manifest(artefact, payload);
        let event = CustodyEvent::ArtefactRegistered {
            artefact: artefact.clone(),
            manifest_sha256: manifest.sha256(),
            manifest_signature: manifest.signature(),
        };
        let index = self.append("intake", None, |_| event).await;
        (manifest, index)
    }

    async fn access(&mut self, artefact: &ArtefactId, prior: u64) -> u64 {
        let artefact = artefact.clone();
        self.append("review", Some(prior), |openings| CustodyEvent::ArtefactAccessed {
            artefact,
            access: AccessKind::Download,
            site: openings.commit("site", salt("site"), "IT, web session"),
        })
        .await
    }

    /// The record at `index` with its proof against `checkpoint`.
    async fn bundled(&self, index: u64, checkpoint: &SignedCheckpoint) -> BundleRecord {
        let (_, entry, openings) = self.entries.iter().find(|(i, _, _)| *i == index).unwrap().clone();
        let path = self.log.storage().inclusion_proof(index, checkpoint.checkpoint.size).await.unwrap();
        let proof = TlogProof { extra: None, index, path, checkpoint_note: checkpoint.note().to_vec() };
        BundleRecord { index, entry, proof: proof.to_bytes(), openings }
    }

    async fn source(
        &self,
        artefact: &ArtefactId,
        manifest: &SignedManifest,
        payload: &[u8],
        records: &[u64],
        checkpoint: &SignedCheckpoint,
    ) -> BundleSource {
        let mut bundled = Vec::new();
        for index in records {
            bundled.push(self.bundled(*index, checkpoint).await);
        }
        BundleSource {
            artefact: artefact.clone(),
            payload_sha256: Sha256::of(payload),
            payload_size: payload.len() as u64,
            manifest: manifest.bytes().to_vec(),
            manifest_signature: manifest.signature(),
            records: bundled,
            checkpoint: checkpoint.note().to_vec(),
            vkey: self.signer.verifier().to_string(),
            bagged_at: "2026-12-03T10:00:00Z".into(),
        }
    }
}

/// The bytes of one artefact bundle.
fn bundle_bytes(source: &BundleSource, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    BundleWriter::new(source).unwrap().write_to(&mut &payload[..], &mut out).unwrap();
    out
}

/// A case bundle of `sources` (with their payloads) under `listing` and its record.
fn case_bundle(
    case: &CaseId,
    vkey: &str,
    listing: &CaseListing,
    record: &CaseRecord,
    sources: &[(BundleSource, Vec<u8>)],
) -> Vec<u8> {
    let writer = CaseBundleWriter::new(case, vkey, "2026-12-03T10:00:00Z").unwrap();
    let (mut out, mut written) = (Vec::new(), Vec::new());
    for (source, payload) in sources {
        let bundle = bundle_bytes(source, payload);
        let size = bundle.len() as u64;
        out.extend_from_slice(&writer.bundle_header(&source.artefact, size).unwrap());
        out.extend_from_slice(&bundle);
        out.extend_from_slice(&padding(size));
        written.push(WrittenBundle { artefact: source.artefact.clone(), sha256: Sha256::of(&bundle), size });
    }
    out.extend_from_slice(&writer.finish(listing, record, &written).unwrap());
    out
}

fn failures(report: &Verification) -> Vec<String> {
    report.checks.iter().filter(|check| !check.passed).map(|check| check.detail.clone()).collect()
}

#[tokio::test]
async fn a_case_bundle_holds_every_history_up_to_its_one_record_and_nothing_hidden_passes() {
    let mut world = World::new().await;
    let (a, b) = (ArtefactId::new("art-a").unwrap(), ArtefactId::new("art-b").unwrap());
    let (payload_a, payload_b) = (b"evidence a".repeat(100), b"evidence b".repeat(50));
    let (manifest_a, registered_a) = world.register(&a, &payload_a).await;
    let (manifest_b, registered_b) = world.register(&b, &payload_b).await;
    let accessed_a = world.access(&a, registered_a).await;
    let before_export = world.log.wait_for_size(accessed_a + 1).await.unwrap();

    // The export: one record, committing to the listing of both artefacts and where each history ends.
    let bundles = vec![
        ListedBundle { artefact: a.clone(), last_record: accessed_a },
        ListedBundle { artefact: b.clone(), last_record: registered_b },
    ];
    let listing = CaseListing::new(world.case.clone(), ExportScope::Case, [9; 32], bundles);
    let listing_sha256 = Sha256::of(&listing.to_bytes().unwrap());
    let exported = world
        .append("disclosure", None, |_| CustodyEvent::CaseExported { listing_sha256, artefacts: 2, hearing: None })
        .await;
    // A record about the first artefact after the export.
    let after = world.access(&a, accessed_a).await;
    let checkpoint = world.log.wait_for_size(after + 1).await.unwrap();
    let record =
        CaseRecord { record: world.bundled(exported, &checkpoint).await, checkpoint: checkpoint.note().to_vec() };
    let vkey = world.signer.verifier().to_string();
    let key: [LogVerifier; 1] = [world.signer.verifier()];
    let source_a = world.source(&a, &manifest_a, &payload_a, &[registered_a, accessed_a], &checkpoint).await;
    let source_b = world.source(&b, &manifest_b, &payload_b, &[registered_b], &checkpoint).await;
    let case_of = |a: &BundleSource| {
        case_bundle(
            &world.case,
            &vkey,
            &listing,
            &record,
            &[(a.clone(), payload_a.clone()), (source_b.clone(), payload_b.clone())],
        )
    };

    let whole = case_of(&source_a);
    let report = verify(whole.as_slice(), &key).unwrap();
    assert!(report.is_valid(), "{report}");
    assert_eq!(report.records, 4, "two registrations, an access and the case export: {report}");
    assert!(report.to_string().contains("each is here, with its whole history up to the export"), "{report}");

    // The access left off the end of the first artefact's history: its bundle is consistent, its chain unbroken.
    let cut_short = world.source(&a, &manifest_a, &payload_a, &[registered_a], &checkpoint).await;
    let report = verify(case_of(&cut_short).as_slice(), &key).unwrap();
    assert_eq!(report.failed_parts(), [Part::CaseContents], "{report}");
    assert_eq!(
        failures(&report),
        [format!(
            "artefact art-a: its history in data/bundles/art-a.tar stops at record {registered_a}, but the case export \
             record lists it up to record {accessed_a}: records were dropped"
        )]
    );

    // The same history proved against a checkpoint from before the export: another export's bundle.
    let earlier = world.source(&a, &manifest_a, &payload_a, &[registered_a, accessed_a], &before_export).await;
    let report = verify(case_of(&earlier).as_slice(), &key).unwrap();
    assert_eq!(report.failed_parts(), [Part::CaseContents], "{report}");
    assert!(failures(&report)[0].contains("is not proved against the checkpoint of case export record"), "{report}");

    // With the record from after the export: not this export's bundle either.
    let later = world.source(&a, &manifest_a, &payload_a, &[registered_a, accessed_a, after], &checkpoint).await;
    let report = verify(case_of(&later).as_slice(), &key).unwrap();
    assert_eq!(report.failed_parts(), [Part::CaseContents], "{report}");
    let said = failures(&report).join("\n");
    assert!(
        said.contains(&format!("holds record {after}, which is not before case export record {exported}")),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "ends at record {after}, but the case export record lists it up to record {accessed_a}"
        ))
    );

    // Taken out of its case bundle, an artefact bundle has no export record of its own and is not valid alone.
    let alone = verify(bundle_bytes(&source_a, &payload_a).as_slice(), &key).unwrap();
    assert_eq!(alone.failed_parts(), [Part::CustodyHistory], "{alone}");
    assert!(alone.to_string().contains("is checked only inside its case bundle"), "{alone}");

    // A later bundle of the artefact may hold the case export record that held it, outside its chain: valid.
    let with_export =
        world.source(&a, &manifest_a, &payload_a, &[registered_a, accessed_a, exported], &checkpoint).await;
    let report = verify(case_of(&with_export).as_slice(), &key).unwrap();
    assert!(report.failed_parts().contains(&Part::CaseContents), "the export's own record is not before it: {report}");
}
