//! Aggregating refusals, so that nobody can flood the public log by repeating a refused attempt.
//!
//! The first refusal of a kind (same case, actor, action, artefact and code; for a hearing, the same actor and
//! the same refused action) is recorded at once. Identical refusals within the next [`WINDOW`] are only counted;
//! when the window has closed, one record with `repeated: {count, since}` stands for all of them, written before the
//! gateway's next record of any kind (no background task holds the gateway, and so its log, open). A member who
//! tries a refused download 200 times in a minute adds two records, not 200. A count not yet written is lost if
//! the process stops; the first refusal of every window is always on the record.
//!
//! A refused hearing step is known by what the one who tried cannot vary: the case, the hearing, who, and the
//! refused action. The rule and the step's own words (which may carry any number or id the sender chooses) are in
//! the first record's detail and the hearing's journal, never in the key, so varying them makes no new record.
//!
//! Varying what is tried (another artefact, another action) would make each attempt a refusal of its own, so each
//! account, and each hearing participant, also has a budget of refusal records a minute
//! ([`crate::budget::Quotas::refusal_records`]), taken by first refusals (a window's count takes nothing from it).
//! Past it, a refusal that would be recorded is diverted ([`Refusals::divert`]), and a count that would be
//! recorded is folded ([`Refusals::fold`]), into one flood window per (case, actor, code), or for a hearing per
//! (case, hearing, actor): counted, answered 429, and recorded as one record with its count and the actions tried
//! when the window closes.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use custodia_core::{Action, ActorId, ArtefactId, CaseId, HearingId, RefusalCode, Repeated};
use custodia_hearing::HearingAction;
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
    /// A hearing step the rules refused, by what the one who tried cannot vary: not the rule nor the step's words.
    Step { case: CaseId, hearing: HearingId, actor: ActorId, action: HearingAction },
    /// Refusals of one member in one case with one code, past the member's budget of refusal records: one record
    /// with their count and the actions tried. As a window's key, `actions` is empty.
    Flood { case: CaseId, actor: ActorId, code: RefusalCode, actions: BTreeSet<Action> },
    /// Refused steps of one actor in one hearing, past their budget of refusal records: one record with their
    /// count and the actions tried. As a window's key, `actions` is empty.
    StepFlood { case: CaseId, hearing: HearingId, actor: ActorId, actions: BTreeSet<HearingAction> },
}

#[derive(Debug, Clone)]
struct Window {
    opened: Timestamp,
    /// Refusals counted since the recorded one, and when the first of them came.
    count: u64,
    since: Option<Timestamp>,
    /// For a flood window: the actions tried.
    actions: BTreeSet<Action>,
    /// For a hearing's flood window: the steps tried.
    steps: BTreeSet<HearingAction>,
}

impl Window {
    fn opened(at: Timestamp) -> Self {
        Self { opened: at, count: 0, since: None, actions: BTreeSet::new(), steps: BTreeSet::new() }
    }
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
            windows.insert(refusal.clone(), Window::opened(now));
        }
        (true, closed)
    }

    /// Takes back a refusal that [`Refusals::note`] said to record now (its window opens with nothing recorded)
    /// and counts it into its flood window instead, which is recorded with its count when it closes.
    pub fn divert(&self, refusal: &Refusal, now: Timestamp) {
        let mut windows = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if windows.get(refusal).is_some_and(|window| window.opened == now && window.count == 0) {
            windows.remove(refusal);
        }
        flood(&mut windows, refusal, 1, now, now);
    }

    /// Counts a closed window's refusals, whose count its actor's budget has no room to record now, into their
    /// flood window. Returns `false` when they cannot be counted there (a flood window's own count, or too many
    /// windows open): then the count is to be recorded at once.
    pub fn fold(&self, refusal: &Refusal, repeated: Repeated, now: Timestamp) -> bool {
        let mut windows = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        flood(&mut windows, refusal, repeated.count, repeated.since, now)
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
                    Refusal::StepFlood { case, hearing, actor, .. } => {
                        Refusal::StepFlood { case, hearing, actor, actions: window.steps.clone() }
                    }
                    other => other,
                };
                repeated(window).map(|repeated| (refusal, repeated))
            })
            .collect()
    }
}

impl Refusal {
    /// The account or participant whose budget of refusal records this refusal's records are in; a flood
    /// window's own record is outside it (one a window, counting the rest).
    pub fn budgeted_actor(&self) -> Option<&ActorId> {
        match self {
            Self::Access { actor, .. } | Self::Step { actor, .. } => Some(actor),
            Self::Flood { .. } | Self::StepFlood { .. } => None,
        }
    }

    /// The flood window this refusal is counted into past its actor's budget.
    fn flood_key(&self) -> Option<Self> {
        match self {
            Self::Access { case, actor, code, .. } => {
                Some(Self::Flood { case: case.clone(), actor: actor.clone(), code: *code, actions: BTreeSet::new() })
            }
            Self::Step { case, hearing, actor, .. } => Some(Self::StepFlood {
                case: case.clone(),
                hearing: hearing.clone(),
                actor: actor.clone(),
                actions: BTreeSet::new(),
            }),
            Self::Flood { .. } | Self::StepFlood { .. } => None,
        }
    }
}

/// Counts `count` refusals like `refusal`, the first at `since`, into its flood window (opened at `now` if it is
/// not open). `false` when there is no such window to count them in.
fn flood(
    windows: &mut HashMap<Refusal, Window>,
    refusal: &Refusal,
    count: u64,
    since: Timestamp,
    now: Timestamp,
) -> bool {
    let Some(key) = refusal.flood_key() else { return false };
    if !windows.contains_key(&key) && windows.len() >= MAX_TRACKED {
        return false;
    }
    let window = windows.entry(key).or_insert_with(|| Window::opened(now));
    window.count += count;
    window.since = Some(window.since.map_or(since, |first| first.min(since)));
    match refusal {
        Refusal::Access { action, .. } => {
            window.actions.insert(*action);
        }
        Refusal::Step { action, .. } => {
            window.steps.insert(*action);
        }
        Refusal::Flood { .. } | Refusal::StepFlood { .. } => {}
    }
    true
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
    fn refused_steps_are_one_refusal_per_action_and_past_the_budget_one_per_hearing_and_actor() {
        let refusals = Refusals::default();
        let start: Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        let step = |action| Refusal::Step {
            case: CaseId::new("case-1").unwrap(),
            hearing: HearingId::new("h-1").unwrap(),
            actor: ActorId::new("p-1").unwrap(),
            action,
        };
        // Whatever words each step had, the same action is one refusal: recorded once, then counted.
        assert!(refusals.note(&step(HearingAction::EndConsultation), start).0);
        for n in 1..100 {
            let (now, _) = refusals.note(&step(HearingAction::EndConsultation), start + SignedDuration::from_millis(n));
            assert!(!now);
        }
        // Other actions, past the budget: diverted into one window for the hearing and the actor.
        for action in [HearingAction::Admit, HearingAction::Remove, HearingAction::Admit] {
            if refusals.note(&step(action), start).0 {
                refusals.divert(&step(action), start);
            }
        }
        let due = refusals.take_due(start + WINDOW + SignedDuration::from_secs(1));
        assert_eq!(due.len(), 2, "{due:?}");
        let repeated = due.iter().find(|(r, _)| *r == step(HearingAction::EndConsultation)).unwrap().1;
        assert_eq!(repeated.count, 99);
        let (Refusal::StepFlood { actions, .. }, flood) =
            due.iter().find(|(r, _)| matches!(r, Refusal::StepFlood { .. })).unwrap()
        else {
            unreachable!()
        };
        assert_eq!(flood.count, 3);
        assert_eq!(actions.iter().copied().collect::<Vec<_>>(), [HearingAction::Admit, HearingAction::Remove]);
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

    #[test]
    fn a_closed_windows_count_folded_into_its_flood_window_is_recorded_there_with_its_action() {
        let refusals = Refusals::default();
        let start: Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        let since = start - SignedDuration::from_secs(30);
        assert!(refusals.fold(&refusal(), Repeated { count: 7, since }, start));
        refusals.divert(&refusal(), start + SignedDuration::from_secs(1));
        let flood = Refusal::Flood {
            case: CaseId::new("case-1").unwrap(),
            actor: ActorId::new("acct-1").unwrap(),
            code: RefusalCode::PolicyTlp,
            actions: BTreeSet::new(),
        };
        assert!(!refusals.fold(&flood, Repeated { count: 1, since }, start), "a flood's count is its own");
        let due = refusals.take_due(start + WINDOW);
        assert_eq!(due.len(), 1, "{due:?}");
        let (Refusal::Flood { actions, .. }, repeated) = &due[0] else { panic!("{due:?}") };
        assert_eq!(*actions, BTreeSet::from([Action::DownloadArtefact]));
        assert_eq!((repeated.count, repeated.since), (8, since));
    }
}
