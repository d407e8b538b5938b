//! The human-readable certificate inside every bundle, written for a court: what this is, its SHA-256, who held
//! it when, and how to check it without trusting anyone.

use std::fmt::Write as _;

use custodia_core::{CustodyEvent, CustodyRecord, Manifest, Openings, Sha256};
use custodia_ledger::{LogVerifier, SignedCheckpoint};

use crate::layout::{self, BundleSource};

/// A code of the closed vocabulary (an access kind, an action, a refusal code) as the record spells it.
fn code(value: &impl serde::Serialize) -> String {
    let json = custodia_core::to_canonical_vec(value).unwrap_or_default();
    String::from_utf8_lossy(&json).trim_matches('"').to_owned()
}

/// A record in words, with its committed fields opened (the bundle is for those entitled to read them). The codes
/// are the record's own words, so that a verifier (the browser's too) can say the same from the record.
fn describe(event: &CustodyEvent, openings: &Openings) -> String {
    let open = |field: &str| openings.text(field).unwrap_or("(not opened)").to_owned();
    match event {
        CustodyEvent::ArtefactRegistered { .. } => "taken into custody, manifest signed".to_owned(),
        CustodyEvent::ArtefactAccessed { access, .. } => format!("{} from {}", code(access), open("site")),
        CustodyEvent::ArtefactExported { format, .. } => format!("exported as {}", code(format)),
        CustodyEvent::ArtefactTransferred { recipient, .. } => {
            format!("custody transferred to {recipient} ({})", open("jurisdiction"))
        }
        CustodyEvent::DerivativeMade { source, .. } => format!("derived from {source} by {}", open("operation")),
        CustodyEvent::HearingEvent { kind, .. } => format!("hearing event: {kind}"),
        CustodyEvent::PolicyChanged { .. } => format!("use restrictions: {}", open("change")),
        CustodyEvent::WiderUseRequested { .. } => "wider use requested".to_owned(),
        CustodyEvent::OutcomeReported { .. } => format!("outcome reported: {}", open("outcome")),
        CustodyEvent::AccessRefused { code: refusal, .. } => format!("REFUSED {}: {}", open("action"), code(refusal)),
        CustodyEvent::MembershipChanged { member, change, .. } => {
            format!("membership of {member} {}, role {}", code(change), openings.text("role").unwrap_or("none"))
        }
        CustodyEvent::CaseExported { artefacts, hearing: None, .. } => {
            format!("case exported ({artefacts} artefact bundles)")
        }
        CustodyEvent::CaseExported { artefacts, hearing: Some(_), .. } => {
            format!("hearing {} exported ({artefacts} artefact bundles)", open("hearing"))
        }
        CustodyEvent::TransferEvidence { rung, .. } => format!("transfer evidence: {rung}"),
        CustodyEvent::ReceivedFrom { .. } => format!("received from partner gateway {}", open("provider")),
        _ => "other custody event".to_owned(),
    }
}

/// What an artefact bundle's certificate is made from: all of it is in the bundle, so a verifier makes the
/// certificate again from what it checked and compares.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CertificateFacts<'a> {
    pub artefact: &'a str,
    pub payload_sha256: Sha256,
    pub payload_size: u64,
    pub manifest: &'a [u8],
    /// Each record's ledger index, entry and openings, in ledger order.
    pub records: &'a [(u64, &'a [u8], &'a [u8])],
    pub checkpoint: &'a [u8],
    /// The gateway's key in C2SP verifier-key form.
    pub vkey: &'a str,
    /// The bag's timestamp entry and its inclusion proof, when it carries one.
    pub timestamp: Option<(&'a [u8], &'a [u8])>,
    /// Of an artefact received from a partner gateway: the keys of the provider's chain and of each chain nested in
    /// it ([`provider_keys`]), the provider's first.
    pub provider_keys: &'a [String],
}

/// The keys (C2SP verifier keys, trimmed) of a provider's chain and of each chain nested in it, outermost first:
/// the text of every file among `paths_and_bytes` (relative to the provider's bag) at `data/keys/gateway.vkey`
/// below any number of `data/provenance/`.
pub(crate) fn provider_keys<'a>(files: impl Iterator<Item = (&'a str, &'a [u8])>) -> Vec<String> {
    let mut found: Vec<(usize, String)> = files
        .filter_map(|(path, bytes)| {
            let mut rest = path;
            let mut depth = 0;
            while let Some(inner) = rest.strip_prefix(layout::PROVENANCE_DIR) {
                rest = inner;
                depth += 1;
            }
            (rest == layout::VKEY).then(|| (depth, String::from_utf8_lossy(bytes).trim().to_owned()))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, key)| key).collect()
}

/// The certificate's text. It is not evidence: it says in words what the bundle's checked files say, and both
/// verifiers make it again from them and report a certificate that says anything else.
pub fn certificate(source: &BundleSource, verifier: &LogVerifier) -> String {
    let records: Vec<(u64, &[u8], &[u8])> =
        source.records.iter().map(|r| (r.index, r.entry.as_slice(), r.openings.as_slice())).collect();
    certificate_of(
        &CertificateFacts {
            artefact: source.artefact.as_str(),
            payload_sha256: source.payload_sha256,
            payload_size: source.payload_size,
            manifest: &source.manifest,
            records: &records,
            checkpoint: &source.checkpoint,
            vkey: &source.vkey,
            timestamp: source.timestamp.as_ref().map(|stamp| (stamp.entry.as_slice(), stamp.proof.as_slice())),
            provider_keys: &source.provider_chain.as_ref().map_or_else(Vec::new, |chain| {
                provider_keys(chain.files.iter().map(|(path, bytes)| (path.as_str(), bytes.as_slice())))
            }),
        },
        verifier,
    )
}

pub(crate) fn certificate_of(source: &CertificateFacts<'_>, verifier: &LogVerifier) -> String {
    let manifest: Option<Manifest> = custodia_core::from_canonical_slice(source.manifest).ok();
    let checkpoint = SignedCheckpoint::open(source.checkpoint, std::slice::from_ref(verifier)).ok();
    let payload = format!("{}{}", layout::PAYLOAD_DIR, source.artefact);
    let mut out = String::new();
    let _ = writeln!(out, "CERTIFICATE OF AUTHENTICITY OF ELECTRONIC EVIDENCE");
    let _ = writeln!(out, "Generated by a Custodia gateway, in the manner of FRE 902(14) and ISO/IEC 27037.");
    let _ = writeln!(out, "This text is not evidence: it says in words what the checked files of this bundle say, and");
    let _ = writeln!(out, "the verifiers make it again from them and report it if it says anything else.\n");
    let _ = writeln!(out, "Artefact:      {}", source.artefact);
    if let Some(manifest) = &manifest {
        let _ = writeln!(out, "Case:          {}", manifest.case);
        let _ = writeln!(out, "Media type:    {}", manifest.media_type);
        if let Some(name) = &manifest.original_name {
            let _ = writeln!(out, "Original name: {name}");
        }
        let _ = writeln!(out, "Registered:    {} by {}", manifest.registered_at, manifest.registered_by);
    }
    let _ = writeln!(out, "SHA-256:       {}", source.payload_sha256);
    let _ = writeln!(out, "Size:          {} bytes", source.payload_size);
    let _ = writeln!(out, "Payload:       {payload}");
    let _ = writeln!(out, "Signing key:   {}", source.vkey);
    if let Some(provider) = source.provider_keys.first() {
        let _ = writeln!(
            out,
            "Received from: the partner gateway of key {provider}; its chain is in {}",
            layout::PROVENANCE_DIR
        );
    }
    if let Some(signed) = &checkpoint {
        let cp = &signed.checkpoint;
        let _ = writeln!(out, "Log:           {} at size {}, root {}", cp.origin, cp.size, cp.root);
    }
    // The entry and its index only, not what its token says: the certificate must read alike in both verifiers,
    // whatever a token holds, and the token is reported by the checks of trusted time.
    let stamped = source.timestamp.and_then(|(entry, proof)| {
        let size = custodia_timestamp::CheckpointTimestamp::from_entry(entry).ok()?.size;
        Some((size, custodia_ledger::TlogProof::parse(proof).ok()?.index))
    });
    if let Some((size, index)) = stamped {
        let _ = writeln!(
            out,
            "Trusted time:  the log at size {size} is stamped by a Time-Stamp Authority (RFC 3161): log entry #{index}, {}",
            layout::TIMESTAMP_ENTRY
        );
    }
    let _ = writeln!(
        out,
        "\nCUSTODY HISTORY ({} records, in ledger order; each has an inclusion proof)\n",
        source.records.len()
    );
    for &(index, entry, openings) in source.records {
        match CustodyRecord::from_entry(entry) {
            Ok(r) => {
                let openings = Openings::from_canonical(openings).unwrap_or_default();
                let _ = writeln!(
                    out,
                    "  #{:<8} {}  {}  by {}  purpose: {}",
                    index,
                    r.at,
                    describe(&r.event, &openings),
                    r.actor,
                    openings.text("purpose").unwrap_or("(not opened)")
                );
                if let Some(repeated) = r.repeated {
                    let _ = writeln!(
                        out,
                        "            (stands for {} identical attempts since {})",
                        repeated.count, repeated.since
                    );
                }
            }
            Err(_) => {
                let _ = writeln!(out, "  #{index:<8} unreadable record");
            }
        }
    }
    let _ = writeln!(out, "\nHOW TO CHECK THIS BUNDLE\n");
    let others: String = source.provider_keys.iter().map(|key| format!(" --trusted-key '{key}'")).collect();
    let _ = writeln!(
        out,
        "  With Custodia's verifier, offline:  custodia verify <bundle> --trusted-key '{}'{others}",
        source.vkey
    );
    if !source.provider_keys.is_empty() {
        let _ = writeln!(out, "  (this gateway's key, then its provider's: each from a source you trust)");
    }
    let _ = writeln!(out, "  By hand, with standard tools: see docs/verify-by-hand.md. In short:");
    let _ = writeln!(out, "    1. sha256sum {payload}  (must print the SHA-256 above)");
    let _ = writeln!(
        out,
        "    2. openssl pkeyutl -verify -pubin -inkey {} -rawin -in {} -sigfile {}",
        layout::PUBLIC_KEY_PEM,
        layout::MANIFEST,
        layout::MANIFEST_SIGNATURE
    );
    let _ = writeln!(
        out,
        "    3. each {}<index>.proof proves {}<index>.json is entry <index> of the signed log",
        layout::CUSTODY_DIR,
        layout::CUSTODY_DIR
    );
    let _ = writeln!(out, "       (c2sp.org/tlog-proof@v1; leaf hash = SHA-256(0x00 || record), RFC 6962).");
    let _ = writeln!(
        out,
        "    4. each {}<index>.opening.json opens the record's commitments (case, purpose, ...): see the document.",
        layout::CUSTODY_DIR
    );
    if !source.provider_keys.is_empty() {
        let _ = writeln!(
            out,
            "    5. {} is the provider's bag but its payload, which is this one: check it as a bag too, with the",
            layout::PROVENANCE_DIR
        );
        let _ =
            writeln!(out, "       provider's key (see the document, \"Evidence received from a partner gateway\").");
    }
    if stamped.is_some() {
        let _ = writeln!(
            out,
            "  Trusted time: custodia verify <bundle> --tsa-anchor <the authority's root PEM> [--trusted-list <TL.xml>],"
        );
        let _ = writeln!(
            out,
            "    or openssl ts -verify on the token of {}: see the document, step 3b.",
            layout::TIMESTAMP_ENTRY
        );
    }
    out
}

/// The certificate of a case bundle: which artefact bundles it holds, the record that lists them, and how to
/// check them.
pub fn case_certificate(origin: &str, listing: &layout::CaseListing, record_index: u64) -> String {
    let case = &listing.case;
    let mut out = String::new();
    let _ = writeln!(out, "CERTIFICATE OF AUTHENTICITY OF ELECTRONIC EVIDENCE: CASE BUNDLE");
    let _ =
        writeln!(out, "Generated by the Custodia gateway {origin}, in the manner of FRE 902(14) and ISO/IEC 27037.");
    let _ = writeln!(out, "This text is not evidence: it says in words what the checked files of this bundle say, and");
    let _ = writeln!(out, "the verifiers make it again from them and report it if it says anything else.\n");
    let _ = writeln!(out, "Case: {case}");
    let _ = writeln!(out, "Scope: {}", listing.scope.describe(case));
    let _ = writeln!(
        out,
        "This bag holds {} artefact bundles, each unpacked in its directory, complete and verifiable on its own:\n",
        listing.bundles.len()
    );
    for bundle in &listing.bundles {
        let _ = writeln!(
            out,
            "  {}  tag manifest SHA-256 {}  ({} bytes)",
            layout::inner_bundle_dir(&bundle.artefact),
            bundle.sha256,
            bundle.size
        );
    }
    let (entry, _) = layout::record_paths(record_index);
    let _ = writeln!(
        out,
        "\nThe export is custody record #{record_index} ({entry}), in the gateway's public log. It commits to the"
    );
    let _ = writeln!(
        out,
        "listing {} by its SHA-256 and count, so an artefact bundle left out, added or swapped is caught.",
        layout::CASE_LISTING
    );
    let _ = writeln!(out, "\nHOW TO CHECK: custodia verify <this file> --trusted-key <key> checks every bundle in it;");
    let _ = writeln!(
        out,
        "or unpack it and check the listing and each bundle's directory under {} as docs/verify-by-hand.md describes.",
        layout::BUNDLES_DIR
    );
    out
}
