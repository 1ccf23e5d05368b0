//! One ACME issuance (RFC 8555 §7.4): the account, an order for the configured domains, their
//! HTTP-01 challenges answered by the plain listener, finalization and the certificate.

use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Error, Identifier, NewAccount, NewOrder, Order,
    OrderStatus, RetryPolicy,
};
use tracing::{info, warn};

use super::client::AcmeHttp;
use super::names_of;
use super::store::StateDir;
use crate::config::AcmeConfig;
use crate::error::error_chain;
use crate::tls::{from_pem, Challenges, Loaded, Source};

/// The problem type of a request signed by an account the server does not know (RFC 8555 §7.3.1):
/// a test CA restarted, or an account deleted.
const ACCOUNT_GONE: &str = "urn:ietf:params:acme:error:accountDoesNotExist";

/// How the order's state is polled while the server validates and then issues: from 500 ms,
/// growing by half each time, for at most two minutes.
const POLL: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(500))
    .backoff(1.5)
    .timeout(Duration::from_secs(120));

/// What every issuance uses: the configuration, the HTTP client, the state directory and the
/// account once known.
pub(super) struct Issuer {
    config: AcmeConfig,
    http: AcmeHttp,
    store: StateDir,
    account: Option<Account>,
}

impl Issuer {
    pub(super) fn new(config: AcmeConfig, http: AcmeHttp, store: StateDir) -> Issuer {
        Issuer {
            config,
            http,
            store,
            account: None,
        }
    }

    /// Orders, validates and stores a certificate for the configured domains, answering the
    /// challenges through `challenges` until done (or dropped). The error says which step failed
    /// and why, with the server's problem document when it sent one.
    pub(super) async fn issue(&mut self, challenges: &Challenges) -> Result<Loaded, String> {
        let account = self.account().await?;
        let identifiers: Vec<Identifier> = self
            .config
            .domains
            .iter()
            .map(|d| Identifier::Dns(d.clone()))
            .collect();
        let new_order = NewOrder::new(&identifiers);
        let mut order = match account.new_order(&new_order).await {
            Err(Error::Api(problem)) if problem.r#type.as_deref() == Some(ACCOUNT_GONE) => {
                warn!(account = account.id(), problem = %problem, "the ACME server does not know the stored account; creating a new one");
                self.account = None;
                self.create_account(None).await?.new_order(&new_order).await
            }
            order => order,
        }
        .map_err(|e| format!("new order: {}", error_chain(&e)))?;
        info!(order = order.url(), domains = ?self.config.domains, "ACME order created");
        let mut answering = Answering::new(challenges);
        authorize(&mut order, &mut answering).await?;
        let status = order
            .poll_ready(&POLL)
            .await
            .map_err(|e| format!("waiting for validation: {}", error_chain(&e)))?;
        if status != OrderStatus::Ready {
            return Err(format!(
                "order {status:?}: {}",
                invalid_reason(&mut order).await
            ));
        }
        info!(order = order.url(), "ACME order ready; finalizing");
        let key_pem = order
            .finalize()
            .await
            .map_err(|e| format!("finalize: {}", error_chain(&e)))?;
        let chain_pem = order
            .poll_certificate(&POLL)
            .await
            .map_err(|e| format!("certificate: {}", error_chain(&e)))?;
        drop(answering);
        let loaded = from_pem(chain_pem.as_bytes(), key_pem.as_bytes(), Source::Acme)
            .map_err(|(_, reason)| format!("the issued certificate is unusable: {reason}"))?;
        if names_of(&loaded) != names_of_config(&self.config) {
            return Err(format!(
                "the issued certificate is for {:?}, not {:?}",
                loaded.names, self.config.domains
            ));
        }
        self.store.save_certificate(&chain_pem, &key_pem)?;
        Ok(loaded)
    }

    /// The account: the one already in use, else the one in `state_dir` (when made at the same
    /// directory URL), else a new one.
    async fn account(&mut self) -> Result<Account, String> {
        if let Some(account) = &self.account {
            return Ok(account.clone());
        }
        let path = self.store.path(super::store::ACCOUNT);
        match self.store.account()? {
            Some((directory, credentials)) if directory == self.config.directory => {
                let account = Account::builder_with_http(Box::new(self.http.clone()))
                    .from_credentials(credentials)
                    .await
                    .map_err(|e| format!("account from {}: {}", path.display(), error_chain(&e)))?;
                info!(account = account.id(), file = %path.display(), "ACME account loaded");
                self.account = Some(account.clone());
                Ok(account)
            }
            Some((directory, _)) => self.create_account(Some(&directory)).await,
            None => self.create_account(None).await,
        }
    }

    /// Creates an account (with `email` as its contact) and stores it at once, replacing any
    /// (made at `old_directory`, if known).
    async fn create_account(&mut self, old_directory: Option<&str>) -> Result<Account, String> {
        let path = self.store.path(super::store::ACCOUNT);
        if let Some(old) = old_directory {
            info!(file = %path.display(), old, new = self.config.directory, "ACME directory changed; creating a new account");
        }
        let contact = self.config.email.as_ref().map(|e| format!("mailto:{e}"));
        let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
        let new = NewAccount {
            contact: &contact,
            terms_of_service_agreed: true,
            only_return_existing: false,
        };
        let (account, credentials) = Account::builder_with_http(Box::new(self.http.clone()))
            .create(&new, self.config.directory.clone(), None)
            .await
            .map_err(|e| format!("new account: {}", error_chain(&e)))?;
        self.store.save_account(&credentials)?;
        info!(account = account.id(), file = %path.display(), "ACME account created");
        self.account = Some(account.clone());
        Ok(account)
    }
}

/// The configured domains as a certificate's names compare.
fn names_of_config(config: &AcmeConfig) -> Vec<String> {
    let mut names: Vec<String> = config
        .domains
        .iter()
        .map(|d| d.to_ascii_lowercase())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Whether `loaded` is for exactly the configured domains.
pub(super) fn for_domains(loaded: &Loaded, config: &AcmeConfig) -> bool {
    names_of(loaded) == names_of_config(config)
}

/// Answers each pending authorization's HTTP-01 challenge and tells the server it is ready.
async fn authorize(order: &mut Order, answering: &mut Answering<'_>) -> Result<(), String> {
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.map_err(|e| format!("authorization: {}", error_chain(&e)))?;
        let domain = authz.identifier().to_string();
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => {
                info!(domain, "ACME authorization already valid");
                continue;
            }
            other => return Err(format!("authorization for {domain} is {other:?}")),
        }
        let mut challenge = authz
            .challenge(ChallengeType::Http01)
            .ok_or_else(|| format!("the server offers no HTTP-01 challenge for {domain}"))?;
        let key_authorization = challenge.key_authorization();
        answering.insert(&challenge.token, key_authorization.as_str());
        info!(
            domain,
            token = challenge.token,
            "answering the ACME HTTP-01 challenge"
        );
        challenge
            .set_ready()
            .await
            .map_err(|e| format!("challenge for {domain}: {}", error_chain(&e)))?;
    }
    Ok(())
}

/// Why an order became invalid: each failed authorization's challenge error, as the server
/// describes it.
async fn invalid_reason(order: &mut Order) -> String {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        let domain = authz.identifier().to_string();
        let Ok(state) = authz.refresh().await else {
            continue;
        };
        if state.status == AuthorizationStatus::Valid {
            continue;
        }
        let problems = state
            .challenges
            .iter()
            .filter_map(|c| c.error.as_ref().map(|p| format!("{:?}: {p}", c.r#type)));
        for problem in problems {
            reasons.push(format!("{domain}: {problem}"));
        }
    }
    if reasons.is_empty() {
        "the server gave no reason".to_string()
    } else {
        reasons.join("; ")
    }
}

/// The challenges this issuance answers, withdrawn when it ends however it ends.
struct Answering<'a> {
    challenges: &'a Challenges,
    tokens: Vec<String>,
}

impl<'a> Answering<'a> {
    fn new(challenges: &'a Challenges) -> Answering<'a> {
        Answering {
            challenges,
            tokens: Vec::new(),
        }
    }

    fn insert(&mut self, token: &str, key_authorization: &str) {
        self.challenges.insert(token, key_authorization);
        self.tokens.push(token.to_string());
    }
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        for token in &self.tokens {
            self.challenges.remove(token);
        }
    }
}
