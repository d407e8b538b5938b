//! The schema, as an ordered list of migrations in SQL that both SQLite and PostgreSQL accept. The applied
//! version is kept in `schema_version`; each migration runs once, in a transaction.

use sqlx::{AnyPool, Row as _};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    is_admin BIGINT NOT NULL,
    jurisdiction TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE sessions (
    token_sha256 TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    expires_at BIGINT NOT NULL
);
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    scopes TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked BIGINT NOT NULL
);
CREATE TABLE cases (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE members (
    case_id TEXT NOT NULL REFERENCES cases(id),
    account_id TEXT NOT NULL REFERENCES accounts(id),
    role TEXT NOT NULL,
    PRIMARY KEY (case_id, account_id)
);
CREATE TABLE artefacts (
    id TEXT PRIMARY KEY,
    case_id TEXT NOT NULL REFERENCES cases(id),
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    media_type TEXT NOT NULL,
    manifest {BLOB} NOT NULL,
    manifest_signature TEXT NOT NULL,
    ledger_index BIGINT NOT NULL,
    provider_account TEXT NOT NULL REFERENCES accounts(id),
    policy TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX artefacts_by_case ON artefacts (case_id);
CREATE TABLE custody_index (
    ledger_index BIGINT PRIMARY KEY,
    case_id TEXT NOT NULL,
    artefact_id TEXT,
    record {BLOB} NOT NULL
);
CREATE INDEX custody_by_artefact ON custody_index (artefact_id, ledger_index);
CREATE TABLE widen_requests (
    id TEXT PRIMARY KEY,
    artefact_id TEXT NOT NULL REFERENCES artefacts(id),
    requested_by TEXT NOT NULL REFERENCES accounts(id),
    request TEXT NOT NULL,
    status TEXT NOT NULL,
    decided_by TEXT,
    decision_ledger_index BIGINT,
    created_at TEXT NOT NULL
);
CREATE TABLE outcomes (
    id TEXT PRIMARY KEY,
    artefact_id TEXT NOT NULL REFERENCES artefacts(id),
    filed_by TEXT NOT NULL REFERENCES accounts(id),
    outcome TEXT NOT NULL,
    note TEXT,
    ledger_index BIGINT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE uploads (
    id TEXT PRIMARY KEY,
    case_id TEXT NOT NULL REFERENCES cases(id),
    account_id TEXT NOT NULL REFERENCES accounts(id),
    length BIGINT NOT NULL,
    upload_offset BIGINT NOT NULL,
    metadata TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
"#,
    r#"
CREATE TABLE hearing_journal (
    hearing_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    entry TEXT NOT NULL,
    PRIMARY KEY (hearing_id, seq)
);
"#,
    // The public log names a case only by an opaque reference (a commitment to its id), and holds typed text only
    // as commitments. (`case_refs` held one salt per case; each record's case reference now has a salt of its own,
    // opened like any other commitment, so nothing writes it any more.) Their openings are here, access-controlled, keyed by the SHA-256
    // of the ledger entry; they are written before the entry is appended, so no published commitment lacks one.
    r#"
CREATE TABLE case_refs (
    case_id TEXT PRIMARY KEY REFERENCES cases(id),
    salt TEXT NOT NULL,
    case_ref TEXT NOT NULL UNIQUE
);
CREATE TABLE custody_openings (
    record_sha256 TEXT PRIMARY KEY,
    openings TEXT NOT NULL
);
"#,
    // An administrator can disable an account (a compromised one); it then signs nothing in and its sessions and
    // tokens are gone. NULL while the account is active.
    r#"
ALTER TABLE accounts ADD COLUMN disabled_at TEXT;
CREATE INDEX sessions_expiry ON sessions (expires_at);
"#,
    // The partner logs this gateway witnesses (c2sp.org/tlog-witness): each log's key, pinned when it was first
    // configured, and the latest checkpoint this witness cosigned of it (size 0 and no note until the first).
    // A log is never removed or re-keyed: that is how a split view would be hidden.
    r#"
CREATE TABLE witnessed_logs (
    origin TEXT PRIMARY KEY,
    vkey TEXT NOT NULL,
    size BIGINT NOT NULL,
    root TEXT NOT NULL,
    cosigned_note TEXT,
    updated_at TEXT NOT NULL
);
"#,
    // The witnesses of this gateway's own log (c2sp.org/tlog-witness, the log's side), by their key: the latest
    // checkpoint each cosigned (the log's signed note) with its cosignature line, and the alarm standing against it
    // (a refusal no retry changes), so that a restart neither forgets a cosignature nor hides an alarm.
    r#"
CREATE TABLE witness_cosignatures (
    witness_vkey TEXT PRIMARY KEY,
    size BIGINT,
    checkpoint TEXT,
    cosignature TEXT,
    alarm TEXT,
    updated_at TEXT NOT NULL
);
"#,
    // What an account holds against its storage quota is summed at every upload and every resumable creation: its
    // artefacts by provider (the index covers the sizes, so the sum reads the index alone) and its open resumable
    // uploads by account.
    r#"
CREATE INDEX artefacts_by_provider ON artefacts (provider_account, size);
CREATE INDEX uploads_by_account ON uploads (account_id, expires_at);
"#,
    // A hearing's output (its recording segments, minutes and identity-check documents) is the court's, not the
    // storage of the person who scheduled the hearing: it is counted here, by case and hearing, and taken off that
    // person's sum of provided bytes, so the court's own record never uses up anyone's quota.
    r#"
CREATE TABLE IF NOT EXISTS hearing_output (
    artefact_id TEXT PRIMARY KEY REFERENCES artefacts(id),
    case_id TEXT NOT NULL,
    hearing_id TEXT NOT NULL,
    provider_account TEXT NOT NULL,
    size BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS hearing_output_by_provider ON hearing_output (provider_account, size);
CREATE INDEX IF NOT EXISTS hearing_output_by_case ON hearing_output (case_id, size);
"#,
    // The log's own timestamps (RFC 3161 `checkpoint_timestamp` entries) are indexed under no case; a court bundle
    // looks for the newest that covers its records, by case and index rather than by reading the whole index.
    r#"
CREATE INDEX IF NOT EXISTS custody_by_case ON custody_index (case_id, ledger_index);
"#,
    // Transfers between partner gateways, both ways: where each stands (`stage`), how many bytes the receiving
    // side holds durably (`received`), and the offer that opened it (its policy, purpose and submission). The
    // evidences of each, by rung: as this gateway logged it (`own`, with its proof on this log) and as the partner
    // logged it (`partner`, with its proof on the partner's log), each a JSON document as it travels. What must
    // reach a partner later (an outcome report about what it provided) waits in `partner_outbox` until it answers.
    r#"
CREATE TABLE IF NOT EXISTS transfers (
    id TEXT PRIMARY KEY,
    direction TEXT NOT NULL,
    partner TEXT NOT NULL,
    artefact_id TEXT,
    case_id TEXT,
    account_id TEXT,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    chunk_size BIGINT NOT NULL,
    received BIGINT NOT NULL,
    stage TEXT NOT NULL,
    offer TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS transfers_by_stage ON transfers (direction, stage);
CREATE INDEX IF NOT EXISTS transfers_by_artefact ON transfers (artefact_id);
CREATE TABLE IF NOT EXISTS partner_outbox (
    id TEXT PRIMARY KEY,
    partner TEXT NOT NULL,
    path TEXT NOT NULL,
    body TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    sent_at TEXT
);
CREATE INDEX IF NOT EXISTS partner_outbox_unsent ON partner_outbox (sent_at, created_at);
CREATE TABLE IF NOT EXISTS transfer_evidences (
    transfer_id TEXT NOT NULL,
    rung BIGINT NOT NULL,
    event TEXT NOT NULL,
    own TEXT,
    partner TEXT,
    PRIMARY KEY (transfer_id, rung)
);
"#,
    // The custody log's coordination (custodia_ledger::coordinated): the sequence an entry gets its index from, in
    // the transaction that stores it in custody_index; and the integration row, locked while one gateway
    // integrates, holding the size and checkpoint last published. A catalog that predates this adopts its log.
    r#"
CREATE TABLE IF NOT EXISTS log_sequence (
    id BIGINT PRIMARY KEY,
    next BIGINT NOT NULL
);
INSERT INTO log_sequence (id, next) SELECT 1, COALESCE(MAX(ledger_index) + 1, 0) FROM custody_index WHERE true
    ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS log_integration (
    id BIGINT PRIMARY KEY,
    size BIGINT NOT NULL,
    checkpoint {BLOB}
);
INSERT INTO log_integration (id, size, checkpoint) VALUES (1, 0, NULL) ON CONFLICT (id) DO NOTHING
"#,
    // Resumable uploads stage their bytes in the object store, which several gateways may share, not in one
    // gateway's data directory: each PATCH's bytes are one chunk object, recorded here in the same transaction that
    // moves the upload's offset (a compare-and-set), so that an upload's bytes are exactly its chunks in offset
    // order. The PATCH that brings the last byte claims the upload's completion (the object of its last chunk, and
    // when the claim was last renewed), so that one gateway alone takes it into custody; a claim left unrenewed
    // (its gateway died) is released by the next request. Uploads that already held bytes kept them in a local file
    // this version no longer reads: they are dropped, so that their clients start again at once rather than fail at
    // their last byte.
    r#"
CREATE TABLE IF NOT EXISTS upload_chunks (
    upload_id TEXT NOT NULL REFERENCES uploads(id),
    chunk_offset BIGINT NOT NULL,
    size BIGINT NOT NULL,
    object TEXT NOT NULL,
    PRIMARY KEY (upload_id, chunk_offset)
);
CREATE TABLE IF NOT EXISTS upload_claims (
    upload_id TEXT PRIMARY KEY REFERENCES uploads(id),
    object TEXT NOT NULL,
    renewed_at BIGINT NOT NULL
);
DELETE FROM uploads WHERE upload_offset > 0 AND id NOT IN (SELECT upload_id FROM upload_chunks);
"#,
    // Which gateway holds each live hearing (its room, in that process's memory): a lease, renewed by its holder,
    // taken over (epoch + 1) by another gateway once expired. `expires_at` is in milliseconds since the Unix epoch,
    // by the holder's clock; `epoch` fences the holder's custody records and journal entries (`HearingFence`).
    r#"
CREATE TABLE IF NOT EXISTS hearing_leases (
    hearing_id TEXT PRIMARY KEY,
    node TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
)
"#,
    // Which gateway performs each duty it does for all (`custodia_catalog::Duty`): a lease its holder renews, taken
    // over by another gateway once expired. `expires_at` is in milliseconds since the Unix epoch.
    r#"
CREATE TABLE IF NOT EXISTS duty_leases (
    duty BIGINT PRIMARY KEY,
    node TEXT NOT NULL,
    expires_at BIGINT NOT NULL
)
"#,
    // Token buckets every gateway on the database shares (`custodia_catalog::budgets`): `bucket` is a keyed digest
    // (HMAC-SHA256 under `budget_salt`'s one salt) of a budget's name and key, never the key; `tokens` held at `at`
    // and full again by `full_at` at the latest, both in milliseconds since the Unix epoch. Rows past `full_at` are
    // deleted (a missing bucket is full).
    r#"
CREATE TABLE IF NOT EXISTS budget_buckets (
    bucket {BLOB} PRIMARY KEY,
    tokens DOUBLE PRECISION NOT NULL,
    at BIGINT NOT NULL,
    full_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS budget_buckets_by_full_at ON budget_buckets (full_at);
CREATE TABLE IF NOT EXISTS budget_salt (
    id BIGINT PRIMARY KEY,
    salt {BLOB} NOT NULL
)
"#,
    // Where the payload of a transfer arriving here is staged: the staging identity of the gateway whose data
    // directory holds its staging file (`staged_by`), and the bytes durable there (`received`), which count nowhere
    // else. A gateway that takes the transfers over stages the payload again on its own disk, from 0.
    r#"
CREATE TABLE IF NOT EXISTS transfer_staging (
    transfer_id TEXT PRIMARY KEY,
    staged_by TEXT NOT NULL,
    received BIGINT NOT NULL
)
"#,
    // The evidence that moves a transfer on (`Retrieval`, `NonRetrieval`) is kept in the transaction that
    // sequences its record and moves the transfer, before its inclusion proof exists: the signed evidence as it
    // travels (`signed`) and its record's index (`ledger_index`). It is pending while `own` is NULL, found by the
    // partial index, and completed with its proof once the record is integrated. Each column is added only if it
    // is missing (on SQLite too: see `add_column_if_missing`), so the migration can run again.
    r#"
ALTER TABLE transfer_evidences ADD COLUMN IF NOT EXISTS signed TEXT;
ALTER TABLE transfer_evidences ADD COLUMN IF NOT EXISTS ledger_index BIGINT;
CREATE INDEX IF NOT EXISTS transfer_evidences_pending ON transfer_evidences (ledger_index)
    WHERE own IS NULL AND signed IS NOT NULL
"#,
    // What each direct upload under way holds of its account's storage quota (`custodia_catalog::holdings`), so
    // that every gateway on the database counts what the others' uploads hold: the account, the bytes held, and
    // until when the holding lasts unrenewed (`expires_at`, in milliseconds since the Unix epoch on the database's
    // clock). Its gateway renews it while the upload runs and deletes it when the upload ends; one whose gateway
    // died expires, is counted no more, and is deleted later.
    r#"
CREATE TABLE IF NOT EXISTS direct_holdings (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS direct_holdings_by_account ON direct_holdings (account_id, expires_at);
CREATE INDEX IF NOT EXISTS direct_holdings_by_expiry ON direct_holdings (expires_at)
"#,
    // The pins of the partner registry get a shelf of the custody index of their own (`LogShelf`), apart from the
    // log's timestamps, which are many and large: the check for the last pin no longer reads every timestamp. The
    // pins indexed under no case before move there: a pin's entry is canonical JSON naming its kind, which no
    // timestamp entry (its token in base64) can hold. Run again, it finds none left to move.
    r#"
UPDATE custody_index SET case_id = '*partner-registry' WHERE case_id = '' AND {RECORD_NAMES_A_PIN}
"#,
];

/// The PostgreSQL advisory lock key migrations hold: "custodia" in ASCII, as a number no other lock chooses.
const MIGRATION_LOCK: i64 = 0x6375_7374_6f64_6961;

pub async fn migrate(pool: &AnyPool, dialect: Dialect) -> sqlx::Result<()> {
    let blob = match dialect {
        Dialect::Sqlite => "BLOB",
        Dialect::Postgres => "BYTEA",
    };
    // Whether a custody index row's record is a pin of the partner registry (its kind, as canonical JSON writes it).
    let names_a_pin = match dialect {
        Dialect::Sqlite => r#"instr(record, CAST('"kind":"partners_pinned"' AS BLOB)) > 0"#,
        Dialect::Postgres => r#"position(convert_to('"kind":"partners_pinned"', 'UTF8') in record) > 0"#,
    };
    let mut tx = pool.begin().await?;
    // Several gateways starting at once on one PostgreSQL database migrate one after another: each waits here for
    // the others' transactions, then finds their migrations applied. (An embedded SQLite catalog has one gateway.)
    if dialect == Dialect::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(MIGRATION_LOCK).execute(&mut *tx).await?;
    }
    sqlx::query("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)").execute(&mut *tx).await?;
    let applied: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_version")
        .fetch_one(&mut *tx)
        .await?
        .try_get("v")?;
    for (number, migration) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        let migration = migration.replace("{BLOB}", blob).replace("{RECORD_NAMES_A_PIN}", names_a_pin);
        for statement in migration.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            match (dialect, add_column_if_missing(statement)) {
                (Dialect::Sqlite, Some((table, column, without_clause))) => {
                    let present: i64 = sqlx::query("SELECT COUNT(*) AS n FROM pragma_table_info($1) WHERE name = $2")
                        .bind(table)
                        .bind(column)
                        .fetch_one(&mut *tx)
                        .await?
                        .try_get("n")?;
                    if present == 0 {
                        sqlx::query(&without_clause).execute(&mut *tx).await?;
                    }
                }
                _ => {
                    sqlx::query(statement).execute(&mut *tx).await?;
                }
            }
        }
        sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
            .bind(number as i64 + 1)
            .execute(&mut *tx)
            .await?;
        tracing::info!(version = number + 1, "catalog schema migrated");
    }
    tx.commit().await
}

/// `ALTER TABLE <table> ADD COLUMN IF NOT EXISTS <column> …` as its table, its column, and the statement without
/// `IF NOT EXISTS`: SQLite has no such clause (PostgreSQL has), so there the column's presence is asked first.
fn add_column_if_missing(statement: &str) -> Option<(&str, &str, String)> {
    let rest = statement.strip_prefix("ALTER TABLE ")?;
    let (table, rest) = rest.split_once(' ')?;
    let definition = rest.strip_prefix("ADD COLUMN IF NOT EXISTS ")?;
    let column = definition.split_whitespace().next()?;
    Some((table, column, format!("ALTER TABLE {table} ADD COLUMN {definition}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_column_added_if_missing_is_read_as_its_table_column_and_plain_statement() {
        let statement = "ALTER TABLE transfer_evidences ADD COLUMN IF NOT EXISTS ledger_index BIGINT";
        assert_eq!(
            add_column_if_missing(statement),
            Some((
                "transfer_evidences",
                "ledger_index",
                "ALTER TABLE transfer_evidences ADD COLUMN ledger_index BIGINT".into()
            ))
        );
        assert_eq!(add_column_if_missing("ALTER TABLE accounts ADD COLUMN disabled_at TEXT"), None);
        assert_eq!(add_column_if_missing("CREATE INDEX IF NOT EXISTS x ON y (z)"), None);
    }

    /// The migrations run again over a catalog that has them all (as a restore of `schema_version` from an older
    /// backup would have them) change nothing and fail nowhere on SQLite: the pending evidence columns', the
    /// direct uploads' holdings' and the pins' shelf, the last three.
    #[tokio::test]
    async fn the_pending_evidence_columns_and_the_holdings_can_be_added_again() {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("catalog.db").display());
        let pool = AnyPool::connect(&url).await.unwrap();
        migrate(&pool, Dialect::Sqlite).await.unwrap();
        sqlx::query("DELETE FROM schema_version WHERE version >= $1")
            .bind(MIGRATIONS.len() as i64 - 2)
            .execute(&pool)
            .await
            .unwrap();
        migrate(&pool, Dialect::Sqlite).await.unwrap();
        let versions: i64 =
            sqlx::query("SELECT MAX(version) AS v FROM schema_version").fetch_one(&pool).await.unwrap().get("v");
        assert_eq!(versions, MIGRATIONS.len() as i64);
        pool.close().await;
    }
}
