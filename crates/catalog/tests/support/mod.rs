//! What the catalog's tests of turns share.

use custodia_tests::postgres::TempPostgres;

/// Ends the backend that holds an advisory lock (the turn), as the server ends the connections of a gateway that
/// died, and waits until it has gone (up to 10 s): a backend signalled but not yet gone still holds its locks, and
/// the turn is rightly still held. (A catalog dropped while a turn is held keeps that connection: the turn was
/// leaked, as a frozen process would hold it.)
pub async fn terminate_the_holder(postgres: &TempPostgres) {
    let observer = sqlx::PgPool::connect(&postgres.url).await.unwrap();
    sqlx::query(
        "SELECT pg_terminate_backend(l.pid, 10000) FROM pg_locks l \
         WHERE l.locktype = 'advisory' AND l.granted AND l.pid <> pg_backend_pid()",
    )
    .execute(&observer)
    .await
    .unwrap();
}
