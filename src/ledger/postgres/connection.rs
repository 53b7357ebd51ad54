//! Connections to the ledger's database. A lost connection is not a storage fault:
//! PostgreSQL keeps the books durable on its side, and a transaction cut off before
//! its COMMIT was answered either committed or did not (a retry with the same key
//! finds out). So connections are opened again, with back-off, and the requests in
//! between answer `unavailable` instead of waiting.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::{Client, Config, NoTls};

use crate::ledger::LedgerError;

/// How long opening a connection may take before the attempt counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The first wait after a failed attempt, doubled after each one up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub async fn connect(url: &str) -> Result<Client, LedgerError> {
    let mut config: Config = url
        .parse()
        .map_err(|error| LedgerError::Storage(format!("bad ledger URL: {error}")))?;
    config.connect_timeout(CONNECT_TIMEOUT);
    config.keepalives_idle(Duration::from_secs(30));
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "ledger database connection ended");
        }
    });
    Ok(client)
}

/// When the next attempt to connect may be made.
pub struct Backoff {
    next_attempt: Instant,
    delay: Duration,
}

impl Backoff {
    /// The first attempt may be made at `now`.
    pub fn new(now: Instant) -> Backoff {
        Backoff {
            next_attempt: now,
            delay: FIRST_BACKOFF,
        }
    }

    pub fn may_try(&self, now: Instant) -> bool {
        now >= self.next_attempt
    }

    pub fn failed(&mut self, now: Instant) {
        self.next_attempt = now + self.delay;
        self.delay = (self.delay * 2).min(MAX_BACKOFF);
    }

    pub fn succeeded(&mut self) {
        self.delay = FIRST_BACKOFF;
    }
}

/// A connection for reads, opened again when it was lost.
pub struct Reader {
    url: String,
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
}

impl Reader {
    pub fn new(url: &str, client: Client) -> Reader {
        Reader {
            url: url.to_owned(),
            client: tokio::sync::Mutex::new(Some(Arc::new(client))),
        }
    }

    /// The open connection, or a new one if it was lost.
    pub async fn client(&self) -> Result<Arc<Client>, LedgerError> {
        let mut client = self.client.lock().await;
        match &*client {
            Some(open) if !open.is_closed() => Ok(open.clone()),
            _ => {
                let fresh = Arc::new(connect(&self.url).await?);
                *client = Some(fresh.clone());
                Ok(fresh)
            }
        }
    }
}

impl From<tokio_postgres::Error> for LedgerError {
    fn from(error: tokio_postgres::Error) -> Self {
        LedgerError::Unavailable(format!("the ledger database: {}", describe(&error)))
    }
}

/// The error with the database's own message, which `Display` leaves out.
pub fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{error}: {} ({})", db.message(), db.code().code()),
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_back_off_doubling_up_to_a_cap_and_start_over_after_a_success() {
        let start = Instant::now();
        let mut backoff = Backoff::new(start);
        assert!(backoff.may_try(start));
        backoff.failed(start);
        assert!(!backoff.may_try(start + Duration::from_millis(99)));
        assert!(backoff.may_try(start + FIRST_BACKOFF));
        for _ in 0..10 {
            backoff.failed(start);
        }
        assert!(backoff.may_try(start + MAX_BACKOFF));
        assert!(!backoff.may_try(start + MAX_BACKOFF - Duration::from_millis(1)));
        backoff.succeeded();
        backoff.failed(start);
        assert!(backoff.may_try(start + FIRST_BACKOFF));
    }
}
