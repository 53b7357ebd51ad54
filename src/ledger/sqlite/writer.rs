//! Group commit: one writer thread owns the write connection. It takes every request
//! queued, decides each by the rulebook on balances it keeps in memory (so deciding
//! never reads the disk), writes the batch in one transaction, commits once — one
//! fsync for the batch — and only then answers. A failed write or commit is a storage
//! fault: the batch is answered `unavailable`, the fault is tripped and the writer
//! stops; requests still queued are dropped, which answers them `unavailable` too.

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::Instant;

use rusqlite::{params, Connection, Transaction, TransactionBehavior};

use super::lines::PendingLines;
use super::reads::find_prior;
use super::wal::{restart_wal, RestartWal};
use super::Statements;
use crate::clock::Clock;
use crate::ledger::rules::{self, Balances, BalancesMut, Plan};
use crate::ledger::{
    answer_batch, refuse_batch, take_batch, Account, Committed, Earnings, Job, LedgerError,
    StorageFault, TransferRequest,
};
use crate::money::Minor;

/// Requests one transaction takes at most.
const MAX_BATCH: usize = 4096;

pub struct Writer {
    pub connection: Connection,
    /// Every account's balance as committed.
    pub balances: HashMap<Account, Minor>,
    pub statements: Statements,
    pub restart_wal: RestartWal,
    pub fault: StorageFault,
    /// What transfers are dated by.
    pub clock: Clock,
    /// The date of the last batch: a transfer is never dated before the one booked
    /// ahead of it, even if the clock steps back, so dates and ids run in the same
    /// order (`pk.rs` finds a period's transfers by their ids).
    pub dated: u64,
    /// Statements' lines not yet written.
    pub lines: PendingLines,
}

/// The balances a batch decides on: the committed ones and the batch's changes so far.
struct BatchBooks<'a> {
    committed: &'a HashMap<Account, Minor>,
    pending: HashMap<Account, Minor>,
}

impl Balances for BatchBooks<'_> {
    fn balance(&self, account: &Account) -> Minor {
        let committed = self.committed.get(account).copied().unwrap_or_default();
        committed + self.pending.get(account).copied().unwrap_or_default()
    }
}

impl BalancesMut for BatchBooks<'_> {
    fn add(&mut self, account: &Account, delta: Minor) {
        match self.pending.get_mut(account) {
            Some(pending) => *pending += delta,
            None => {
                self.pending.insert(account.clone(), delta);
            }
        }
    }
}

/// What a batch changes in memory, applied only once it has committed.
struct Pending<'a> {
    books: BatchBooks<'a>,
    /// Each paid transfer's part of its broadcaster's statement, by room.
    paid: Vec<(String, Earnings)>,
    lines: &'a mut PendingLines,
}

impl Writer {
    pub fn run(mut self, jobs: mpsc::Receiver<Job>) {
        while let Ok(first) = jobs.recv() {
            let batch = take_batch(first, || jobs.try_recv().ok(), MAX_BATCH);
            match self.commit_batch(&batch) {
                Ok(answers) => answer_batch(batch, answers),
                Err(error) => {
                    let reason = format!("committing a batch: {error}");
                    refuse_batch(batch, || stopped(&reason));
                    self.fault.trip(reason);
                    return;
                }
            }
            if let Err(error) = self.restart_wal_if_asked() {
                self.fault.trip(format!("restarting the WAL: {error}"));
                return;
            }
        }
    }

    fn restart_wal_if_asked(&mut self) -> Result<(), LedgerError> {
        if !self.restart_wal.requested() {
            return Ok(());
        }
        // A reader on the WAL refuses it; the checkpointer asks again later.
        if restart_wal(&self.connection)? {
            crate::metrics::ledger_wal_restarted();
        } else {
            tracing::debug!("ledger WAL not restarted: a reader was on it");
        }
        self.restart_wal.done();
        Ok(())
    }

    /// Applies every request in one transaction and commits once. An error is a
    /// storage fault: nothing of the batch is in the books, nor in memory.
    fn commit_batch(
        &mut self,
        batch: &[Job],
    ) -> Result<Vec<Result<Committed, LedgerError>>, LedgerError> {
        let mut pending = Pending {
            books: BatchBooks {
                committed: &self.balances,
                pending: HashMap::new(),
            },
            paid: Vec::new(),
            lines: &mut self.lines,
        };
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let created_ms = self.clock.now_ms().max(self.dated);
        self.dated = created_ms;
        let answers = batch
            .iter()
            .map(|job| book(&transaction, &mut pending, &job.request, created_ms))
            .collect::<Result<Vec<_>, _>>()?;
        pending.lines.write_if_due(&transaction, Instant::now())?;
        transaction.commit()?;
        let Pending { books, paid, .. } = pending;
        let mut creators = self.statements.lock().expect("creators' books lock");
        for (account, delta) in books.pending {
            creators.add(&account, delta);
            *self.balances.entry(account).or_default() += delta;
        }
        for (room, part) in paid {
            creators.statements.entry(room).or_default().merge(&part);
        }
        Ok(answers)
    }
}

fn stopped(reason: &str) -> LedgerError {
    LedgerError::Unavailable(format!(
        "the ledger stopped after a storage fault ({reason})"
    ))
}

/// Decides one request by the rulebook and writes it inside the batch's transaction.
/// The outer error is only ever a storage failure, which aborts the whole batch.
///
/// A key is looked up only when the plan is refused or the insert finds it taken: the
/// insert checks the unique index anyway, so a first request costs no lookup.
fn book(
    transaction: &Transaction<'_>,
    pending: &mut Pending<'_>,
    request: &TransferRequest,
    created_ms: u64,
) -> Result<Result<Committed, LedgerError>, LedgerError> {
    let planned = rules::plan(request, &pending.books);
    let plan = match planned {
        Ok(plan) => plan,
        Err(refusal) => {
            let prior = match &request.idempotency {
                Some(key) => find_prior(transaction, &key.user, &key.key)?,
                None => None,
            };
            return Ok(rules::refused(request, prior, refusal));
        }
    };
    let keys: Vec<String> = plan
        .legs()
        .iter()
        .map(|(account, _)| account.key())
        .collect();
    let Some(transfer_id) = insert(transaction, request, &plan, &keys, created_ms)? else {
        let key = request
            .idempotency
            .as_ref()
            .expect("only keyed inserts conflict");
        let prior = find_prior(transaction, &key.user, &key.key)?
            .ok_or_else(|| LedgerError::Storage("a taken key holds no transfer".into()))?;
        return Ok(rules::retried(request, prior));
    };
    plan.apply(&mut pending.books);
    pending.lines.booked(transfer_id, plan.legs(), keys);
    if let (Some(room), true) = (plan.meta().room(), plan.meta().kind().is_paid()) {
        pending
            .paid
            .push((room.to_owned(), Earnings::of(room, plan.legs())));
    }
    Ok(Ok(Committed {
        transfer_id,
        duplicate: false,
        fingerprint: request.fingerprint.clone(),
        meta: plan.meta().clone(),
    }))
}

/// Writes the transfer and its legs; `None` when its idempotency key is taken.
fn insert(
    transaction: &Transaction<'_>,
    request: &TransferRequest,
    plan: &Plan<'_>,
    keys: &[String],
    created_ms: u64,
) -> Result<Option<i64>, LedgerError> {
    let (user, key) = request.idempotency.as_ref().map_or((None, None), |k| {
        (Some(k.user.as_str()), Some(k.key.as_str()))
    });
    let meta = plan.meta();
    let inserted = transaction
        .prepare_cached(
            "INSERT INTO transfers (kind, room, created_ms, idem_user, idem_key, fingerprint, meta)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (idem_user, idem_key) DO NOTHING",
        )?
        .execute(params![
            meta.kind().as_str(),
            meta.room(),
            created_ms as i64,
            user,
            key,
            request.fingerprint,
            meta.to_json()
        ])?;
    if inserted == 0 {
        return Ok(None);
    }
    let transfer_id = transaction.last_insert_rowid();
    let mut insert_leg = transaction.prepare_cached(
        "INSERT INTO legs (transfer_id, n, account, amount) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (n, (_, amount)) in plan.legs().iter().enumerate() {
        insert_leg.execute(params![transfer_id, n as i64, keys[n], amount.get()])?;
    }
    Ok(Some(transfer_id))
}
