//! The evidence service: every operation on evidence, cases and accounts, in the order that keeps custody whole
//! ([`gateway`]), who is calling ([`identity`]: accounts, sessions, API tokens, and the throttle on sign-ins), what
//! each caller may spend ([`budget`]), repeated refusals counted into one record ([`refusals`]), and FFmpeg
//! probing in a child process under limits ([`probe`]).
//!
//! It knows nothing of HTTP or WebRTC: `custodia-server` turns its operations into routes and its errors into
//! problems, and runs the live hearings. Its callers hold a [`identity::Principal`], which carries no secret; its
//! errors ([`gateway::GatewayError`]) keep their sources and say which may pass if tried again.

pub mod budget;
pub mod chunk_buffers;
pub mod clock;
pub mod directory;
pub mod error;
pub mod gateway;
pub mod identity;
pub mod ids;
pub mod log_entries;
pub mod network;
pub mod partner_client;
pub mod probe;
pub mod refusals;
pub mod sessions;
pub mod transfers;
pub mod uploads;
