//! Signing in and out, sessions and API tokens: the gateway's operations on who is calling, over the rules of
//! [`crate::identity`].

use custodia_catalog::{Account, ApiToken};

use crate::error::{GatewayError, Result};
use crate::gateway::{Gateway, new_id};
use crate::identity::{
    Channel, Principal, SESSION_SECONDS, Scope, SignInThrottle, TOKEN_PREFIX, check_password, new_secret, secret_digest,
};
use crate::network::ClientNetwork;

impl Gateway {
    /// Checks `username`'s `password` within `throttle` (see [`check_password`]): the account, if it is right.
    pub async fn sign_in(
        &self,
        throttle: &SignInThrottle,
        username: &str,
        password: &str,
        peer: ClientNetwork,
        device_cookies: &[String],
    ) -> Result<Account> {
        check_password(self.catalog(), self.clock(), throttle, username, password, peer, device_cookies).await
    }

    /// Starts a session for `account`, signed in: its secret, for the cookie.
    pub async fn start_session(&self, account: &Account) -> Result<String> {
        let secret = new_secret();
        self.catalog()
            .create_session(&secret_digest(&secret), &account.id, self.clock().unix_seconds() + SESSION_SECONDS)
            .await?;
        Ok(secret)
    }

    /// A new API token of `caller`'s, with `scopes`, good for `ttl_seconds`: its record and its secret (shown once).
    /// Only a signed-in person makes tokens.
    pub async fn issue_token(
        &self,
        caller: &Principal,
        scopes: Vec<Scope>,
        ttl_seconds: i64,
    ) -> Result<(ApiToken, String)> {
        if *caller.channel() != Channel::Session {
            return Err(GatewayError::SessionOnly("make API tokens"));
        }
        if scopes.is_empty() || !(60..=366 * 24 * 3600).contains(&ttl_seconds) {
            return Err(GatewayError::BadInput {
                field: "token",
                reason: "name at least one scope, and a lifetime between 60 seconds and a year".into(),
            });
        }
        let secret = format!("{TOKEN_PREFIX}{}", new_secret());
        let token = ApiToken {
            id: new_id("tok"),
            account_id: caller.account_id().to_owned(),
            scopes: scopes.iter().map(|s| s.name()).collect::<Vec<_>>().join(" "),
            expires_at: self.clock().unix_seconds() + ttl_seconds,
            revoked: false,
        };
        self.catalog().create_api_token(&token, &secret_digest(&secret)).await?;
        Ok((token, secret))
    }

    /// Revokes the API token `id` of `caller`'s account. A signed-in person revokes any of their tokens; a token
    /// revokes only itself (a leaked read-only token must not end the account's other machines' access).
    pub async fn revoke_token(&self, caller: &Principal, id: &str) -> Result<()> {
        match caller.channel() {
            Channel::Session => {}
            Channel::Token { id: own, .. } if own == id => {}
            Channel::Token { .. } | Channel::Partner => {
                return Err(GatewayError::SessionOnly("revoke another API token"));
            }
        }
        if self.catalog().revoke_api_token(id, caller.account_id()).await? {
            Ok(())
        } else {
            Err(GatewayError::NotFound(format!("you have no token {id}")))
        }
    }

    /// Ends the session whose secret is `secret`, if there is one.
    pub async fn end_session(&self, secret: &str) -> Result<()> {
        self.catalog().delete_session(&secret_digest(secret)).await?;
        Ok(())
    }

    /// The caller who sends the API token `secret`: refused if it is unknown, revoked or expired, or its account disabled.
    pub async fn principal_from_token(&self, secret: &str) -> Result<Principal> {
        let token = self.catalog().api_token(&secret_digest(secret)).await?.ok_or(GatewayError::Unauthenticated)?;
        if token.revoked {
            return Err(GatewayError::TokenRevoked);
        }
        if token.expires_at <= self.clock().unix_seconds() {
            return Err(GatewayError::TokenExpired);
        }
        let account = self.catalog().active_account(&token.account_id).await?.ok_or(GatewayError::Unauthenticated)?;
        let scopes = token
            .scopes
            .split(' ')
            .filter_map(|name| serde_json::from_value(serde_json::Value::String(name.to_owned())).ok())
            .collect();
        Ok(Principal::new(&account, Channel::Token { id: token.id, scopes }))
    }

    /// The caller whose session's secret is `secret`: refused if it is unknown or expired, or its account disabled.
    pub async fn principal_from_session(&self, secret: &str) -> Result<Principal> {
        let account_id = self
            .catalog()
            .session_account(&secret_digest(secret), self.clock().unix_seconds())
            .await?
            .ok_or(GatewayError::Unauthenticated)?;
        let account = self.catalog().active_account(&account_id).await?.ok_or(GatewayError::Unauthenticated)?;
        Ok(Principal::new(&account, Channel::Session))
    }
}
