//! What a live hearing asks of its media ([`MediaPlane`]): who is in the room and in which zone, what each member
//! hears and sees, who is muted, masked or recorded, and the connections that carry them. The live hearing
//! ([`crate::live`]) decides all of that from its state machine's effects; the plane only carries it out.
//!
//! The WebRTC room (`custodia_recorder::sfu::Room`, [`WebRtcRooms`]) is the plane the gateway runs. A plane that
//! only remembers what it was told stands in for it where a test drives the hearing without WebRTC peers.

use std::collections::BTreeSet;
use std::sync::Arc;

use custodia_recorder::WebRtcEngine;
use custodia_recorder::engine::EngineError;
use custodia_recorder::masking::MaskerFactory;
use custodia_recorder::segmenter::RecordingSummary;
use custodia_recorder::sfu::{AudioFrom, Connected, Offered, Protection, RecorderFactory, Room, RoomCounters, Zone};
use futures::future::BoxFuture;

/// One hearing's media: a room of members, each in a receive slot.
pub trait MediaPlane: Send + Sync {
    /// How many members' media the room can carry at once (their receive slots).
    fn slots(&self) -> usize;
    /// Takes `member` in, in receive slot `slot`, in no zone and hearing no one yet.
    fn add_member(&self, member: &str, slot: usize);
    /// How many members the room has.
    fn member_count(&self) -> usize;
    /// Takes `member` out, closing their connection.
    fn remove_member<'a>(&'a self, member: &'a str) -> BoxFuture<'a, ()>;
    /// Closes `member`'s connection; they stay a member and may connect again.
    fn disconnect<'a>(&'a self, member: &'a str) -> BoxFuture<'a, ()>;
    /// Where `member` is: members hear and see only those in their zone (`None`: nobody's media reaches them).
    fn set_zone(&self, member: &str, zone: Zone);
    fn set_muted(&self, member: &str, muted: bool);
    fn set_recorded(&self, member: &str, recorded: bool);
    /// Whom `member` hears, and how loud; `None`: everyone in their zone.
    fn set_audio_from(&self, member: &str, from: Option<AudioFrom>);
    /// The protective measures on `member`'s media: what others receive in place of it.
    fn set_protection(&self, member: &str, protection: Option<Protection>);
    /// Whose video `member` receives, by slot; `None`: everyone in their zone.
    fn set_video_from(&self, member: &str, slots: Option<BTreeSet<usize>>);
    /// Packets received from `member` so far, while they are connected.
    fn packets_received(&self, member: &str) -> Option<u64>;
    /// The RTP packets that arrived from each member and were forwarded to each, so far.
    fn counters(&self) -> RoomCounters;
    /// Ends every recording, and says how each went, by member.
    fn finish_recordings(&self) -> BoxFuture<'_, Vec<(String, RecordingSummary)>>;
    /// Connects `member` with their SDP offer; the answer and a future that resolves if the connection fails.
    fn connect<'a>(&'a self, member: &'a str, offer_sdp: &'a str) -> BoxFuture<'a, Result<Connected, EngineError>>;
    /// Negotiates a connection for an offer no member has yet (WHIP), to [`MediaPlane::attach`] once let in.
    fn accept<'a>(&'a self, offer_sdp: &'a str) -> BoxFuture<'a, Result<Offered, EngineError>>;
    fn attach<'a>(&'a self, member: &'a str, offered: Offered) -> BoxFuture<'a, Result<Connected, EngineError>>;
}

/// Opens the media plane of each live hearing.
pub trait MediaPlanes: Send + Sync {
    /// The plane of a hearing named `label` (for the operator's log), with `slots` receive slots, recording with
    /// `recorders` and masking protected members' media with `maskers`.
    fn open(
        &self,
        label: &str,
        slots: usize,
        recorders: Arc<dyn RecorderFactory>,
        maskers: Arc<dyn MaskerFactory>,
    ) -> Arc<dyn MediaPlane>;
}

/// Each hearing's plane is a WebRTC room ([`Room`]) on one engine.
#[derive(Clone)]
pub struct WebRtcRooms {
    engine: Arc<WebRtcEngine>,
}

impl WebRtcRooms {
    pub fn new(engine: Arc<WebRtcEngine>) -> Self {
        Self { engine }
    }
}

impl std::fmt::Debug for WebRtcRooms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebRtcRooms").finish_non_exhaustive()
    }
}

impl MediaPlanes for WebRtcRooms {
    fn open(
        &self,
        label: &str,
        slots: usize,
        recorders: Arc<dyn RecorderFactory>,
        maskers: Arc<dyn MaskerFactory>,
    ) -> Arc<dyn MediaPlane> {
        Arc::new(Room::new(self.engine.clone(), slots, recorders).with_maskers(maskers).with_label(label))
    }
}

impl MediaPlane for Room {
    fn slots(&self) -> usize {
        Room::slots(self)
    }

    fn add_member(&self, member: &str, slot: usize) {
        Room::add_member(self, member, slot);
    }

    fn member_count(&self) -> usize {
        Room::member_count(self)
    }

    fn remove_member<'a>(&'a self, member: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(Room::remove_member(self, member))
    }

    fn disconnect<'a>(&'a self, member: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(Room::disconnect(self, member))
    }

    fn set_zone(&self, member: &str, zone: Zone) {
        Room::set_zone(self, member, zone);
    }

    fn set_muted(&self, member: &str, muted: bool) {
        Room::set_muted(self, member, muted);
    }

    fn set_recorded(&self, member: &str, recorded: bool) {
        Room::set_recorded(self, member, recorded);
    }

    fn set_audio_from(&self, member: &str, from: Option<AudioFrom>) {
        Room::set_audio_from(self, member, from);
    }

    fn set_protection(&self, member: &str, protection: Option<Protection>) {
        Room::set_protection(self, member, protection);
    }

    fn set_video_from(&self, member: &str, slots: Option<BTreeSet<usize>>) {
        Room::set_video_from(self, member, slots);
    }

    fn packets_received(&self, member: &str) -> Option<u64> {
        Room::packets_received(self, member)
    }

    fn counters(&self) -> RoomCounters {
        Room::counters(self)
    }

    fn finish_recordings(&self) -> BoxFuture<'_, Vec<(String, RecordingSummary)>> {
        Box::pin(Room::finish_recordings(self))
    }

    fn connect<'a>(&'a self, member: &'a str, offer_sdp: &'a str) -> BoxFuture<'a, Result<Connected, EngineError>> {
        Box::pin(Room::connect(self, member, offer_sdp))
    }

    fn accept<'a>(&'a self, offer_sdp: &'a str) -> BoxFuture<'a, Result<Offered, EngineError>> {
        Box::pin(Room::accept(self, offer_sdp))
    }

    fn attach<'a>(&'a self, member: &'a str, offered: Offered) -> BoxFuture<'a, Result<Connected, EngineError>> {
        Box::pin(Room::attach(self, member, offered))
    }
}
