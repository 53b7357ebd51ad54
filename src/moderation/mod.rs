//! Moderation rules, with no I/O: what chat may say (blocked terms). The hub applies
//! them; the settings come from `[moderation]` in the configuration.

mod terms;

use serde::Deserialize;

pub use terms::BlockedTerms;

/// `[moderation]` in the configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModerationSettings {
    /// Terms no chat message may contain, in any room (matched ignoring case and
    /// Unicode compatibility forms).
    pub blocked_terms: Vec<String>,
}

impl ModerationSettings {
    pub fn validate(&self) -> anyhow::Result<()> {
        BlockedTerms::new(&self.blocked_terms).map(|_| ())
    }
}
