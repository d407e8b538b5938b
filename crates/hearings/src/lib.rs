//! The live hearings: the adapter around `custodia-hearing`'s state machine ([`live`]: the registry of hearings
//! this gateway holds, their journals and leases, the custody records their steps and output leave), the typed
//! messages it sends into their rooms ([`room_messages`]), who takes part as the court wrote them down ([`people`]:
//! display names, the hearing's contact, language hints), the media plane it drives ([`media_plane`]: a WebRTC
//! room in production), a protected witness's media masked in child processes ([`masking`]), hearing output that
//! could not enter custody ([`quarantine`]), the court's wording of rights notices and oaths ([`texts`]), and
//! STUN/TURN servers with short-lived credentials for the participants' WebRTC clients ([`turn`]).
//!
//! It knows nothing of HTTP: `custodia-server` routes the console, the room's WebSocket and WHIP to it. It reaches
//! the evidence only through `custodia-service`.

pub mod live;
pub mod masking;
pub mod media_plane;
pub mod people;
pub mod quarantine;
pub mod room_messages;
pub mod texts;
pub mod turn;
