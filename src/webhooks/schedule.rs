//! When a failed delivery is tried again: Standard Webhooks' schedule (at once, then
//! 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h and 24 h: about 3 days), each wait
//! stretched by up to a tenth at random so that receivers coming back are not hit by
//! every sender at once, and never sooner than the receiver's `Retry-After`. Pure:
//! the caller gives the time and the randomness.

use crate::ledger::webhooks::Outcome;

/// The waits after the 1st, 2nd, … failed attempt; after the last, the delivery fails.
pub const RETRY_WAITS_S: [u64; 9] = [
    5,
    5 * 60,
    30 * 60,
    2 * 3600,
    5 * 3600,
    10 * 3600,
    14 * 3600,
    20 * 3600,
    24 * 3600,
];

/// What the receiver did with an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// An HTTP status, with its `Retry-After` in seconds if it gave one.
    Status {
        code: u16,
        retry_after_s: Option<u64>,
    },
    /// No answer: refused, reset, timed out, or a disallowed address.
    Failed,
}

/// After attempt number `attempt` (1 for the first) answered `answer` at `now_ms`;
/// `jitter` in `0.0..1.0`.
pub fn outcome(answer: &Answer, attempt: u32, now_ms: u64, jitter: f64) -> Outcome {
    let retry_after_s = match answer {
        Answer::Status {
            code: 200..=299, ..
        } => return Outcome::Delivered,
        Answer::Status { code: 410, .. } => {
            return Outcome::GiveUp {
                disable: Some("the receiver answered 410 Gone".into()),
            }
        }
        Answer::Status { retry_after_s, .. } => *retry_after_s,
        Answer::Failed => None,
    };
    let Some(wait_s) = RETRY_WAITS_S.get(attempt as usize - 1) else {
        return Outcome::GiveUp {
            disable: Some(format!(
                "every attempt of a delivery failed over the whole retry schedule ({} attempts)",
                RETRY_WAITS_S.len() + 1
            )),
        };
    };
    let wait_ms = (*wait_s as f64 * 1000.0 * (1.0 + jitter.clamp(0.0, 1.0) / 10.0)) as u64;
    let asked_ms = retry_after_s.map_or(0, |s| s.min(24 * 3600) * 1000);
    Outcome::Retry {
        at_ms: now_ms + wait_ms.max(asked_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> Answer {
        Answer::Status {
            code,
            retry_after_s: None,
        }
    }

    #[test]
    fn success_delivers_and_gone_disables() {
        assert_eq!(outcome(&status(204), 1, 0, 0.0), Outcome::Delivered);
        assert!(matches!(
            outcome(&status(410), 1, 0, 0.0),
            Outcome::GiveUp { disable: Some(_) }
        ));
    }

    #[test]
    fn failures_follow_the_schedule_with_jitter_then_give_up() {
        assert_eq!(
            outcome(&Answer::Failed, 1, 1000, 0.0),
            Outcome::Retry { at_ms: 6000 }
        );
        assert_eq!(
            outcome(&status(500), 2, 0, 0.5),
            Outcome::Retry { at_ms: 315_000 }
        );
        assert_eq!(
            outcome(&status(503), 9, 0, 0.0),
            Outcome::Retry {
                at_ms: 24 * 3600 * 1000
            }
        );
        assert!(matches!(
            outcome(&status(500), 10, 0, 0.0),
            Outcome::GiveUp { disable: Some(_) }
        ));
        let total: u64 = RETRY_WAITS_S.iter().sum();
        assert!(
            (70 * 3600..=80 * 3600).contains(&total),
            "about 3 days: {total} s"
        );
    }

    #[test]
    fn retry_after_is_honoured_when_later() {
        let slow_down = Answer::Status {
            code: 429,
            retry_after_s: Some(60),
        };
        assert_eq!(
            outcome(&slow_down, 1, 0, 0.0),
            Outcome::Retry { at_ms: 60_000 }
        );
        let sooner = Answer::Status {
            code: 503,
            retry_after_s: Some(1),
        };
        assert_eq!(
            outcome(&sooner, 2, 0, 0.0),
            Outcome::Retry { at_ms: 300_000 }
        );
    }
}
