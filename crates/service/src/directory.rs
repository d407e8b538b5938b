//! Accounts and cases, as the administration and the members ask for them: who may make, list or disable accounts,
//! make and list cases, see a case and its members, and change who is a member; and the rules a new account's fields
//! meet. Whatever asks (the HTTP API, start-up's first administrator) gets the same checks here. Changing a
//! membership is recorded in custody (`Gateway::change_membership`); the rest is the catalog's alone.

use custodia_catalog::{Account, Case, Member};
use custodia_core::{Action, CaseId, Label, Role};

use crate::error::{GatewayError, Result, bad_input};
use crate::gateway::{Gateway, new_id};
use crate::identity::{Principal, SignInThrottle};

/// A new account's fields. No `Debug`: it holds a password.
pub struct NewAccount<'a> {
    /// 3 to 64 letters, digits, '.', '_', '-' or '@'.
    pub username: String,
    /// Personal data: never in a log or the ledger.
    pub display_name: String,
    /// At least 12 characters; only its hash is kept.
    pub password: &'a str,
    pub jurisdiction: String,
    pub is_admin: bool,
}

/// A case as a member sees it: the caller's role there, and its members.
pub struct CaseView {
    pub case: Case,
    pub role: Role,
    pub members: Vec<Member>,
}

impl std::fmt::Debug for NewAccount<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the password, nor a name: only what says nobody.
        f.debug_struct("NewAccount").field("is_admin", &self.is_admin).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for CaseView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A case's title may name people; its members are accounts.
        f.debug_struct("CaseView")
            .field("role", &self.role)
            .field("members", &self.members.len())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Makes an account after checking its fields, for an administrator (`caller`), or for start-up's first
    /// administrator (`None`: nobody can sign in yet).
    pub async fn create_account(
        &self,
        caller: Option<&Principal>,
        sign_ins: &SignInThrottle,
        new: NewAccount<'_>,
    ) -> Result<Account> {
        if let Some(caller) = caller {
            caller.require_admin("create accounts")?;
        }
        let NewAccount { username, display_name, password, jurisdiction, is_admin } = new;
        if !(3..=64).contains(&username.len())
            || !username.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
        {
            return Err(bad_input("username", "use 3 to 64 letters, digits, '.', '_', '-' or '@'"));
        }
        if password.chars().count() < 12 {
            return Err(bad_input("password", "use at least 12 characters"));
        }
        Label::new(display_name.clone()).map_err(|err| bad_input("display_name", err))?;
        Label::new(jurisdiction.clone()).map_err(|err| bad_input("jurisdiction", err))?;
        let account = Account {
            id: new_id("acct"),
            username,
            display_name,
            password_hash: sign_ins.hash_new_password(password).await?,
            is_admin,
            jurisdiction,
        };
        self.catalog().create_account(&account, &self.now().to_string()).await?;
        Ok(account)
    }

    /// Every account, with when it was disabled (if it was), for an administrator. Password hashes stay in the
    /// catalog's rows, which the caller turns into views.
    pub async fn accounts(&self, caller: &Principal) -> Result<Vec<(Account, Option<String>)>> {
        caller.require_admin("list accounts")?;
        Ok(self.catalog().accounts().await?)
    }

    /// Disables account `id` for an administrator other than its holder: it can no longer sign in, and its
    /// sessions and API tokens stop working at once. Its records and memberships stay.
    pub async fn disable_account(&self, caller: &Principal, id: &str) -> Result<()> {
        caller.require_admin("disable accounts")?;
        if id == caller.account_id() {
            return Err(bad_input("account", "an administrator cannot disable their own account"));
        }
        if !self.catalog().disable_account(id, &self.now().to_string()).await? {
            return Err(GatewayError::NotFound(format!("no account {id}")));
        }
        tracing::info!(account = %id, by = %caller.account_id(), "account disabled; its sessions and tokens revoked");
        Ok(())
    }

    /// Makes case `id` with `title`, for an administrator.
    pub async fn create_case(&self, caller: &Principal, id: CaseId, title: Label) -> Result<Case> {
        caller.require_admin("create cases")?;
        let case = Case { id: id.to_string(), title: title.as_str().to_owned(), created_at: self.now().to_string() };
        self.catalog().create_case(&case).await?;
        Ok(case)
    }

    /// Every case, for an administrator (who need not be a member of any).
    pub async fn all_cases(&self, caller: &Principal) -> Result<Vec<Case>> {
        caller.require_admin("list every case")?;
        Ok(self.catalog().cases().await?)
    }

    /// The cases the caller is a member of, with their role in each.
    pub async fn cases_of(&self, caller: &Principal) -> Result<Vec<(Case, String)>> {
        Ok(self.catalog().cases_of(caller.account_id()).await?)
    }

    /// A case and its members, for a member who may view it.
    pub async fn case_view(&self, caller: &Principal, case: &CaseId) -> Result<CaseView> {
        let role = self.authorize(caller, case, Action::ViewCase).await?;
        let row = self.catalog().case(case.as_str()).await?.ok_or_else(|| GatewayError::NotFound("case".into()))?;
        let members = self.catalog().members(case.as_str()).await?;
        Ok(CaseView { case: row, role, members })
    }

    /// Whether `caller` may change the membership of `case`: an administrator (of a case that exists), or a member
    /// whose role manages members.
    pub async fn authorize_membership_change(&self, caller: &Principal, case: &CaseId) -> Result<()> {
        if caller.require_admin("manage members").is_ok() {
            return match self.catalog().case(case.as_str()).await? {
                Some(_) => Ok(()),
                None => Err(GatewayError::NotFound(format!("no case {case}"))),
            };
        }
        self.authorize(caller, case, Action::ManageMembers).await?;
        Ok(())
    }

    /// A case's members, for whoever may change them.
    pub async fn members(&self, caller: &Principal, case: &CaseId) -> Result<Vec<Member>> {
        self.authorize_membership_change(caller, case).await?;
        Ok(self.catalog().members(case.as_str()).await?)
    }

    /// Makes `account` a member of `case` in `role` (or changes its role), for whoever may change the membership:
    /// on the record ([`Gateway::change_membership`]).
    pub async fn set_member(&self, caller: &Principal, case: &CaseId, account: &str, role: Role) -> Result<()> {
        self.authorize_membership_change(caller, case).await?;
        if self.catalog().account(account).await?.is_none() {
            return Err(GatewayError::NotFound(format!("no account {account}")));
        }
        self.change_membership(caller, case, account, Some(role)).await?;
        tracing::info!(case = %case, account = %account, role = %role, by = %caller.account_id(), "membership set");
        Ok(())
    }

    /// Ends `account`'s membership of `case`, for whoever may change the membership: on the record.
    pub async fn remove_member(&self, caller: &Principal, case: &CaseId, account: &str) -> Result<()> {
        self.authorize_membership_change(caller, case).await?;
        match self.change_membership(caller, case, account, None).await? {
            Some(_) => Ok(()),
            None => Err(GatewayError::NotFound(format!("{account} is not a member of {case}"))),
        }
    }
}
