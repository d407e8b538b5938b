//! Places held at once, in all and per client network, that strangers cannot all take: open connections
//! ([`crate::listen`]) and room sockets that have not joined yet ([`crate::hearing_api`]).
//!
//! A budget that simply turned newcomers away once full would be held by whoever fills it first: connections that
//! send half a request head and reconnect as each times out, from a few dozen addresses, once kept every witness out.
//! So when every place is held, a newcomer still gets one: a place is taken back from the client network that
//! weighs the most ([`Place::given_up`] tells its holder, who closes it). A network weighs its half-open places
//! (on which no request head ever came whole) and those taken from it lately while half-open ([`STRIKES_FOR`]);
//! among networks of equal weight, the one holding more places goes first. Networks where someone is signed in
//! (a request on one of their connections proved who sent it: a session, a token) go only after every network of
//! strangers, and a new connection of theirs taken back is no strike; an account signed in from more than
//! [`TRUSTED_NETWORKS_PER_ACCOUNT`] networks at once (one token spread over a flood) earns none of them either.
//! From that network goes its place least worth keeping, the oldest of those: a half-open one, then an idle keep-alive, then a request being served,
//! strangers' before those of people signed in; a
//! place moving data (a long download or upload, [`Activity`]) goes only when every place there is to take moves
//! data. Strangers who fill the budget with half-sent heads weigh what they hold, and a court behind one address
//! whose people are being served weighs nothing however many places it holds, so it is always the strangers'
//! places that go. To be spared, strangers must send whole requests, which the other budgets then bound (bodies
//! that must arrive within a time, sign-ins, per-account budgets). Each network also holds at most `per_peer`
//! places.
//!
//! The places held may pass `total` for a moment, while places taken back are being given up. Those finishing a
//! request (lingering) hold a sixteenth over it at most ([`LINGERING_OVER_TOTAL`]): past that, a newcomer's place
//! is one cut short at once ([`Place::cut`]), so that lingering requests never keep one out. All of them, those
//! closing included, hold twice that at most (the listener keeps a quarter of its descriptors in reserve): past
//! that, newcomers are turned away until they have closed.
//!
//! A place can stop being one to take back ([`Place::keep`]): a room socket that has said who it is, while that is
//! checked. A place whose network is not known (a connection from a trusted proxy, which carries many
//! clients; a socket served in-process) counts in the total only, and is taken back only when no known network
//! has a place to give.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use custodia_service::network::ClientNetwork;

/// The places, shared by those who hold them.
#[derive(Debug)]
pub struct Places {
    total: usize,
    per_peer: usize,
    state: Mutex<State>,
    /// Told when a place cut short has closed.
    closed: Notify,
}

/// Places taken back that finish a request (lingering) may pass the total by the total divided by this (rounded
/// up), a sixteenth; with those cut short and closing, by twice that. The listener keeps a quarter of its
/// descriptors in reserve for the log, the database, uploads' staging files, recordings and media, and these must
/// leave most of it to them.
pub const LINGERING_OVER_TOTAL: usize = 16;

/// How long a network whose place was taken back weighs more ([`Places`]).
pub const STRIKES_FOR: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct State {
    /// Places taken back, by network, since `strikes_since`.
    strikes: HashMap<ClientNetwork, usize>,
    strikes_since: Option<Instant>,
    /// Places held, including those told to give up that have not yet.
    held: usize,
    /// Places held by network.
    by_peer: HashMap<ClientNetwork, usize>,
    /// The places that may be taken back and have not been told to give up, by network, oldest first.
    takeable: HashMap<Option<ClientNetwork>, BTreeMap<u64, Arc<Signals>>>,
    /// The places told to give up that are still held (finishing a request in flight), oldest first.
    lingering: BTreeMap<u64, Arc<Signals>>,
    /// The places told to give up at once ([`Place::cut`]) that are still held: closing, and not counted against
    /// the eighth over the total.
    cut: HashSet<u64>,
    next: u64,
}

/// What a place's holder is told, and what it tells.
#[derive(Debug, Default)]
struct Signals {
    /// Give the place up: finish what is in flight, briefly, and close.
    give_up: Notify,
    /// Give it up now.
    cut: Notify,
    /// What the holder does with its place ([`Place::activity`]).
    activity: Arc<Activity>,
}

/// What a connection does with its place, as the listener counts it.
#[derive(Debug, Default)]
pub struct Activity {
    /// Requests in flight: from a complete head to the answer's last byte.
    pub in_flight: AtomicUsize,
    /// Requests answered to the end.
    pub answered: AtomicU64,
    /// Bytes of bodies, both ways, moved since the latest request began.
    pub moved: AtomicU64,
    /// Whether a request on it proved who sent it (a session, a token): a person at work, not a stranger.
    pub signed_in: std::sync::atomic::AtomicBool,
    /// The account it proved, once it did ([`TRUSTED_NETWORKS_PER_ACCOUNT`]).
    pub account: Mutex<Option<String>>,
    /// Told when what it serves must end it at once ([`Activity::close_now`]).
    closing: Notify,
    /// Set once [`Activity::close_now`] was asked: the connection's IO fails from then on, an upgraded socket's too.
    closed_now: std::sync::atomic::AtomicBool,
    /// The tasks reading and writing its IO, to wake when it is closed now.
    reader: futures::task::AtomicWaker,
    writer: futures::task::AtomicWaker,
    /// Whether it is a live socket (a hearing room's WebSocket whose participant joined,
    /// [`crate::listen::Connection::mark_live`]): taken back last, like one moving data.
    pub upgraded: std::sync::atomic::AtomicBool,
}

/// An account signed in on connections from more networks than this at once earns none of them the standing of
/// people signed in ([`Places`]): people work from an office, a home, a phone; one token spread over a flood of
/// addresses is not a person at work.
pub const TRUSTED_NETWORKS_PER_ACCOUNT: usize = 4;

impl Activity {
    /// Whether a request in flight is moving data: a download or an upload under way, worth keeping.
    fn is_moving(&self) -> bool {
        self.upgraded.load(Ordering::Acquire)
            || (self.in_flight.load(Ordering::Acquire) > 0 && self.moved.load(Ordering::Acquire) >= MOVING_BYTES)
    }

    /// Whether the place never had a request: not one head came whole (a half-sent head, or nothing at all).
    pub fn is_half_open(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && self.answered.load(Ordering::Acquire) == 0
    }

    /// How much the place is worth keeping, least first: [`Use::HalfOpen`], [`Use::Idle`] (every request
    /// answered: an idle keep-alive, or its last answer still leaving), [`Use::Serving`] (a request in flight, not
    /// moving data), [`Use::Moving`].
    fn use_now(&self) -> Use {
        let signed_in = self.is_signed_in();
        if self.is_moving() {
            Use::Moving
        } else if self.in_flight.load(Ordering::Acquire) > 0 {
            if signed_in { Use::SignedInServing } else { Use::Serving }
        } else if self.answered.load(Ordering::Acquire) > 0 {
            if signed_in { Use::SignedInIdle } else { Use::Idle }
        } else {
            Use::HalfOpen
        }
    }

    fn is_signed_in(&self) -> bool {
        self.signed_in.load(Ordering::Acquire)
    }

    fn account(&self) -> Option<String> {
        self.account.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Marks it signed in as `account`.
    pub fn sign_in(&self, account: &str) {
        *self.account.lock().unwrap_or_else(PoisonError::into_inner) = Some(account.to_owned());
        self.signed_in.store(true, Ordering::Release);
    }

    /// Asks the holder to end the connection now, whatever it is doing: a download whose place among those leaving
    /// was given to another ([`crate::outflow::Outflow`]).
    pub fn close_now(&self) {
        self.closed_now.store(true, Ordering::Release);
        self.closing.notify_one();
        self.reader.wake();
        self.writer.wake();
    }

    /// Whether [`Activity::close_now`] was asked.
    pub fn is_closed_now(&self) -> bool {
        self.closed_now.load(Ordering::Acquire)
    }

    /// Wakes `waker` (the task reading the IO, or the one `writing` it) when the connection is closed now.
    pub fn wake_when_closed(&self, waker: &std::task::Waker, writing: bool) {
        if writing { self.writer.register(waker) } else { self.reader.register(waker) }
    }

    /// Completes once [`Activity::close_now`] was asked, before or after this is awaited.
    pub async fn closed_now(&self) {
        self.closing.notified().await;
    }
}

/// What a place is used for now ([`Activity::use_now`]), least worth keeping first: strangers' places before
/// those of people signed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Use {
    HalfOpen,
    Idle,
    Serving,
    SignedInIdle,
    SignedInServing,
    Moving,
}

/// Bytes a request in flight must have moved to count as moving data ([`Activity`]): more than a page of the
/// gateway's own or any sign-in, far more than a client trickling a body to hold its place.
pub const MOVING_BYTES: u64 = 256 * 1024;

/// One holder's place, given back on drop.
#[derive(Debug)]
pub struct Place {
    places: Arc<Places>,
    id: u64,
    peer: Option<ClientNetwork>,
    signals: Arc<Signals>,
}

impl Places {
    /// At most `total` places at once (a little more for a moment, while a place taken back is being given up),
    /// `per_peer` of them for one client network.
    pub fn new(total: usize, per_peer: usize) -> Self {
        Self { total: total.max(1), per_peer: per_peer.max(1), state: Mutex::default(), closed: Notify::new() }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for a holder from `peer` (`None`: a network not known, counted in the total only), or `None` when
    /// its network holds its share, or when every place is held and none may be taken back. When every place is
    /// held, the oldest place of the network holding the most is told to give up.
    pub fn admit(self: &Arc<Self>, peer: Option<ClientNetwork>) -> Option<Place> {
        let mut state = self.state();
        if let Some(peer) = peer
            && state.by_peer.get(&peer).copied().unwrap_or(0) >= self.per_peer
        {
            return None;
        }
        if state.held >= self.total {
            let lingering_at_most = self.total.div_ceil(LINGERING_OVER_TOTAL);
            if state.held >= self.total + 2 * lingering_at_most {
                return None;
            }
            if state.held - state.cut.len() < self.total + lingering_at_most {
                let (id, signals) = state.take_back(self.total)?;
                state.lingering.insert(id, signals.clone());
                signals.give_up.notify_one();
            } else {
                // Places taken back that still finish a request hold a sixteenth over the total: the newcomer's
                // place is one cut short at once, the first of those to cut ([`State::first_to_cut`]), or else
                // one taken back now, so that lingering requests never keep a newcomer out.
                let (id, signals) = match state.first_to_cut() {
                    Some(lingering) => lingering,
                    None => {
                        let (id, signals) = state.take_back(self.total)?;
                        signals.give_up.notify_one();
                        (id, signals)
                    }
                };
                state.cut.insert(id);
                signals.cut.notify_one();
            }
        }
        state.held += 1;
        if let Some(peer) = peer {
            *state.by_peer.entry(peer).or_insert(0) += 1;
        }
        let id = state.next;
        state.next += 1;
        let signals = Arc::new(Signals::default());
        state.takeable.entry(peer).or_default().insert(id, signals.clone());
        Some(Place { places: self.clone(), id, peer, signals })
    }

    /// [`Places::admit`], waiting up to `within` for places cut short to close while they are what keeps the
    /// newcomer out: a burst of strangers is held back, for a moment, rather than a newcomer turned away.
    pub async fn admit_waiting(self: &Arc<Self>, peer: Option<ClientNetwork>, within: Duration) -> Option<Place> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            // Listening before looking, so that a place closing in between is not missed.
            let closed = self.closed.notified();
            let mut closed = std::pin::pin!(closed);
            closed.as_mut().enable();
            if let Some(place) = self.admit(peer) {
                return Some(place);
            }
            if self.state().cut.is_empty() {
                return None;
            }
            tokio::time::timeout_at(deadline, closed).await.ok()?;
        }
    }

    /// Waits until every place is given back, or `within` has passed; whether they all were.
    pub async fn emptied(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while self.state().held > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }
}

/// Whether any of `places` is a person's signed in with an account in `trusted` ([`State::trusted_accounts`]).
fn places_signed_in(places: Option<&BTreeMap<u64, Arc<Signals>>>, trusted: &HashSet<String>) -> bool {
    places.is_some_and(|places| {
        places.values().any(|signals| {
            signals.activity.is_signed_in()
                && signals.activity.account().is_none_or(|account| trusted.contains(&account))
        })
    })
}

impl State {
    /// The accounts signed in on connections from at most [`TRUSTED_NETWORKS_PER_ACCOUNT`] networks at once.
    fn trusted_accounts(&self) -> HashSet<String> {
        let mut networks_of: HashMap<String, HashSet<ClientNetwork>> = HashMap::new();
        for (peer, places) in &self.takeable {
            for signals in places.values() {
                if let (Some(peer), Some(account)) = (peer, signals.activity.account()) {
                    networks_of.entry(account).or_default().insert(*peer);
                }
            }
        }
        networks_of
            .into_iter()
            .filter(|(_, networks)| networks.len() <= TRUSTED_NETWORKS_PER_ACCOUNT)
            .map(|(account, _)| account)
            .collect()
    }

    /// Takes back a place not moving data ([`MOVING_BYTES`]) from the known network weighing the most, and only
    /// when every place to take moves data, one moving data. A network weighs its half-open places (no request
    /// head ever came whole on them) and those taken from it lately while half-open ([`STRIKES_FOR`]): a court
    /// behind one address whose people are served weighs nothing however many connections it holds, and strangers
    /// who fill the budget with half-sent heads weigh what they hold. Among networks of equal weight, the one
    /// holding more places, then the one holding the oldest; a place of no known network only when no known
    /// network has one. From the chosen network, its place least worth keeping ([`Use`]), the oldest of those; of
    /// places moving data, the newest. Its holder is to be told to give it up. Its id, and what tells its holder.
    /// At most four times `total` networks are remembered.
    fn take_back(&mut self, total: usize) -> Option<(u64, Arc<Signals>)> {
        let now = Instant::now();
        if self.strikes_since.is_none_or(|since| now.duration_since(since) >= STRIKES_FOR)
            || self.strikes.len() >= 4 * total
        {
            self.strikes.clear();
            self.strikes_since = Some(now);
        }
        let trusted = self.trusted_accounts();
        let chosen = self
            .takeable
            .iter()
            .filter(|(_, places)| !places.is_empty())
            .filter_map(|(peer, places)| {
                // Places already taken back, closing, weigh nothing more: they are not among these.
                let half_open = places.values().filter(|signals| signals.activity.is_half_open()).count();
                let weight = peer.map_or(0, |peer| half_open + self.strikes.get(&peer).copied().unwrap_or(0));
                // The oldest of the places least worth keeping; of places moving data, the newest.
                let (use_now, id) = places.iter().map(|(id, signals)| (signals.activity.use_now(), *id)).min_by_key(
                    |(use_now, id)| {
                        (*use_now, if *use_now == Use::Moving { -i128::from(*id) } else { i128::from(*id) })
                    },
                )?;
                let still = use_now != Use::Moving;
                let strangers_only = !places_signed_in(Some(places), &trusted);
                let oldest = *places.keys().next()?;
                Some((
                    still,
                    peer.is_some(),
                    strangers_only,
                    weight,
                    places.len(),
                    std::cmp::Reverse(oldest),
                    id,
                    *peer,
                ))
            })
            .max_by_key(|(still, known, strangers_only, weight, held, oldest, _, _)| {
                (*still, *known, *strangers_only, *weight, *held, *oldest)
            })?;
        let (_, _, _, _, _, _, id, peer) = chosen;
        let places = self.takeable.get_mut(&peer)?;
        let signals = places.remove(&id)?;
        if places.is_empty() {
            self.takeable.remove(&peer);
        }
        // A place taken back while half-open (a head never sent whole) is a strike against its network; an idle
        // keep-alive of a client that was served, or a request being served, is not; nor is a new connection of
        // a network where someone trusted is signed in (a court's browsers opening connections as they are taken).
        let signed_in_there = places_signed_in(self.takeable.get(&peer), &trusted);
        if let Some(peer) = peer
            && signals.activity.is_half_open()
            && !signed_in_there
        {
            *self.strikes.entry(peer).or_insert(0) += 1;
        }
        Some((id, signals))
    }

    /// Removes and gives the lingering place to cut short first: the oldest of those still serving a request
    /// without moving data (a head or a body trickled, a slow page); those whose answers have all left the
    /// gateway and are being delivered, or that move data, only after them. Cutting a place whose answer is being
    /// delivered loses the answer's last bytes still in the gateway's buffers: a download arrives truncated.
    fn first_to_cut(&mut self) -> Option<(u64, Arc<Signals>)> {
        let id = self
            .lingering
            .iter()
            .min_by_key(|(id, signals)| {
                let delivering = match signals.activity.use_now() {
                    Use::HalfOpen | Use::Serving => 0,
                    Use::SignedInServing => 1,
                    Use::Idle | Use::SignedInIdle => 2,
                    Use::Moving => 3,
                };
                (delivering, **id)
            })
            .map(|(id, _)| *id)?;
        self.lingering.remove_entry(&id)
    }

    fn untake(&mut self, peer: Option<ClientNetwork>, id: u64) {
        if let Some(places) = self.takeable.get_mut(&peer) {
            places.remove(&id);
            if places.is_empty() {
                self.takeable.remove(&peer);
            }
        }
    }
}

impl Place {
    /// The place is no longer one to take back: it is kept until dropped.
    pub fn keep(&self) {
        self.places.state().untake(self.peer, self.id);
    }

    /// Completes when the holder has been told to give the place up to a newcomer: it may finish a request in
    /// flight, briefly, unless it is then [`Place::cut`] short.
    pub async fn given_up(&self) {
        self.signals.give_up.notified().await;
    }

    /// Completes when the holder, told to give the place up, must do so at once: places taken back that still
    /// finish their requests pass the total by a sixteenth, and a newcomer needs one.
    pub async fn cut(&self) {
        self.signals.cut.notified().await;
    }

    /// What the holder does with its place, for the holder to count: a place moving data is taken back last,
    /// and one never answered counts against its network.
    pub fn activity(&self) -> Arc<Activity> {
        self.signals.activity.clone()
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut state = self.places.state();
        state.untake(self.peer, self.id);
        state.lingering.remove(&self.id);
        let was_cut = state.cut.remove(&self.id);
        state.held = state.held.saturating_sub(1);
        if let Some(peer) = self.peer
            && let Some(count) = state.by_peer.get_mut(&peer)
        {
            *count -= 1;
            if *count == 0 {
                state.by_peer.remove(&peer);
            }
        }
        drop(state);
        if was_cut {
            self.places.closed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn peer(n: u8) -> Option<ClientNetwork> {
        Some(ClientNetwork::of(IpAddr::from([192, 0, 2, n])))
    }

    /// Newcomers from networks `networks`, each admitted and then answered (a served client's keep-alive).
    fn served_newcomers(places: &Arc<Places>, networks: std::ops::RangeInclusive<u8>) -> Vec<Place> {
        networks
            .map(|n| {
                let newcomer = places.admit(peer(n)).unwrap();
                newcomer.activity().answered.store(1, Ordering::Release);
                newcomer
            })
            .collect()
    }

    /// How many of `held` were told to give up.
    async fn told_to_give_up_of(held: &[Place]) -> usize {
        let mut told = 0;
        for place in held {
            told += usize::from(told_to_give_up(place).await);
        }
        told
    }

    async fn told_to_give_up(place: &Place) -> bool {
        tokio::time::timeout(Duration::from_millis(20), place.given_up()).await.is_ok()
    }

    #[tokio::test]
    async fn a_newcomer_takes_the_oldest_place_of_the_network_holding_the_most() {
        let places = Arc::new(Places::new(6, 4));
        let person = places.admit(peer(1)).unwrap();
        let attacker: Vec<Place> = (0..4).map(|_| places.admit(peer(2)).unwrap()).collect();
        let other = places.admit(peer(3)).unwrap();
        assert!(places.admit(peer(2)).is_none(), "a network past its share is turned away");
        // Full: the newcomer's place comes from the network holding four, its oldest, never the person's.
        let newcomer = places.admit(peer(4)).expect("a place is taken back");
        assert!(told_to_give_up(&attacker[0]).await, "the heaviest network's oldest place goes");
        for place in [&person, &other, &attacker[1], &attacker[2], &attacker[3], &newcomer] {
            assert!(!told_to_give_up(place).await);
        }
        drop(attacker);
        assert_eq!(places.state().held, 3);
    }

    #[tokio::test]
    async fn a_kept_place_is_not_taken_back_and_a_house_of_them_is_full() {
        let places = Arc::new(Places::new(2, 2));
        let first = places.admit(peer(1)).unwrap();
        let second = places.admit(peer(2)).unwrap();
        first.keep();
        let third = places.admit(peer(3)).expect("the place not kept is taken back");
        assert!(!told_to_give_up(&first).await);
        assert!(told_to_give_up(&second).await);
        third.keep();
        // The told place has not gone yet: past the eighth, the next newcomer has it, cut short.
        let fourth = places.admit(peer(4)).expect("the lingering place is cut short for it");
        fourth.keep();
        // The rest are kept: no place to take back.
        assert!(places.admit(peer(5)).is_none());
        drop((first, second, fourth));
        assert!(places.admit(peer(5)).is_some());
    }

    #[tokio::test]
    async fn places_of_no_known_network_count_in_the_total_and_go_last() {
        let places = Arc::new(Places::new(3, 1));
        let unknown: Vec<Place> = (0..2).map(|_| places.admit(None).unwrap()).collect();
        let known = places.admit(peer(1)).unwrap();
        assert!(places.admit(peer(1)).is_none());
        let newcomer = places.admit(peer(2)).unwrap();
        assert!(told_to_give_up(&known).await, "a known network's place goes before a place of none");
        assert!(!told_to_give_up(&unknown[0]).await);
        drop(known);
        newcomer.keep();
        let _next = places.admit(peer(3)).unwrap();
        assert!(told_to_give_up(&unknown[0]).await, "then, with no known network's place to give, the oldest of none");
    }

    /// A long download is the last to go: places not moving data go first, from the heaviest network, oldest
    /// first; a place moving data only when every place does, the heaviest network's newest.
    #[tokio::test]
    async fn places_moving_data_go_last_and_the_newest_of_them_first() {
        let busy = |place: &Place| {
            place.activity().in_flight.store(1, Ordering::Release);
            place.activity().moved.store(MOVING_BYTES, Ordering::Release);
        };
        let places = Arc::new(Places::new(6, 6));
        let mut court: Vec<Option<Place>> = (0..3).map(|_| places.admit(peer(1))).collect();
        busy(court[0].as_ref().unwrap());
        busy(court[1].as_ref().unwrap());
        let others: Vec<Place> = (2..5).map(|n| places.admit(peer(n)).unwrap()).collect();
        busy(&others[0]);
        let _first = places.admit(peer(10)).expect("a place is taken back");
        assert!(told_to_give_up(court[2].as_ref().unwrap()).await, "the court's idle connection goes first");
        assert!(!told_to_give_up(court[0].as_ref().unwrap()).await);
        court[2] = None;
        // The court weighs the most still, but its places move data: a stranger's place goes instead.
        let _second = places.admit(peer(11)).expect("a place is taken back");
        assert!(told_to_give_up(&others[1]).await, "the oldest place not moving data");
        for place in [court[0].as_ref().unwrap(), court[1].as_ref().unwrap(), &others[0], &others[2]] {
            assert!(!told_to_give_up(place).await);
        }

        // Only when every place moves data does one go: the heaviest network's newest.
        let places = Arc::new(Places::new(3, 3));
        let court: Vec<Place> = (0..2).map(|_| places.admit(peer(1)).unwrap()).collect();
        let stranger = places.admit(peer(2)).unwrap();
        for place in court.iter().chain([&stranger]) {
            busy(place);
        }
        let _newcomer = places.admit(peer(3)).unwrap();
        assert!(told_to_give_up(&court[1]).await && !told_to_give_up(&court[0]).await);
        assert!(!told_to_give_up(&stranger).await);

        // Equal weights: the network with an idle place goes first, though the busy one is older.
        let places = Arc::new(Places::new(2, 2));
        let downloading = places.admit(peer(1)).unwrap();
        busy(&downloading);
        let idle = places.admit(peer(2)).unwrap();
        let _newcomer = places.admit(peer(3)).unwrap();
        assert!(told_to_give_up(&idle).await && !told_to_give_up(&downloading).await);

        // A request trickling its body is not moving data: it goes before an idle keep-alive that is newer.
        let places = Arc::new(Places::new(2, 2));
        let trickling = places.admit(peer(1)).unwrap();
        trickling.activity().in_flight.store(1, Ordering::Release);
        trickling.activity().moved.store(MOVING_BYTES - 1, Ordering::Release);
        let idle = places.admit(peer(2)).unwrap();
        idle.activity().answered.store(1, Ordering::Release);
        let _newcomer = places.admit(peer(3)).unwrap();
        assert!(told_to_give_up(&trickling).await && !told_to_give_up(&idle).await);
    }

    /// A court behind one address whose people are served weighs nothing, however many places it holds:
    /// strangers' half-open places (a head never sent whole) go first. Once nobody holds a half-open place, the
    /// network holding the most loses its place least worth keeping: the court's idle keep-alive, never its
    /// download while a place not moving data is left.
    #[tokio::test]
    async fn a_court_whose_people_are_served_keeps_its_places_while_strangers_hold_half_open_ones() {
        let places = Arc::new(Places::new(64, 64));
        let keep_alives: Vec<Place> = (0..3).map(|_| places.admit(peer(200)).unwrap()).collect();
        for place in &keep_alives {
            place.activity().answered.store(1, Ordering::Release);
        }
        let download = places.admit(peer(200)).unwrap();
        download.activity().in_flight.store(1, Ordering::Release);
        download.activity().moved.store(MOVING_BYTES, Ordering::Release);
        let strangers: Vec<Place> = (1..=60).map(|n| places.admit(peer(n)).unwrap()).collect();
        let _newcomers: Vec<Place> = (61..=63).map(|n| places.admit(peer(n)).unwrap()).collect();
        for place in keep_alives.iter().chain([&download]) {
            assert!(!told_to_give_up(place).await, "the court keeps its places");
        }
        assert_eq!(told_to_give_up_of(&strangers).await, 3, "three strangers' half-open places went");
        // Everyone served now: the court holds the most, and its idle keep-alive goes, not its download.
        for place in strangers.iter().chain(&_newcomers) {
            place.activity().answered.store(1, Ordering::Release);
        }
        let _next = places.admit(peer(64)).unwrap();
        assert!(told_to_give_up(&keep_alives[0]).await, "the court's oldest idle keep-alive");
        assert!(!told_to_give_up(&download).await, "the download stays");
    }

    /// Strangers who complete their requests (a cheap page, kept alive) weigh no more than a court, but a court's
    /// people are signed in: the strangers' places go first, though the court holds more, and a new connection
    /// the court has just opened (half-open for a moment) is neither taken nor a strike.
    #[tokio::test]
    async fn strangers_who_complete_requests_lose_their_places_before_people_signed_in() {
        let places = Arc::new(Places::new(40, 40));
        let mut court: Vec<Place> = (0..6).map(|_| places.admit(peer(200)).unwrap()).collect();
        for place in &court {
            place.activity().answered.store(1, Ordering::Release);
            place.activity().sign_in("clerk");
        }
        court.push(places.admit(peer(200)).unwrap());
        let strangers: Vec<Place> = (1..=33).map(|n| places.admit(peer(n)).unwrap()).collect();
        for place in &strangers {
            place.activity().answered.store(1, Ordering::Release);
        }
        let _newcomers = served_newcomers(&places, 34..=36);
        for place in &court {
            assert!(!told_to_give_up(place).await, "the court keeps its places");
        }
        assert_eq!(told_to_give_up_of(&strangers).await, 3, "strangers' places went");
        assert_eq!(places.state().strikes.get(&peer(200).unwrap()), None, "no strike against the court");
    }

    /// One account's token spread over many networks earns none of them the standing of people signed in: a
    /// court whose people are signed in keeps its places against a flood that carries a valid token.
    #[tokio::test]
    async fn one_account_over_many_networks_earns_them_no_standing() {
        let places = Arc::new(Places::new(40, 40));
        let court: Vec<Place> = (0..6).map(|_| places.admit(peer(200)).unwrap()).collect();
        for place in &court {
            place.activity().answered.store(1, Ordering::Release);
            place.activity().sign_in("clerk");
        }
        let flood: Vec<Place> = (1..=34).map(|n| places.admit(peer(n)).unwrap()).collect();
        for place in &flood {
            place.activity().answered.store(1, Ordering::Release);
            place.activity().sign_in("one-member");
        }
        let _newcomers = served_newcomers(&places, 35..=37);
        for place in &court {
            assert!(!told_to_give_up(place).await, "the court keeps its places");
        }
        assert_eq!(told_to_give_up_of(&flood).await, 3, "the flood's places went");
    }

    /// A half-open place taken back is no strike where someone trusted is signed in (a court's browsers opening
    /// connections), but it is one where the only person signed in is an account spread over more networks than
    /// people use: a flood carrying one valid token weighs what it holds half-open.
    #[tokio::test]
    async fn a_token_spread_over_many_networks_spares_none_of_them_a_strike() {
        let places = Arc::new(Places::new(8, 8));
        let court = places.admit(peer(200)).unwrap();
        court.activity().answered.store(1, Ordering::Release);
        court.activity().sign_in("clerk");
        let _court_opening = places.admit(peer(200)).unwrap();
        // One member's token signed in from one network more than people use at once.
        let flood: Vec<Place> = (1..=(TRUSTED_NETWORKS_PER_ACCOUNT as u8 + 1))
            .map(|n| {
                let signed_in = places.admit(peer(n)).unwrap();
                signed_in.activity().answered.store(1, Ordering::Release);
                signed_in.activity().sign_in("one-member");
                signed_in
            })
            .collect();
        let _opening = places.admit(peer(1)).unwrap();
        // Full: the newcomer takes back the flood's half-open place (its network weighs one, and holds only
        // strangers and the spread token), which is a strike against it.
        let _newcomer = served_newcomers(&places, 100..=100);
        let strikes = places.state().strikes.get(&peer(1).unwrap()).copied();
        assert_eq!(strikes, Some(1), "the spread token's network");
        assert!(!told_to_give_up(&court).await, "the court keeps its places");
        drop(flood);
    }

    /// A place taken back while half-open (a head never sent whole) is a strike against its network, and goes
    /// before a served client's idle keep-alive, which is no strike when it is taken back in turn.
    #[tokio::test]
    async fn only_a_half_open_place_is_a_strike() {
        let places = Arc::new(Places::new(2, 2));
        let served = places.admit(peer(1)).unwrap();
        served.activity().answered.store(1, Ordering::Release);
        let silent = places.admit(peer(2)).unwrap();
        let first = places.admit(peer(3)).unwrap();
        assert!(told_to_give_up(&silent).await && !told_to_give_up(&served).await, "the half-open one first");
        drop(silent);
        first.activity().answered.store(1, Ordering::Release);
        let _second = places.admit(peer(4)).unwrap();
        assert!(told_to_give_up(&served).await, "the oldest of equals");
        let state = places.state();
        assert_eq!(state.strikes.get(&peer(1).unwrap()), None, "a served keep-alive");
        assert_eq!(state.strikes.get(&peer(2).unwrap()), Some(&1), "a half-open place");
    }

    /// Places taken back that linger (finishing a request) may pass the total by a sixteenth; past it, a
    /// newcomer's place is one cut short at once: the oldest lingering place, or else one taken back now. With
    /// those closing, the places pass the total by twice that at most: past it, newcomers are turned away until
    /// they have closed.
    #[tokio::test]
    async fn a_newcomer_past_the_lingering_allowance_cuts_a_place_short() {
        use futures::FutureExt as _;
        let cut = |place: &Place| place.signals.cut.notified().now_or_never().is_some();
        let places = Arc::new(Places::new(4, 4));
        let mut court: Vec<Option<Place>> = (0..4).map(|_| places.admit(peer(1))).collect();
        fn place(court: &[Option<Place>], n: usize) -> &Place {
            court[n].as_ref().expect("held")
        }
        let first = places.admit(peer(2)).expect("one over the total");
        assert!(told_to_give_up(place(&court, 0)).await && !cut(place(&court, 0)), "the oldest lingers");
        let second = places.admit(peer(3)).expect("past the allowance: the lingering place is the newcomer's");
        assert!(cut(place(&court, 0)), "the lingering place is cut short");
        assert!(!told_to_give_up(place(&court, 1)).await, "and no other is taken back");
        assert!(places.admit(peer(4)).is_none(), "two over the total, one closing: turned away until it has closed");
        // Waiting for the place cut short to close, the newcomer gets in once it has.
        let closing = court[0].take();
        let (third, ()) = tokio::join!(places.admit_waiting(peer(4), Duration::from_secs(30)), async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(closing);
        });
        let third = third.expect("none lingers: one is taken back and cut at once");
        assert!(told_to_give_up(place(&court, 1)).await && cut(place(&court, 1)));
        court[1] = None;
        for kept in court.iter().flatten().chain([&first, &second, &third]) {
            kept.keep();
        }
        assert!(places.admit(peer(5)).is_none(), "none lingers, none can be taken back: refused");
        drop(court);
        assert!(places.admit(peer(5)).is_some(), "places given back make room");
    }

    /// Past the lingering allowance, a place still serving a request is cut short before an older one whose
    /// answer has left the gateway and is being delivered (a download's last bytes).
    #[tokio::test]
    async fn a_place_delivering_its_answer_is_cut_short_after_one_still_serving_a_request() {
        use futures::FutureExt as _;
        let cut = |place: &Place| place.signals.cut.notified().now_or_never().is_some();
        let places = Arc::new(Places::new(17, 17));
        let court: Vec<Place> = (0..17).map(|_| places.admit(peer(1)).expect("room")).collect();
        for moving in &court[2..] {
            moving.activity().in_flight.store(1, Ordering::Release);
            moving.activity().moved.store(MOVING_BYTES, Ordering::Release);
        }
        court[0].activity().answered.store(1, Ordering::Release);
        court[1].activity().in_flight.store(1, Ordering::Release);
        let first = places.admit(peer(2)).expect("one over the total");
        first.activity().answered.store(1, Ordering::Release);
        let _second = places.admit(peer(3)).expect("two over: both within the allowance of two");
        assert!(told_to_give_up(&court[0]).await && told_to_give_up(&court[1]).await, "both linger");
        let _third = places.admit(peer(4)).expect("past the allowance: a lingering place is cut for it");
        assert!(cut(&court[1]), "the one still serving a request is cut short");
        assert!(!cut(&court[0]), "the older one delivering its answer is not");
    }

    /// Strangers on many networks, one place each, who come back as soon as a place of theirs is taken: a person
    /// who came once and waits for their round trip keeps their place.
    #[tokio::test]
    async fn strangers_who_come_back_at_once_weigh_more_than_a_person_who_came_once() {
        use futures::FutureExt as _;
        let places = Arc::new(Places::new(16, 1));
        let mut strangers: Vec<Option<Place>> = (0..24).map(|_| None).collect();
        let mut person = None;
        for round in 0..240u32 {
            // Those told to give up close their sockets.
            for slot in &mut strangers {
                if slot.as_ref().is_some_and(|place| place.signals.give_up.notified().now_or_never().is_some()) {
                    *slot = None;
                }
            }
            if round == 40 {
                person = Some(places.admit(peer(200)).expect("the person gets a place"));
            }
            // And every stranger without a place comes back at once.
            for (n, slot) in strangers.iter_mut().enumerate() {
                if slot.is_none() {
                    *slot = places.admit(peer(n as u8));
                }
            }
            if let Some(person) = &person {
                assert!(!told_to_give_up(person).await, "round {round}: the person's place was taken back");
            }
        }
    }
}
