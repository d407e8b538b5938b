//! What every handler shares ([`AppState`]): the evidence service, the live hearings, and the parts of this
//! gateway that serve HTTP.

use axum::Extension;
use custodia_service::gateway::{Gateway, GatewayError};
use custodia_service::identity::{self, Principal};

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    pub gateway: Gateway,
    /// Mark cookies `Secure` (when serving HTTPS).
    pub secure_cookies: bool,
    /// Live hearings and their rooms ([`custodia_hearings::live`]).
    pub hearings: std::sync::Arc<custodia_hearings::live::Hearings>,
    /// STUN/TURN servers and the TURN credential issuer ([`custodia_hearings::turn`]), for the API, WHIP and the hearing room.
    pub ice_servers: std::sync::Arc<custodia_hearings::turn::IceServers>,
    /// Recent failed sign-ins and the password-hashing budget ([`identity::SignInThrottle`]).
    pub sign_ins: std::sync::Arc<identity::SignInThrottle>,
    /// This gateway as a witness of its partners' logs ([`crate::witness_api`]).
    pub witness: std::sync::Arc<crate::witness_api::Witness>,
    /// The cosignatures collected on this gateway's own checkpoints, and what `/log/checkpoint` publishes
    /// ([`crate::cosigning`]).
    pub cosigning: std::sync::Arc<crate::cosigning::Cosigning>,
    /// Evidence leaving at once, per account and in all ([`crate::outflow::Outflow`]).
    pub outflow: std::sync::Arc<crate::outflow::Outflow>,
    /// Partner gateways: who is pinned, and how this gateway signs its requests to them ([`crate::partner_api`]).
    pub partnering: std::sync::Arc<crate::partner_api::Partnering>,
    /// Transfers to and from partner gateways ([`custodia_service::transfers`]).
    pub transfers: std::sync::Arc<custodia_service::transfers::Transfers>,
    /// What `/metrics` shows of this process's requests ([`crate::metrics`]).
    pub metrics: std::sync::Arc<crate::request_metrics::Metrics>,
}

/// What a partner's signed request is checked against ([`crate::partner_api::FromPartner`]).
impl axum::extract::FromRef<AppState> for std::sync::Arc<crate::partner_api::Partnering> {
    fn from_ref(state: &AppState) -> Self {
        state.partnering.clone()
    }
}

impl AppState {
    /// A place for one more stream of evidence leaving for `caller`, held until the returned value is dropped:
    /// taken before anything is recorded, so that a refusal leaves no record of an access that never happened, and
    /// after the step is found permitted (the gateway calls it then: [`Gateway::download`]'s check,
    /// [`Gateway::export_leaving`]), so that a request that will be refused never takes a place, nor closes another
    /// reader's stream to make one.
    /// The stream leaves over `connection`, which is closed if a newcomer takes its place while it reads too
    /// slowly ([`crate::outflow::Outflow`]).
    pub(crate) fn start_outflow(
        &self,
        caller: &Principal,
        connection: Option<Extension<crate::listen::Connection>>,
        stream: crate::outflow::Stream,
    ) -> Result<crate::outflow::Outflowing, GatewayError> {
        let connection = connection.map(|Extension(connection)| connection);
        self.outflow.start(caller.account_id(), stream, connection).map_err(GatewayError::TooMany)
    }
}
