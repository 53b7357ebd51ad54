//! What the books answer about creators' money: a payee's accounts (held, available,
//! pending, paid), the transfers that moved them (statements), a buyer's gifts (what a
//! refund traces its coins to), and the payouts waiting for the payment system.

use async_trait::async_trait;

use super::{Account, LedgerError, Payee, TransferMeta};
use crate::money::Minor;

/// A transfer as the books hold it.
#[derive(Debug, Clone, PartialEq)]
pub struct Booked {
    pub transfer_id: i64,
    /// When it was booked (ms since the Unix epoch, by the server's clock).
    pub created_ms: u64,
    pub meta: TransferMeta,
    pub legs: Vec<(Account, Minor)>,
}

impl Booked {
    /// A transfer read back from the books; one without legs is a damaged ledger,
    /// never an empty transfer.
    pub fn read(
        transfer_id: i64,
        created_ms: u64,
        meta: TransferMeta,
        legs: Option<Vec<(Account, Minor)>>,
    ) -> Result<Booked, LedgerError> {
        match legs {
            Some(legs) if !legs.is_empty() => Ok(Booked {
                transfer_id,
                created_ms,
                meta,
                legs,
            }),
            _ => Err(LedgerError::Storage(format!(
                "transfer {transfer_id} has no legs"
            ))),
        }
    }
}

#[async_trait]
pub trait CreatorBooks: Send + Sync {
    /// Every account of `payee` the books hold (held by day, available, each payout,
    /// paid out), with its balance.
    async fn payee_accounts(&self, payee: &Payee) -> Result<Vec<(Account, Minor)>, LedgerError>;
    /// The balances of `accounts` (creators' accounts, `Traced` counters, `Losses`), in
    /// their order (zero for one never used).
    async fn balances_of(&self, accounts: Vec<Account>) -> Result<Vec<Minor>, LedgerError>;
    /// `user`'s gifts and questions, newest first: at most `limit`, booked before
    /// transfer `before` if given.
    async fn paid_by(
        &self,
        user: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Booked>, LedgerError>;
    /// Every transfer that moved one of `payee`'s accounts, booked in
    /// `[from_ms, to_ms)`, oldest first.
    async fn statement(
        &self,
        payee: &Payee,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<Booked>, LedgerError>;
    /// Every payout asked for and not yet settled: its account and amount.
    async fn pending_payouts(&self) -> Result<Vec<(Account, Minor)>, LedgerError>;
}

/// The idempotency "user" payouts are booked under (no user id has a colon): a
/// payout is keyed by its id, its settlement by `{id}:settled`.
pub const PAYOUT_KEYS: &str = "payout:";
