//! Transfers to and from partner gateways, and their evidences.

use sqlx::Row as _;
use sqlx::any::AnyRow;

use crate::{Catalog, CatalogError, Result};

/// One transfer, sent (`direction` "out") or received ("in").
#[derive(Clone, PartialEq, Eq)]
pub struct TransferRow {
    pub id: String,
    pub direction: String,
    /// The partner gateway, by its registry name.
    pub partner: String,
    /// Sent: the artefact sent. Received: the artefact it became, once under custody.
    pub artefact_id: Option<String>,
    pub case_id: Option<String>,
    /// Sent: the member who sent it. Received: the partner's account here.
    pub account_id: Option<String>,
    pub size: i64,
    pub sha256: String,
    pub chunk_size: i64,
    /// The bytes the receiving gateway holds durably.
    pub received: i64,
    pub stage: String,
    /// The offer that opened it (JSON), once made: the purpose the member typed, the bundle's head.
    pub offer: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl std::fmt::Debug for TransferRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransferRow")
            .field("id", &self.id)
            .field("direction", &self.direction)
            .field("partner", &self.partner)
            .field("artefact_id", &self.artefact_id)
            .field("size", &self.size)
            .field("received", &self.received)
            .field("stage", &self.stage)
            .field("updated_at", &self.updated_at)
            .finish_non_exhaustive()
    }
}

/// Where the payload of a transfer arriving here is staged ([`Catalog::transfer_staging`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferStaging {
    /// The staging identity of the gateway whose disk holds it (opaque, random per data directory).
    pub staged_by: String,
    /// The bytes durable there.
    pub received: i64,
}

/// One evidence of a transfer: as this gateway logged it, and as the partner did, each a JSON document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferEvidenceRow {
    pub transfer_id: String,
    pub rung: i64,
    pub event: String,
    /// As this gateway logged it, with its inclusion proof (a `Logged`); `None` while pending.
    pub own: Option<String>,
    pub partner: Option<String>,
    /// The signed evidence alone, for one kept in the transaction that sequenced its record
    /// ([`crate::KeptEvidence`]).
    pub signed: Option<String>,
    /// The ledger index of that record.
    pub ledger_index: Option<i64>,
}

impl TransferEvidenceRow {
    /// Whether it was kept when its record was sequenced and still lacks its inclusion proof: it is neither shown
    /// nor sent as logged until [`Catalog::keep_transfer_evidence`] adds `own`.
    pub fn is_pending(&self) -> bool {
        self.own.is_none() && self.signed.is_some()
    }
}

/// A signed request that must reach a partner gateway, kept until it has.
#[derive(Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub id: String,
    pub partner: String,
    pub path: String,
    /// What it says (an outcome's note, a request's purposes: what people typed).
    pub body: String,
    pub attempts: i64,
    pub created_at: String,
}

impl std::fmt::Debug for OutboxRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxRow")
            .field("id", &self.id)
            .field("partner", &self.partner)
            .field("path", &self.path)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

fn transfer(row: &AnyRow) -> sqlx::Result<TransferRow> {
    Ok(TransferRow {
        id: row.try_get("id")?,
        direction: row.try_get("direction")?,
        partner: row.try_get("partner")?,
        artefact_id: row.try_get("artefact_id")?,
        case_id: row.try_get("case_id")?,
        account_id: row.try_get("account_id")?,
        size: row.try_get("size")?,
        sha256: row.try_get("sha256")?,
        chunk_size: row.try_get("chunk_size")?,
        received: row.try_get("received")?,
        stage: row.try_get("stage")?,
        offer: row.try_get("offer")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn evidence(row: &AnyRow) -> sqlx::Result<TransferEvidenceRow> {
    Ok(TransferEvidenceRow {
        transfer_id: row.try_get("transfer_id")?,
        rung: row.try_get("rung")?,
        event: row.try_get("event")?,
        own: row.try_get("own")?,
        partner: row.try_get("partner")?,
        signed: row.try_get("signed")?,
        ledger_index: row.try_get("ledger_index")?,
    })
}

impl Catalog {
    /// Records a new transfer; [`CatalogError::Conflict`] if one of that id exists.
    pub async fn insert_transfer(&self, row: &TransferRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO transfers (id, direction, partner, artefact_id, case_id, account_id, size, sha256, \
             chunk_size, received, stage, offer, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(&row.id)
        .bind(&row.direction)
        .bind(&row.partner)
        .bind(&row.artefact_id)
        .bind(&row.case_id)
        .bind(&row.account_id)
        .bind(row.size)
        .bind(&row.sha256)
        .bind(row.chunk_size)
        .bind(row.received)
        .bind(&row.stage)
        .bind(&row.offer)
        .bind(&row.created_at)
        .bind(&row.updated_at)
        .execute(&self.pool)
        .await
        .map_err(|err| CatalogError::from_insert(err, "a transfer with that id"))?;
        Ok(())
    }

    pub async fn transfer(&self, id: &str) -> Result<Option<TransferRow>> {
        let row = sqlx::query("SELECT * FROM transfers WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(transfer).transpose()?)
    }

    /// A transfer without its offer (which may hold up to 11 MiB of a provider's chain): for the steps that read
    /// where a transfer stands, chunk after chunk.
    pub async fn transfer_without_offer(&self, id: &str) -> Result<Option<TransferRow>> {
        let row = sqlx::query(
            "SELECT id, direction, partner, artefact_id, case_id, account_id, size, sha256, chunk_size, received, \
             stage, NULL AS offer, created_at, updated_at FROM transfers WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(transfer).transpose()?)
    }

    /// The transfers one way in one of `stages`, oldest first.
    pub async fn transfers_in_stage(&self, direction: &str, stage: &str) -> Result<Vec<TransferRow>> {
        let rows = sqlx::query("SELECT * FROM transfers WHERE direction = $1 AND stage = $2 ORDER BY created_at, id")
            .bind(direction)
            .bind(stage)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(transfer).collect::<sqlx::Result<_>>()?)
    }

    /// How many transfers one way are in `stage` with `who`: a partner's (received) or an account's (sent).
    pub async fn count_transfers(&self, direction: &str, stage: &str, who: &str) -> Result<i64> {
        let column = if direction == "in" { "partner" } else { "account_id" };
        let query =
            format!("SELECT COUNT(*) AS n FROM transfers WHERE direction = $1 AND stage = $2 AND {column} = $3");
        let row = sqlx::query(&query).bind(direction).bind(stage).bind(who).fetch_one(&self.pool).await?;
        Ok(row.try_get("n")?)
    }

    /// The bytes the transfers still arriving here have yet to receive: room their offers were promised.
    pub async fn bytes_still_arriving(&self) -> Result<i64> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(size - received), 0) AS BIGINT) AS n FROM transfers WHERE direction = 'in' AND stage = 'receiving'",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// The transfers of an artefact, sent or received, oldest first.
    pub async fn transfers_of_artefact(&self, artefact_id: &str) -> Result<Vec<TransferRow>> {
        let rows = sqlx::query("SELECT * FROM transfers WHERE artefact_id = $1 ORDER BY created_at, id")
            .bind(artefact_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(transfer).collect::<sqlx::Result<_>>()?)
    }

    /// The offer of the transfer that brought artefact `artefact_id` here, if one did: read with every export of an
    /// artefact, so that only a received artefact's offer (and chain) is read, and only its.
    pub async fn received_offer(&self, artefact_id: &str) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT offer FROM transfers WHERE artefact_id = $1 AND direction = 'in' ORDER BY created_at, id LIMIT 1",
        )
        .bind(artefact_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| row.try_get("offer")).transpose()?.flatten())
    }

    /// The transfers of a case, sent or received, oldest first.
    pub async fn transfers_of_case(&self, case_id: &str) -> Result<Vec<TransferRow>> {
        let rows = sqlx::query("SELECT * FROM transfers WHERE case_id = $1 ORDER BY created_at, id")
            .bind(case_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(transfer).collect::<sqlx::Result<_>>()?)
    }

    /// Moves a transfer on: its durable byte count and stage. False if it is not in stage `from`.
    pub async fn advance_transfer(&self, id: &str, from: &str, stage: &str, received: i64, at: &str) -> Result<bool> {
        let done =
            sqlx::query("UPDATE transfers SET stage = $1, received = $2, updated_at = $3 WHERE id = $4 AND stage = $5")
                .bind(stage)
                .bind(received)
                .bind(at)
                .bind(id)
                .bind(from)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Where the payload of arriving transfer `id` is staged: the staging identity of the gateway that holds it on
    /// its disk, and the bytes durable there. `None` before anything was staged (or for a transfer staged before
    /// stagings were noted).
    pub async fn transfer_staging(&self, id: &str) -> Result<Option<TransferStaging>> {
        let row = sqlx::query("SELECT staged_by, received FROM transfer_staging WHERE transfer_id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(TransferStaging { staged_by: row.try_get("staged_by")?, received: row.try_get("received")? }))
    }

    /// Stages arriving transfer `id` on the gateway of staging identity `here`, with `received` bytes durable there,
    /// if it is staged where `seen` says (`None`: nowhere yet) or here already: a compare-and-set, so that of two
    /// gateways taking it over at once one does. The transfer's own count follows. True if it is staged here now.
    pub async fn stage_transfer_here(&self, id: &str, here: &str, seen: Option<&str>, received: i64) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = match seen {
            None => {
                sqlx::query(
                    "INSERT INTO transfer_staging (transfer_id, staged_by, received) VALUES ($1, $2, $3) \
                     ON CONFLICT (transfer_id) DO NOTHING",
                )
                .bind(id)
                .bind(here)
                .bind(received)
                .execute(&mut *tx)
                .await?
            }
            Some(seen) => {
                sqlx::query(
                    "UPDATE transfer_staging SET staged_by = $1, received = $2 \
                     WHERE transfer_id = $3 AND (staged_by = $4 OR staged_by = $1)",
                )
                .bind(here)
                .bind(received)
                .bind(id)
                .bind(seen)
                .execute(&mut *tx)
                .await?
            }
        };
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query("UPDATE transfers SET received = $1 WHERE id = $2 AND stage = 'receiving'")
            .bind(received)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Counts `received` bytes of arriving transfer `id` as durable, if it is still staged on the gateway of staging
    /// identity `here` and still arriving; false if another gateway took it over (or it ended) meanwhile.
    pub async fn count_staged(&self, id: &str, here: &str, received: i64, at: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("UPDATE transfer_staging SET received = $1 WHERE transfer_id = $2 AND staged_by = $3")
            .bind(received)
            .bind(id)
            .bind(here)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        let done =
            sqlx::query("UPDATE transfers SET received = $1, updated_at = $2 WHERE id = $3 AND stage = 'receiving'")
                .bind(received)
                .bind(at)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Notes `artefact` as what arriving transfer `id` becomes, if it is still staged on the gateway of staging
    /// identity `here` (which verified the staged payload) and still arriving; false otherwise, and nothing noted.
    pub async fn note_received_artefact(&self, id: &str, here: &str, artefact: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE transfers SET artefact_id = $1 WHERE id = $2 AND stage = 'receiving' \
             AND EXISTS (SELECT 1 FROM transfer_staging WHERE transfer_id = $2 AND staged_by = $3)",
        )
        .bind(artefact)
        .bind(id)
        .bind(here)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Sets what a transfer is about once known: a received one's artefact and case once under custody, a sent
    /// one's offer once made.
    pub async fn settle_transfer(
        &self,
        id: &str,
        artefact_id: Option<&str>,
        case_id: Option<&str>,
        offer: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE transfers SET artefact_id = COALESCE($1, artefact_id), case_id = COALESCE($2, case_id), \
             offer = COALESCE($3, offer) WHERE id = $4",
        )
        .bind(artefact_id)
        .bind(case_id)
        .bind(offer)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Keeps an evidence of a transfer as this gateway logged it (`own`) or as the partner did (`partner`); what
    /// is already kept of it stays.
    pub async fn keep_transfer_evidence(
        &self,
        transfer_id: &str,
        rung: i64,
        event: &str,
        own: Option<&str>,
        partner: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO transfer_evidences (transfer_id, rung, event, own, partner) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (transfer_id, rung) DO UPDATE SET own = COALESCE(transfer_evidences.own, excluded.own), \
             partner = COALESCE(transfer_evidences.partner, excluded.partner)",
        )
        .bind(transfer_id)
        .bind(rung)
        .bind(event)
        .bind(own)
        .bind(partner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A transfer's evidences, by rung.
    pub async fn transfer_evidences(&self, transfer_id: &str) -> Result<Vec<TransferEvidenceRow>> {
        let rows = sqlx::query("SELECT * FROM transfer_evidences WHERE transfer_id = $1 ORDER BY rung")
            .bind(transfer_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(evidence).collect::<sqlx::Result<_>>()?)
    }

    /// The evidences kept pending ([`TransferEvidenceRow::is_pending`]), of every transfer, oldest record first,
    /// at most 100: what the duty of the transfers completes, once their records are integrated (the rest at its
    /// next sweep).
    pub async fn pending_transfer_evidences(&self) -> Result<Vec<TransferEvidenceRow>> {
        let rows = sqlx::query(
            "SELECT * FROM transfer_evidences WHERE own IS NULL AND signed IS NOT NULL ORDER BY ledger_index \
             LIMIT 100",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(evidence).collect::<sqlx::Result<_>>()?)
    }

    /// Keeps a request for `partner` until it is delivered ([`Self::outbox_tried`]).
    pub async fn outbox_put(&self, row: &OutboxRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO partner_outbox (id, partner, path, body, attempts, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&row.id)
        .bind(&row.partner)
        .bind(&row.path)
        .bind(&row.body)
        .bind(row.attempts)
        .bind(&row.created_at)
        .execute(&self.pool)
        .await
        .map_err(|err| CatalogError::from_insert(err, "a request with that id"))?;
        Ok(())
    }

    /// The requests not yet delivered, oldest first, at most `limit`.
    pub async fn outbox_unsent(&self, limit: i64) -> Result<Vec<OutboxRow>> {
        let rows = sqlx::query("SELECT * FROM partner_outbox WHERE sent_at IS NULL ORDER BY created_at, id LIMIT $1")
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(OutboxRow {
                    id: row.try_get("id")?,
                    partner: row.try_get("partner")?,
                    path: row.try_get("path")?,
                    body: row.try_get("body")?,
                    attempts: row.try_get("attempts")?,
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect::<sqlx::Result<_>>()
            .map_err(CatalogError::from)
    }

    /// Marks a request delivered (`sent_at` set) or counts one more attempt (`sent_at` none).
    pub async fn outbox_tried(&self, id: &str, sent_at: Option<&str>) -> Result<()> {
        sqlx::query("UPDATE partner_outbox SET attempts = attempts + 1, sent_at = $1 WHERE id = $2")
            .bind(sent_at)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
