//! The replay window: each partner's nonce is accepted once while its signature could still be fresh
//! ([`crate::signature::MAX_AGE_SECONDS`]); after that the signature's age refuses it anyway, and its nonce is
//! forgotten. The window holds at most a set number of nonces: when full of fresh ones it refuses new requests
//! rather than forget a nonce that could still be replayed. No clock: the caller says what time it is.

use std::collections::{BTreeSet, HashMap};

use crate::signature::MAX_AGE_SECONDS;

/// Why a nonce is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    #[error("this nonce was already used by {0}: the request is a replay")]
    Replayed(String),
    #[error("more than {0} requests from partners within the last {MAX_AGE_SECONDS} s; try again shortly")]
    Full(usize),
}

/// Nonces seen, by partner, until they expire.
#[derive(Debug)]
pub struct ReplayWindow {
    capacity: usize,
    /// (partner, nonce) → when it may be forgotten (Unix seconds).
    seen: HashMap<(String, String), i64>,
    /// The same, ordered by expiry, to forget the expired cheaply.
    expiring: BTreeSet<(i64, String, String)>,
}

impl ReplayWindow {
    /// A window of at most `capacity` nonces.
    pub fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), seen: HashMap::new(), expiring: BTreeSet::new() }
    }

    /// Accepts `nonce` from `partner`, signed at `created`, at `now`: refused if already seen, or if the window is
    /// full of nonces that could still be replayed. Call only for a signature that verified and is fresh.
    pub fn accept(&mut self, partner: &str, nonce: &str, created: i64, now: i64) -> Result<(), ReplayError> {
        self.forget_expired(now);
        let key = (partner.to_owned(), nonce.to_owned());
        if self.seen.contains_key(&key) {
            return Err(ReplayError::Replayed(partner.to_owned()));
        }
        if self.seen.len() >= self.capacity {
            return Err(ReplayError::Full(self.capacity));
        }
        // Fresh until `created + MAX_AGE_SECONDS` at the latest, by the signature's own clock or ours.
        let expires = created.max(now).saturating_add(MAX_AGE_SECONDS);
        self.expiring.insert((expires, key.0.clone(), key.1.clone()));
        self.seen.insert(key, expires);
        Ok(())
    }

    /// How many nonces are held.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn forget_expired(&mut self, now: i64) {
        while let Some(first) = self.expiring.first() {
            if first.0 >= now {
                break;
            }
            if let Some((_, partner, nonce)) = self.expiring.pop_first() {
                self.seen.remove(&(partner, nonce));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_accepted_once_while_fresh_and_forgotten_after() {
        let mut window = ReplayWindow::new(2);
        assert_eq!(window.accept("it", "n1", 1_000, 1_000), Ok(()));
        assert_eq!(window.accept("it", "n1", 1_000, 1_001), Err(ReplayError::Replayed("it".into())));
        assert_eq!(window.accept("tn", "n1", 1_000, 1_001), Ok(()), "another partner's nonce is its own");
        assert_eq!(window.accept("it", "n2", 1_000, 1_002), Err(ReplayError::Full(2)), "full of fresh nonces");
        let later = 1_001 + MAX_AGE_SECONDS + 1;
        assert_eq!(window.accept("it", "n2", later, later), Ok(()), "the expired are forgotten");
        assert_eq!(window.len(), 1);
        // A signature dated ahead of our clock stays remembered until it is stale by both.
        assert_eq!(window.accept("it", "n3", later + 200, later), Ok(()));
        assert_eq!(
            window.accept("it", "n3", later + 200, later + MAX_AGE_SECONDS + 100),
            Err(ReplayError::Replayed("it".into()))
        );
    }
}
