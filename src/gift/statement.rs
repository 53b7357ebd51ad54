//! A payee's statement: one line per transfer that moved their earnings (gifts and
//! questions with every leg of their split, refunds' clawbacks, payouts and their
//! settlements), and totals. Pure: built from the transfers the books hand back.

use serde::Serialize;

use crate::ledger::facts::TransferMeta;
use crate::ledger::{Account, Booked, Payee};
use crate::money::{Coins, Minor};

/// One transfer on a payee's statement. Amounts in minor units (1/100 coin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatementLine {
    /// When it was booked, RFC 3339 in UTC.
    pub date: String,
    /// `gift`, `question`, `clawback`, `payout`, `payout_paid` or `payout_failed`.
    pub kind: &'static str,
    /// The gift's or question's event id, the refunded purchase's id, or the payout's.
    pub reference: String,
    /// The room a gift or question was paid in.
    pub room: Option<String>,
    /// Who paid it (or whose refund it was).
    pub sender: Option<String>,
    /// A gift's or question's whole value, in coins.
    pub coins: u64,
    /// Every leg of a gift's split (a clawback's: what came back of this payee's).
    pub app_store: Minor,
    pub broadcaster: Minor,
    pub agency: Minor,
    pub platform: Minor,
    /// What the line changed in this payee's earnings (held and available).
    pub net: Minor,
}

/// The sums of a statement's columns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Gifts and questions.
    pub gifts: u64,
    pub coins: u64,
    pub app_store: Minor,
    pub broadcaster: Minor,
    pub agency: Minor,
    pub platform: Minor,
    /// Taken back by refunds (negative or zero).
    pub clawed_back: Minor,
    /// Moved into payouts, less those that failed (negative or zero).
    pub paid_out: Minor,
    pub net: Minor,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Statement {
    pub lines: Vec<StatementLine>,
    pub totals: Totals,
}

/// The CSV header, in the order of `StatementLine`'s fields.
const CSV_HEADER: [&str; 11] = [
    "date",
    "kind",
    "reference",
    "room",
    "sender",
    "coins",
    "app_store",
    "broadcaster",
    "agency",
    "platform",
    "net",
];

impl Statement {
    /// `payee`'s statement of `booked` (oldest first): the transfers that moved their
    /// accounts.
    pub fn of(payee: &Payee, booked: &[Booked]) -> Statement {
        let mut statement = Statement::default();
        for transfer in booked {
            let Some(line) = line(payee, transfer) else {
                continue;
            };
            let totals = &mut statement.totals;
            match line.kind {
                "gift" | "question" => totals.gifts += 1,
                "clawback" => totals.clawed_back += line.net,
                _ => totals.paid_out += line.net,
            }
            totals.coins += line.coins;
            totals.app_store += line.app_store;
            totals.broadcaster += line.broadcaster;
            totals.agency += line.agency;
            totals.platform += line.platform;
            totals.net += line.net;
            statement.lines.push(line);
        }
        statement
    }

    /// The lines as CSV, with a header row.
    pub fn to_csv(&self) -> Vec<u8> {
        let mut writer = csv::Writer::from_writer(Vec::new());
        let rows = std::iter::once(CSV_HEADER.map(String::from).to_vec())
            .chain(self.lines.iter().map(StatementLine::fields));
        for row in rows {
            writer.write_record(&row).expect("writing CSV to memory");
        }
        writer.into_inner().expect("writing CSV to memory")
    }
}

impl StatementLine {
    fn fields(&self) -> Vec<String> {
        let amounts = [
            self.app_store,
            self.broadcaster,
            self.agency,
            self.platform,
            self.net,
        ];
        let mut fields = vec![
            self.date.clone(),
            self.kind.to_owned(),
            self.reference.clone(),
            self.room.clone().unwrap_or_default(),
            self.sender.clone().unwrap_or_default(),
            self.coins.to_string(),
        ];
        fields.extend(amounts.iter().map(|a| a.get().to_string()));
        fields
    }
}

/// The statement line of one transfer, if it is one a statement shows.
fn line(payee: &Payee, transfer: &Booked) -> Option<StatementLine> {
    let net: Minor = (transfer.legs.iter())
        .filter(|(account, _)| earns(payee, account))
        .map(|(_, amount)| *amount)
        .sum();
    let mut line = StatementLine {
        date: rfc3339(transfer.created_ms),
        kind: "",
        reference: String::new(),
        room: None,
        sender: None,
        coins: 0,
        app_store: Minor::ZERO,
        broadcaster: Minor::ZERO,
        agency: Minor::ZERO,
        platform: Minor::ZERO,
        net,
    };
    match &transfer.meta {
        TransferMeta::Gift(gift) => {
            let (id, from) = (&gift.id, &gift.from.id);
            paid(
                &mut line,
                "gift",
                id,
                &gift.room,
                from,
                gift.coins,
                &transfer.legs,
            );
        }
        TransferMeta::Question(question) => {
            let (id, from) = (&question.id, &question.from.id);
            paid(
                &mut line,
                "question",
                id,
                &question.room,
                from,
                question.coins,
                &transfer.legs,
            );
        }
        TransferMeta::PurchaseRefund(refund) => {
            (line.kind, line.reference) = ("clawback", refund.purchase_id.clone());
            line.sender = Some(refund.user.clone());
            let own = transfer.legs.iter().filter(|(a, _)| earns(payee, a));
            split_columns(&mut line, &own.cloned().collect::<Vec<_>>());
        }
        TransferMeta::Payout(payout) => {
            (line.kind, line.reference) = ("payout", payout.payout_id.clone());
        }
        TransferMeta::PayoutSettled(settled) => {
            line.kind = if settled.paid {
                "payout_paid"
            } else {
                "payout_failed"
            };
            line.reference = settled.payout_id.clone();
        }
        _ => return None,
    }
    Some(line)
}

/// Fills in a gift's or question's line.
fn paid(
    line: &mut StatementLine,
    kind: &'static str,
    id: &str,
    room: &str,
    from: &str,
    coins: Coins,
    legs: &[(Account, Minor)],
) {
    (line.kind, line.reference) = (kind, id.to_owned());
    (line.room, line.sender, line.coins) =
        (Some(room.to_owned()), Some(from.to_owned()), coins.get());
    split_columns(line, legs);
}

/// Whether `account` holds `payee`'s earnings (held or available).
fn earns(payee: &Payee, account: &Account) -> bool {
    match account {
        Account::Held(_, owner) => owner == payee,
        other => Payee::of_available(other).as_ref() == Some(payee),
    }
}

/// Sorts legs into the split's columns.
fn split_columns(line: &mut StatementLine, legs: &[(Account, Minor)]) {
    for (account, amount) in legs {
        let column = match account {
            Account::AppStore => &mut line.app_store,
            Account::Platform => &mut line.platform,
            Account::Earnings(_) | Account::Held(_, Payee::Broadcaster(_)) => &mut line.broadcaster,
            Account::Agency(_) | Account::Held(_, Payee::Agency(_)) => &mut line.agency,
            _ => continue,
        };
        *column += *amount;
    }
}

fn rfc3339(ms: u64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .expect("a clock within time's range");
    at.format(&time::format_description::well_known::Rfc3339)
        .expect("a date in range formats")
}
