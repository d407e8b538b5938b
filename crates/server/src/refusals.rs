//! Aggregating refusals, so that nobody can flood the public log by repeating a refused attempt.
//!
//! The first refusal of a kind (same case, actor, action, artefact and code; for a hearing, the same actor and
//! the same refused step) is recorded at once. Identical refusals within the next [`WINDOW`] are only counted;
//! when the window has closed, one record with `repeated: {count, since}` stands for all of them, written before the
//! gateway's next record of any kind (no background task holds the gateway, and so its log, open). A member who
//! tries a refused download 200 times in a minute adds two records, not 200. A count not yet written is lost if
//! the process stops; the first refusal of every window is always on the record.
//!
//! Varying what is tried (another artefact, another action) would make each attempt a refusal of its own, so each
//! account also has a budget of refusal records a minute ([`crate::budget::Quotas::refusal_records`]). Past it, a
//! refusal that would be recorded is diverted ([`Refusals::divert`]) into one flood window per (case, actor, code):
//! counted, answered 429, and recorded as one record with its count and the actions tried when the window closes.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use custodia_core::{Action, ActorId, ArtefactId, CaseId, HearingId, RefusalCode, Repeated, Sha256};
use jiff::{SignedDuration, Timestamp};

/// How long identical refusals are counted before their count is recorded.
pub const WINDOW: SignedDuration = SignedDuration::from_secs(60);

/// At most this many distinct refusals are counted at once; beyond it, every refusal is recorded (the flood
/// then costs the attacker one request per record, as before aggregation).
const MAX_TRACKED: usize = 10_000;

/// A refused attempt, by what makes two attempts identical.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// A case member's refused request to the evidence service.
    Access { case: CaseId, actor: ActorId, artefact: Option<ArtefactId>, action: Action, code: RefusalCode },
    /// A hearing step the rules refused; `detail_sha256` is the digest of the canonical refusal detail (the
    /// action and the rule), which the hearing's journal keeps.
    Step { case: CaseId, hearing: HearingId, actor: ActorId, detail_sha256: Sha256 },
    /// Refusals of one member in one case with one code, past the member's budget of refusal records: one record
    /// with their count and the actions tried. As a window's key, `actions` is empty.
    Flood { case: CaseId, actor: ActorId, code: RefusalCode, actions: BTreeSet<Action> },
}

#[derive(Debug, Clone)]
struct Window {
    opened: Timestamp,
    /// Refusals counted since the recorded one, and when the first of them came.
    count: u64,
    since: Option<Timestamp>,
    /// For a flood window: the actions tried.
    actions: BTreeSet<Action>,
}

/// The open windows. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Refusals(Arc<Mutex<HashMap<Refusal, Window>>>);

impl Refusals {
    /// Notes a refusal at `now`. Returns whether to record it now, and the count of an earlier window of the same
    /// refusal that has closed and must be recorded first.
    pub fn note(&self, refusal: &Refusal, now: Timestamp) -> (bool, Option<(Refusal, Repeated)>) {
        let mut windows = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(window) = windows.get_mut(refusal)
            && now < window.opened + WINDOW
        {
            window.count += 1;
            window.since.get_or_insert(now);
            return (false, None);
        }
        let closed = windows.remove(refusal).and_then(|window| repeated(window).map(|r| (refusal.clone(), r)));
        if windows.len() < MAX_TRACKED {
            windows.insert(refusal.clone(), Window { opened: now, count: 0, since: None, actions: BTreeSet::new() });
        }
        (true, closed)
    }

    /// Takes back a refusal that [`Refusals::note`] said to record now (its window opens with nothing recorded)
    /// and counts it into its flood window instead, which is recorded with its count when it closes.
    pub fn divert(&self, refusal: &Refusal, now: Timestamp) {
        let Refusal::Access { case, actor, action, code, .. } = refusal else { return };
        let mut windows = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if windows.get(refusal).is_some_and(|window| window.opened == now && window.count == 0) {
            windows.remove(refusal);
        }
        let key = Refusal::Flood { case: case.clone(), actor: actor.clone(), code: *code, actions: BTreeSet::new() };
        if !windows.contains_key(&key) && windows.len() >= MAX_TRACKED {
            return;
        }
        let window =
            windows.entry(key).or_insert(Window { opened: now, count: 0, since: None, actions: BTreeSet::new() });
        window.count += 1;
        window.since.get_or_insert(now);
        window.actions.insert(*action);
    }

    /// Takes every window that has closed by `now`, with the counts to record.
    pub fn take_due(&self, now: Timestamp) -> Vec<(Refusal, Repeated)> {
        let mut windows = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let due: Vec<Refusal> =
            windows.iter().filter(|(_, window)| now >= window.opened + WINDOW).map(|(r, _)| r.clone()).collect();
        due.into_iter()
            .filter_map(|refusal| {
                let window = windows.remove(&refusal)?;
                let refusal = match refusal {
                    Refusal::Flood { case, actor, code, .. } => {
                        Refusal::Flood { case, actor, code, actions: window.actions.clone() }
                    }
                    other => other,
                };
                repeated(window).map(|repeated| (refusal, repeated))
            })
            .collect()
    }
}

fn repeated(window: Window) -> Option<Repeated> {
    Some(Repeated { count: window.count, since: window.since? }).filter(|r| r.count > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal() -> Refusal {
        Refusal::Access {
            case: CaseId::new("case-1").unwrap(),
            actor: ActorId::new("acct-1").unwrap(),
            artefact: Some(ArtefactId::new("art-1").unwrap()),
            action: Action::DownloadArtefact,
            code: RefusalCode::PolicyTlp,
        }
    }

    #[test]
    fn identical_refusals_in_a_window_are_one_record_and_a_count() {
        let refusals = Refusals::default();
        let start: Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        assert_eq!(refusals.note(&refusal(), start), (true, None));
        for second in 1..200 {
            let (now, closed) = refusals.note(&refusal(), start + SignedDuration::from_millis(second * 100));
            assert!(!now && closed.is_none());
        }
        let Refusal::Access { case, actor, artefact, action, .. } = refusal() else { unreachable!() };
        let other = Refusal::Access { case, actor, artefact, action, code: RefusalCode::RoleForbids };
        assert!(refusals.note(&other, start).0, "another code is another refusal");
        assert!(refusals.take_due(start + SignedDuration::from_secs(59)).is_empty());
        let due = refusals.take_due(start + WINDOW);
        let (_, repeated) = due.iter().find(|(r, _)| *r == refusal()).unwrap();
        assert_eq!(repeated.count, 199);
        assert_eq!(repeated.since, start + SignedDuration::from_millis(100));
        assert_eq!(due.len(), 1, "a window with nothing counted writes nothing");
    }

    #[test]
    fn diverted_refusals_are_one_record_per_case_actor_and_code_with_every_action() {
        let refusals = Refusals::default();
        let start: Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        for n in 0..50 {
            let Refusal::Access { case, actor, code, .. } = refusal() else { unreachable!() };
            let action = if n % 2 == 0 { Action::DownloadArtefact } else { Action::ViewTimeline };
            let artefact = Some(ArtefactId::new(format!("art-{n}")).unwrap());
            let varied = Refusal::Access { case, actor, artefact, action, code };
            let now = start + SignedDuration::from_millis(n * 10);
            assert!(refusals.note(&varied, now).0, "each artefact is a refusal of its own");
            refusals.divert(&varied, now);
        }
        assert!(refusals.take_due(start + SignedDuration::from_secs(59)).is_empty());
        let due = refusals.take_due(start + WINDOW + SignedDuration::from_secs(1));
        assert_eq!(due.len(), 1, "{due:?}");
        let (Refusal::Flood { actions, code, .. }, repeated) = &due[0] else { panic!("{due:?}") };
        assert_eq!(repeated.count, 50);
        assert_eq!(*code, RefusalCode::PolicyTlp);
        assert_eq!(actions.iter().copied().collect::<Vec<_>>(), [Action::DownloadArtefact, Action::ViewTimeline]);
    }

    #[test]
    fn a_refusal_after_its_window_is_recorded_with_the_closed_count() {
        let refusals = Refusals::default();
        let start: Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        refusals.note(&refusal(), start);
        refusals.note(&refusal(), start + SignedDuration::from_secs(1));
        let (now, closed) = refusals.note(&refusal(), start + WINDOW + SignedDuration::from_secs(1));
        assert!(now);
        assert_eq!(closed.unwrap().1.count, 1);
    }
}
