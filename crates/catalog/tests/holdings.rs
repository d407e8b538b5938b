//! What direct uploads under way hold of their accounts' quotas (`custodia_catalog::holdings`): every handle on one
//! database counts every holding not expired, per account; a holding grows and is renewed only while it lasts
//! `HOLDING_MARGIN` more, so none counted out comes back; released or expired ones count no more, and expired ones
//! go at the account's next holding or a sweep. Times are chosen by the test (ms since the epoch).

use custodia_catalog::{Catalog, DirectHoldings, HOLDING_MARGIN};
use custodia_tests::postgres::TempPostgres;

const T0: i64 = 1_000_000_000;
const EXPIRY: i64 = 60_000;

fn holdings(uploads: i64, bytes: i64) -> DirectHoldings {
    DirectHoldings { uploads, bytes }
}

async fn holdings_are_counted_by_every_handle_until_released_or_expired(a: &Catalog, b: &Catalog) {
    let margin = HOLDING_MARGIN.as_millis() as i64;
    a.hold_direct("h1", "acct", 100, T0, T0 + EXPIRY).await.unwrap();
    b.hold_direct("h2", "acct", 0, T0, T0 + EXPIRY).await.unwrap();
    b.hold_direct("h3", "other", 7, T0, T0 + EXPIRY).await.unwrap();
    assert_eq!(b.direct_holdings_of("acct", T0).await.unwrap(), holdings(2, 100), "A's holding counts on B");
    assert_eq!(a.direct_holdings_of("other", T0).await.unwrap(), holdings(1, 7));
    assert_eq!(a.direct_holdings_of("nobody", T0).await.unwrap(), DirectHoldings::default());

    // Growth sets the bytes held in all and renews; a renewal keeps the bytes.
    assert!(b.grow_direct_holding("h2", 40, T0 + 1_000, T0 + 1_000 + EXPIRY).await.unwrap());
    assert!(a.grow_direct_holding("h2", 50, T0 + 2_000, T0 + 2_000 + EXPIRY).await.unwrap());
    assert!(a.renew_direct_holding("h1", T0 + 3_000, T0 + 3_000 + EXPIRY).await.unwrap());
    assert_eq!(a.direct_holdings_of("acct", T0 + 3_000).await.unwrap(), holdings(2, 150));
    // A renewal whose time was taken before a growth's, and that comes after it, never shortens the holding.
    assert!(b.renew_direct_holding("h2", T0 + 1_500, T0 + 1_500 + EXPIRY).await.unwrap());
    assert_eq!(a.direct_holdings_of("acct", T0 + 1_500 + EXPIRY).await.unwrap(), holdings(2, 150));

    // Released: counted no more, and nothing to renew.
    a.release_direct_holding("h1").await.unwrap();
    assert_eq!(b.direct_holdings_of("acct", T0 + 3_000).await.unwrap(), holdings(1, 50));
    assert!(!a.renew_direct_holding("h1", T0 + 3_000, T0 + 3_000 + EXPIRY).await.unwrap());
    a.release_direct_holding("h1").await.unwrap();

    // Within the margin of its expiry, a holding is neither renewed nor grown: another handle may count it out.
    let h2_until = T0 + 2_000 + EXPIRY;
    let late = h2_until - margin;
    assert!(!b.renew_direct_holding("h2", late, late + EXPIRY).await.unwrap());
    assert!(!b.grow_direct_holding("h2", 60, late, late + EXPIRY).await.unwrap());
    assert!(b.renew_direct_holding("h2", late - 1, late - 1 + EXPIRY).await.unwrap(), "just before the margin");
    let h2_until = late - 1 + EXPIRY;
    assert_eq!(a.direct_holdings_of("acct", h2_until - 1).await.unwrap(), holdings(1, 50));
    // Expired: counted nowhere, never renewed again.
    assert_eq!(a.direct_holdings_of("acct", h2_until).await.unwrap(), DirectHoldings::default());
    assert!(!a.renew_direct_holding("h2", h2_until, h2_until + EXPIRY).await.unwrap());

    // The account's next holding deletes its expired ones; a sweep deletes the others.
    a.hold_direct("h4", "acct", 5, h2_until, h2_until + EXPIRY).await.unwrap();
    assert_eq!(b.remove_expired_direct_holdings(h2_until).await.unwrap(), 1, "only the other account's is left");
    assert_eq!(b.direct_holdings_of("acct", h2_until).await.unwrap(), holdings(1, 5));
    assert_eq!(b.remove_expired_direct_holdings(i64::MAX).await.unwrap(), 1, "everything");
    assert_eq!(a.direct_holdings_of("acct", h2_until).await.unwrap(), DirectHoldings::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_handles_on_one_postgres_count_each_others_holdings() {
    let postgres = TempPostgres::start();
    let a = Catalog::connect(&postgres.url).await.unwrap();
    let b = Catalog::connect(&postgres.url).await.unwrap();
    holdings_are_counted_by_every_handle_until_released_or_expired(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_the_same_holdings() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("catalog.db").display());
    let catalog = Catalog::connect(&url).await.unwrap();
    holdings_are_counted_by_every_handle_until_released_or_expired(&catalog, &catalog.clone()).await;
}
