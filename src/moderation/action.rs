//! A `mod` request checked into an `Action`: each action's fields present, in range,
//! and nothing else. Who may take it is `rules.rs`'s question.

use crate::protocol::{
    checked_text, is_valid_id, AssistantSettings, ModAction, ModRequest, Rejection,
};

use super::terms::MAX_TERM_CHARS;

/// The longest timeout: two weeks.
pub const MAX_TIMEOUT_S: u64 = 14 * 24 * 3600;
/// Slow mode's period when on.
pub const SLOW_RANGE_S: std::ops::RangeInclusive<u64> = 3..=120;
pub const MAX_REASON_CHARS: usize = 500;
pub const MAX_TEMPLATE_CHARS: usize = 200;
/// How long the assistant lets a paid question wait before telling its asker.
pub const ANSWER_WINDOW_S: std::ops::RangeInclusive<u64> = 30..=3600;

/// A moderation request with its fields checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Delete {
        event: String,
    },
    /// `seconds: None` is a ban.
    Restrict {
        user: String,
        seconds: Option<u64>,
        reason: Option<String>,
    },
    Unban {
        user: String,
        reason: Option<String>,
    },
    Slow {
        seconds: u64,
    },
    ModsAdd {
        user: String,
    },
    ModsRemove {
        user: String,
    },
    TermsAdd {
        term: String,
    },
    TermsRemove {
        term: String,
    },
    SuspendGifts {
        reason: Option<String>,
    },
    ResumeGifts {
        reason: Option<String>,
    },
    Assistant(AssistantSettings),
}

impl Action {
    pub fn parse(request: ModRequest) -> Result<Action, Rejection> {
        let reason = match &request.reason {
            None => None,
            Some(reason) => Some(checked_text(reason, MAX_REASON_CHARS, "reason")?),
        };
        let action = match request.action {
            ModAction::Delete => Action::Delete {
                event: required(request.id, "id")?,
            },
            ModAction::Timeout => {
                let seconds = required(request.seconds, "seconds")?;
                if !(1..=MAX_TIMEOUT_S).contains(&seconds) {
                    return Err(Rejection::bad_request(format!(
                        "a timeout lasts 1 to {MAX_TIMEOUT_S} seconds"
                    )));
                }
                Action::Restrict {
                    user: user(request.user)?,
                    seconds: Some(seconds),
                    reason,
                }
            }
            ModAction::Ban => Action::Restrict {
                user: user(request.user)?,
                seconds: None,
                reason,
            },
            ModAction::Unban => Action::Unban {
                user: user(request.user)?,
                reason,
            },
            ModAction::Slow => {
                let seconds = required(request.seconds, "seconds")?;
                if seconds != 0 && !SLOW_RANGE_S.contains(&seconds) {
                    return Err(Rejection::bad_request(format!(
                        "slow mode takes 0 (off) or {} to {} seconds",
                        SLOW_RANGE_S.start(),
                        SLOW_RANGE_S.end()
                    )));
                }
                Action::Slow { seconds }
            }
            ModAction::ModsAdd => Action::ModsAdd {
                user: user(request.user)?,
            },
            ModAction::ModsRemove => Action::ModsRemove {
                user: user(request.user)?,
            },
            ModAction::TermsAdd => Action::TermsAdd {
                term: term(request.term)?,
            },
            ModAction::TermsRemove => Action::TermsRemove {
                term: term(request.term)?,
            },
            ModAction::SuspendGifts => Action::SuspendGifts { reason },
            ModAction::ResumeGifts => Action::ResumeGifts { reason },
            ModAction::Assistant => Action::Assistant(assistant(&request)?),
        };
        Ok(action)
    }

    pub fn kind(&self) -> ModAction {
        match self {
            Action::Delete { .. } => ModAction::Delete,
            Action::Restrict {
                seconds: Some(_), ..
            } => ModAction::Timeout,
            Action::Restrict { seconds: None, .. } => ModAction::Ban,
            Action::Unban { .. } => ModAction::Unban,
            Action::Slow { .. } => ModAction::Slow,
            Action::ModsAdd { .. } => ModAction::ModsAdd,
            Action::ModsRemove { .. } => ModAction::ModsRemove,
            Action::TermsAdd { .. } => ModAction::TermsAdd,
            Action::TermsRemove { .. } => ModAction::TermsRemove,
            Action::SuspendGifts { .. } => ModAction::SuspendGifts,
            Action::ResumeGifts { .. } => ModAction::ResumeGifts,
            Action::Assistant(_) => ModAction::Assistant,
        }
    }

    /// The user the action is taken on, if any.
    pub fn target(&self) -> Option<&str> {
        match self {
            Action::Restrict { user, .. }
            | Action::Unban { user, .. }
            | Action::ModsAdd { user }
            | Action::ModsRemove { user } => Some(user),
            _ => None,
        }
    }
}

fn required<T>(field: Option<T>, name: &str) -> Result<T, Rejection> {
    field.ok_or_else(|| Rejection::bad_request(format!("this action needs `{name}`")))
}

fn user(user: Option<String>) -> Result<String, Rejection> {
    let user = required(user, "user")?;
    if !is_valid_id(&user) {
        return Err(Rejection::bad_request("user must match [a-z0-9_-]{1,64}"));
    }
    Ok(user)
}

/// The assistant's settings: what the request gives, the defaults for the rest.
fn assistant(request: &ModRequest) -> Result<AssistantSettings, Rejection> {
    let defaults = AssistantSettings::default();
    let template = match &request.template {
        Some(template) => checked_text(template, MAX_TEMPLATE_CHARS, "template")?,
        None => defaults.template,
    };
    let answer_window_s = request.answer_window_s.unwrap_or(defaults.answer_window_s);
    if !ANSWER_WINDOW_S.contains(&answer_window_s) {
        return Err(Rejection::bad_request(format!(
            "answer_window_s: {} to {} seconds",
            ANSWER_WINDOW_S.start(),
            ANSWER_WINDOW_S.end()
        )));
    }
    Ok(AssistantSettings {
        thanks: request.thanks.unwrap_or(defaults.thanks),
        template,
        answer_window_s,
    })
}

fn term(term: Option<String>) -> Result<String, Rejection> {
    checked_text(&required(term, "term")?, MAX_TERM_CHARS, "term")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(action: ModAction) -> ModRequest {
        ModRequest {
            room: "alice".into(),
            action,
            ..ModRequest::default()
        }
    }

    #[test]
    fn durations_are_checked() {
        let timeout = |seconds| {
            Action::parse(ModRequest {
                user: Some("bob".into()),
                seconds: Some(seconds),
                ..request(ModAction::Timeout)
            })
        };
        assert!(timeout(0).is_err());
        assert!(timeout(MAX_TIMEOUT_S + 1).is_err());
        assert!(timeout(1).is_ok());
        assert!(timeout(MAX_TIMEOUT_S).is_ok());
        let slow = |seconds| {
            Action::parse(ModRequest {
                seconds: Some(seconds),
                ..request(ModAction::Slow)
            })
        };
        assert!(slow(0).is_ok());
        assert!(slow(2).is_err());
        assert!(slow(3).is_ok());
        assert!(slow(120).is_ok());
        assert!(slow(121).is_err());
    }

    #[test]
    fn each_action_needs_its_fields() {
        assert!(Action::parse(request(ModAction::Delete)).is_err());
        assert!(Action::parse(request(ModAction::Ban)).is_err());
        assert!(Action::parse(request(ModAction::TermsAdd)).is_err());
        let bad_user = ModRequest {
            user: Some("Bob!".into()),
            ..request(ModAction::Ban)
        };
        assert!(Action::parse(bad_user).is_err());
        let long_reason = ModRequest {
            user: Some("bob".into()),
            reason: Some("x".repeat(MAX_REASON_CHARS + 1)),
            ..request(ModAction::Ban)
        };
        assert!(Action::parse(long_reason).is_err());
        assert_eq!(
            Action::parse(request(ModAction::SuspendGifts)),
            Ok(Action::SuspendGifts { reason: None })
        );
    }
}
