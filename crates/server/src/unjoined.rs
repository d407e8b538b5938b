//! Places for room sockets that have not said who they are yet.
//!
//! A socket that opens the hearing room has [`crate::hearing_api`]'s few seconds to send its join message, and
//! until it does it holds a place here: at most `total` at once, and at most `per_peer` from one client network.
//! A stranger with many addresses could otherwise hold every place by opening sockets and saying nothing, and the
//! people of a hearing would be turned away for as long as they kept it up.
//!
//! So when every place is held, a new socket still gets one: the socket that has waited longest without speaking
//! is told to give its place up ([`Place::given_up`]) and is closed. A client of the hearing sends its join
//! message as soon as its socket opens, so it is never the one that has waited longest for long; a socket that
//! says nothing is. A socket that has spoken ([`Place::spoke`]) is no longer asked to give up its place while its
//! join message is checked. Only when every place is held by a socket that has spoken is a new one turned away.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use crate::listen::ClientNetwork;

/// The places, shared by the sockets that hold them.
#[derive(Debug)]
pub(crate) struct Unjoined {
    total: usize,
    per_peer: usize,
    places: Mutex<Places>,
}

#[derive(Debug, Default)]
struct Places {
    /// Places held, spoken or not, including those told to give up that have not yet.
    held: usize,
    by_peer: HashMap<ClientNetwork, usize>,
    /// The places of sockets that have not spoken and not been told to give up, by when they came.
    silent: BTreeMap<u64, Arc<Notify>>,
    next: u64,
}

/// One socket's place. Dropping it gives the place back.
#[derive(Debug)]
pub(crate) struct Place {
    places: Arc<Unjoined>,
    id: u64,
    peer: Option<ClientNetwork>,
    give_up: Arc<Notify>,
}

impl Unjoined {
    /// At most `total` places at once, `per_peer` of them for one client network.
    pub(crate) fn new(total: usize, per_peer: usize) -> Self {
        Self { total: total.max(1), per_peer: per_peer.max(1), places: Mutex::default() }
    }

    /// A place for a socket from `peer` (`None`: a socket whose peer is not known, counted only in the total), or
    /// `None` when its network holds its share, or when every place is held by a socket that has spoken. When
    /// every place is held, the socket silent the longest is told to give its place up.
    pub(crate) fn admit(self: &Arc<Self>, peer: Option<ClientNetwork>) -> Option<Place> {
        let mut places = self.places.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(peer) = peer
            && places.by_peer.get(&peer).copied().unwrap_or(0) >= self.per_peer
        {
            return None;
        }
        if places.held >= self.total {
            let (_, longest) = places.silent.pop_first()?;
            longest.notify_one();
        }
        places.held += 1;
        if let Some(peer) = peer {
            *places.by_peer.entry(peer).or_insert(0) += 1;
        }
        let id = places.next;
        places.next += 1;
        let give_up = Arc::new(Notify::new());
        places.silent.insert(id, give_up.clone());
        Some(Place { places: self.clone(), id, peer, give_up })
    }
}

impl Place {
    /// The socket has said something: it keeps its place until it is dropped.
    pub(crate) fn spoke(&self) {
        self.places.places.lock().unwrap_or_else(PoisonError::into_inner).silent.remove(&self.id);
    }

    /// Completes when the socket has been told to give its place up to a newer one.
    pub(crate) async fn given_up(&self) {
        self.give_up.notified().await;
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut places = self.places.places.lock().unwrap_or_else(PoisonError::into_inner);
        places.silent.remove(&self.id);
        places.held = places.held.saturating_sub(1);
        if let Some(peer) = self.peer
            && let Some(count) = places.by_peer.get_mut(&peer)
        {
            *count -= 1;
            if *count == 0 {
                places.by_peer.remove(&peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::time::Duration;

    use super::*;

    fn peer(n: u8) -> Option<ClientNetwork> {
        Some(ClientNetwork::of(IpAddr::from([192, 0, 2, n])))
    }

    async fn told_to_give_up(place: &Place) -> bool {
        tokio::time::timeout(Duration::from_millis(20), place.given_up()).await.is_ok()
    }

    #[tokio::test]
    async fn a_full_house_of_silent_sockets_makes_way_for_a_new_one_oldest_first() {
        let unjoined = Arc::new(Unjoined::new(4, 2));
        let held: Vec<Place> = (0..4).map(|n| unjoined.admit(peer(n / 2)).unwrap()).collect();
        assert!(unjoined.admit(peer(0)).is_none(), "a network past its share is turned away");
        let newcomer = unjoined.admit(peer(9)).expect("a silent socket makes way");
        assert!(told_to_give_up(&held[0]).await, "the socket silent the longest gives up its place");
        for place in &held[1..] {
            assert!(!told_to_give_up(place).await);
        }
        drop(held);
        assert!(!told_to_give_up(&newcomer).await);
        assert_eq!(unjoined.places.lock().unwrap().held, 1);
    }

    #[tokio::test]
    async fn a_socket_that_has_spoken_keeps_its_place_and_a_house_of_them_is_full() {
        let unjoined = Arc::new(Unjoined::new(2, 2));
        let first = unjoined.admit(peer(1)).unwrap();
        let second = unjoined.admit(peer(2)).unwrap();
        first.spoke();
        let third = unjoined.admit(peer(3)).expect("the silent one makes way");
        assert!(!told_to_give_up(&first).await);
        assert!(told_to_give_up(&second).await);
        third.spoke();
        // The told socket has not gone yet; everyone else has spoken: no place to make.
        assert!(unjoined.admit(peer(4)).is_none());
        drop(second);
        drop(first);
        assert!(unjoined.admit(peer(4)).is_some());
    }

    #[test]
    fn places_of_unknown_peers_count_only_in_the_total() {
        let unjoined = Arc::new(Unjoined::new(8, 1));
        let places: Vec<Place> = (0..3).map(|_| unjoined.admit(None).unwrap()).collect();
        assert_eq!(places.len(), 3);
        let by_peer = unjoined.admit(peer(1)).unwrap();
        assert!(unjoined.admit(peer(1)).is_none());
        drop(by_peer);
        assert!(unjoined.admit(peer(1)).is_some());
    }
}
