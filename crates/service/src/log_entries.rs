//! The log's own entries, about no case: the RFC 3161 timestamps of its checkpoints (the server's `timestamping`
//! asks the authorities, and [`Gateway::record_checkpoint_timestamp`] records each verified token) and the pins of
//! the partner registry ([`Gateway::pin_partner_registry`], at start-up).
//!
//! Each is sequenced as a custody record is ([`custodia_catalog::Catalog::sequence_log_entry`]): the transaction
//! that gives it its ledger index writes its row of the custody index, on its kind's shelf ([`LogShelf`]: under no
//! case), and keeps its openings, on PostgreSQL and SQLite alike. So none is ever in the log without that row,
//! whatever stops between the two, and no gateway has to find and mend a gap at start-up: court bundles look for
//! the timestamp that covers their records in that index
//! ([`custodia_catalog::Catalog::log_entries_newest_first`]), and the pin's check for the last pin, reading pins
//! alone (timestamps, a few KiB each and up to one a minute, are on a shelf of their own).

use custodia_catalog::{EntryOpenings, LogShelf, TurnKind};
use custodia_core::{Openings, Sha256};
use custodia_partners::Registry;
use custodia_partners::pinned::{PartnersPinned, REGISTRY_FIELD};
use custodia_timestamp::CheckpointTimestamp;

use crate::gateway::{Gateway, GatewayError, Result, fresh_salt};

/// The key of the turn taken around the partner registry's check and pin ([`TurnKind::PartnerRegistry`]).
const PARTNER_REGISTRY_TURN: &str = "the partner registry";

/// How many of the log's own entries are read at once, newest first, looking for pins of the partner registry.
const PAGE: i64 = 256;

/// A `partners_pinned` entry of the log with its openings, as an auditor reads it.
#[derive(Debug)]
pub struct PinnedRegistry {
    /// The entry's ledger index.
    pub index: u64,
    /// The entry, byte for byte.
    pub entry: Vec<u8>,
    /// The openings of its commitment: the canonical registry, under [`REGISTRY_FIELD`].
    pub openings: Openings,
}

impl Gateway {
    /// Records a verified RFC 3161 token over one of the log's checkpoints: its entry is sequenced with its row of
    /// the custody index, under no case, where court bundles look for it; then, as [`Gateway::record`] does, waited
    /// for until a published checkpoint covers it. Its ledger index.
    pub async fn record_checkpoint_timestamp(&self, stamp: &CheckpointTimestamp) -> Result<u64> {
        let entry = stamp.to_entry().map_err(|err| GatewayError::internal("a checkpoint's timestamp entry", err))?;
        self.record_log_entry(LogShelf::Timestamps, entry, None).await
    }

    /// Puts `registry` on the record if it differs from the one last pinned (compared in canonical form:
    /// [`Registry::canonical`]): a `partners_pinned` entry whose commitment opens to the registry's canonical form,
    /// kept with the entry in the transaction that sequences it ([`custodia_partners::pinned`]). A gateway that
    /// never had partners records nothing. The ledger index of the new entry, if one was made.
    ///
    /// The check and the pin are made under the partner registry's turn, and the check reads every pin sequenced,
    /// published or not: so of gateways starting at once with one changed registry, one pins it and the others find
    /// it pinned.
    pub async fn pin_partner_registry(&self, registry: &Registry) -> Result<Option<u64>> {
        let turn = self.turn(TurnKind::PartnerRegistry, PARTNER_REGISTRY_TURN).await?;
        let canonical = registry.canonical();
        let newest = self.pinned_registries_below(i64::MAX, 1).await?;
        let last = newest.first().and_then(|pinned| pinned.openings.text(REGISTRY_FIELD));
        if last == Some(canonical.as_str()) || (last.is_none() && registry.partners().is_empty()) {
            return Ok(None);
        }
        let mut openings = Openings::default();
        let commitment = openings.commit(REGISTRY_FIELD, fresh_salt(), canonical);
        let entry = PartnersPinned { at: self.now(), registry: commitment }
            .to_entry()
            .map_err(|err| GatewayError::internal("the partner registry's pin", err))?;
        let index = self.within(&turn).record_log_entry(LogShelf::PartnerRegistryPins, entry, Some(&openings)).await?;
        tracing::info!(
            index,
            partners = registry.partners().len(),
            "the partner registry changed; pinned on the record"
        );
        Ok(Some(index))
    }

    /// The newest `partners_pinned` entries that the published checkpoint covers, at most `most`, newest first,
    /// each with its openings (an entry without them is an error).
    pub async fn pinned_partner_registries(&self, most: usize) -> Result<Vec<PinnedRegistry>> {
        let published = i64::try_from(self.log().checkpoint().checkpoint.size).unwrap_or(i64::MAX);
        self.pinned_registries_below(published, most).await
    }

    /// The newest `partners_pinned` entries with ledger indexes below `to`, at most `most`, newest first, each with
    /// its openings.
    async fn pinned_registries_below(&self, mut to: i64, most: usize) -> Result<Vec<PinnedRegistry>> {
        let mut found = Vec::new();
        loop {
            let entries = self.catalog().log_entries_newest_first(LogShelf::PartnerRegistryPins, 0, to, PAGE).await?;
            for (index, entry) in &entries {
                if PartnersPinned::from_entry(entry).is_err() {
                    continue;
                }
                let openings = self.openings_of(entry).await?;
                if openings.text(REGISTRY_FIELD).is_none() {
                    let missing = format!("ledger entry {index}: the pinned registry's opening is missing");
                    return Err(GatewayError::internal_message(missing));
                }
                let index = u64::try_from(*index)
                    .map_err(|err| GatewayError::internal("a pinned registry's ledger index", err))?;
                found.push(PinnedRegistry { index, entry: entry.clone(), openings });
                if found.len() >= most {
                    return Ok(found);
                }
            }
            match entries.last() {
                Some((oldest, _)) if entries.len() as i64 == PAGE => to = *oldest,
                _ => return Ok(found),
            }
        }
    }

    /// Records one of the log's own entries, with the `openings` of its commitments if it has any: sequenced in the
    /// transaction that writes its row of the custody index (under no case) and keeps its openings, under the turns
    /// this gateway is within ([`Gateway::within`]); then waited for until a published checkpoint covers it
    /// ([`Gateway::record`]'s wait: durable once sequenced). Its ledger index.
    async fn record_log_entry(&self, shelf: LogShelf, entry: Vec<u8>, openings: Option<&Openings>) -> Result<u64> {
        let openings = openings
            .map(|openings| String::from_utf8(openings.to_canonical()))
            .transpose()
            .map_err(|err| GatewayError::internal("openings", err))?;
        let sha256 = Sha256::of(&entry).to_hex();
        let openings = openings.as_deref().map(|openings| EntryOpenings { record_sha256: &sha256, openings });
        let index = self.catalog().sequence_log_entry(shelf, entry, openings).await?.index;
        // Sequenced, the entry is durable and this process's append ([`custodia_ledger::Log::appended_here`]).
        self.log().count_appended_here(1);
        self.settle(index).await?;
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use custodia_catalog::Catalog;
    use custodia_ledger::{Log, LogOptions, LogSigner};
    use custodia_partners::Registry;
    use custodia_store::{ArtefactStore, CreateOnly};
    use custodia_tests::postgres::TempPostgres;
    use custodia_timestamp::CheckpointTimestamp;
    use object_store::memory::InMemory;
    use object_store::path::Path;

    use crate::clock::Clock;
    use crate::gateway::Gateway;

    /// A gateway on the catalog at `url`, its log and evidence in `store`, which other gateways share.
    async fn gateway(url: &str, store: Arc<InMemory>, signer: &LogSigner) -> Gateway {
        let catalog = Catalog::connect(url).await.unwrap();
        let log_signer = LogSigner::from_skey(signer.expose_secret()).unwrap();
        let coordination = catalog.log_coordination();
        let log = Log::open_coordinated(
            store.clone(),
            Path::from("log"),
            log_signer,
            LogOptions::default(),
            coordination,
            None,
        )
        .await
        .unwrap();
        let artefacts = ArtefactStore::new(store.clone(), Path::from("artefacts"), CreateOnly::Enforced);
        let manifests = Arc::new(object_store::prefix::PrefixStore::new(store, "artefacts"));
        Gateway::new(catalog, artefacts, manifests, log, signer, Clock::default(), 1 << 20)
    }

    fn registry(base_url: &str) -> Registry {
        let card = serde_json::json!({
            "name": "madrid", "jurisdiction": "ES", "base_url": base_url,
            "log_vkey": "madrid.test/log+00000000+AAAA", "witness_vkey": "madrid.test/log+00000000+AAAA",
            "request_key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
        });
        Registry::parse(&serde_json::json!({ "partners": [card] }).to_string()).unwrap()
    }

    /// Two gateways on one database start at once with a changed registry: one pins it, the other finds it pinned
    /// (under the partner registry's turn, reading what is sequenced, published or not). A timestamp recorded
    /// through the service is in the custody index under no case, and the index has no gap.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gateways_starting_at_once_pin_a_changed_registry_once() {
        let postgres = TempPostgres::start();
        let store = Arc::new(InMemory::new());
        let signer = LogSigner::generate("custodia.test/log").unwrap();
        let (a, b) =
            (gateway(&postgres.url, store.clone(), &signer).await, gateway(&postgres.url, store, &signer).await);
        let madrid = registry("https://madrid.test");
        for round in 0..3 {
            let pinned = futures::future::join(a.pin_partner_registry(&madrid), b.pin_partner_registry(&madrid)).await;
            let pinned = [pinned.0.unwrap(), pinned.1.unwrap()];
            let expected = usize::from(round == 0);
            assert_eq!(pinned.iter().flatten().count(), expected, "round {round}: {pinned:?}");
        }
        let moved = registry("https://madrid.example");
        let pinned = futures::future::join(b.pin_partner_registry(&moved), a.pin_partner_registry(&moved)).await;
        assert_eq!([pinned.0.unwrap(), pinned.1.unwrap()].iter().flatten().count(), 1, "a changed URL, once");

        let stamp = CheckpointTimestamp { size: 2, root: [7; 32], token: b"a token".to_vec() };
        let index = b.record_checkpoint_timestamp(&stamp).await.unwrap();
        assert_eq!(index, 2);
        let on_record = a.pinned_partner_registries(10).await.unwrap();
        assert_eq!(on_record.iter().map(|pinned| pinned.index).collect::<Vec<_>>(), vec![1, 0]);
        let stamps = a
            .catalog()
            .log_entries_newest_first(custodia_catalog::LogShelf::Timestamps, 0, i64::MAX, 10)
            .await
            .unwrap();
        assert_eq!(stamps, vec![(2, stamp.to_entry().unwrap())], "the timestamp alone, where bundles look for it");
        assert_eq!(a.catalog().custody_indexed_up_to().await.unwrap(), 3, "no gap");
        assert_eq!(a.log().checkpoint().checkpoint.size.max(b.log().checkpoint().checkpoint.size), 3);
    }
}
