//! `[payments]` in the configuration.

use std::path::PathBuf;

use anyhow::{bail, Context};
use serde::Deserialize;

/// Payment systems' notifications (`docs/payments.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PaymentSettings {
    /// The Standard Webhooks secret (`whsec_…`) of the platform's payment backend;
    /// without it, `POST /api/payments/standard` answers 404.
    pub standard_secret: Option<String>,
    /// The Stripe endpoint's signing secret (`whsec_…`); without it,
    /// `POST /api/payments/stripe` answers 404.
    pub stripe_secret: Option<String>,
    /// How far a notification's timestamp may be from now.
    pub tolerance_s: u64,
    /// The largest notification body taken; larger answers 413.
    pub max_body_bytes: usize,
    /// Where the watch page sends a buyer to pay outside dev mode, with `{user}` and
    /// `{pack}` replaced; without it, the page offers no purchase.
    pub checkout_url: Option<String>,
    /// Apple's root certificate (Apple Root CA - G3, PEM or DER file) that App Store
    /// notifications must chain up to; without it, `POST /api/payments/apple`
    /// answers 404.
    pub apple_root: Option<PathBuf>,
    /// The app's bundle id; notifications for any other app answer 400.
    pub apple_bundle_id: Option<String>,
    /// Whether purchases made in Apple's sandbox are credited (for testing an app).
    pub apple_sandbox: bool,
}

impl Default for PaymentSettings {
    fn default() -> Self {
        PaymentSettings {
            standard_secret: None,
            stripe_secret: None,
            tolerance_s: 300,
            max_body_bytes: 64 * 1024,
            checkout_url: None,
            apple_root: None,
            apple_bundle_id: None,
            apple_sandbox: false,
        }
    }
}

impl PaymentSettings {
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(secret) = &self.standard_secret {
            super::standard::Secret::parse(secret).context("payments.standard_secret")?;
        }
        if matches!(&self.stripe_secret, Some(secret) if !secret.starts_with("whsec_")) {
            bail!("payments.stripe_secret: a Stripe endpoint secret starts with whsec_");
        }
        if self.max_body_bytes == 0 {
            bail!("payments.max_body_bytes must be greater than zero");
        }
        if self.apple_root.is_some() != self.apple_bundle_id.is_some() {
            bail!("payments.apple_root and payments.apple_bundle_id go together");
        }
        Ok(())
    }
}
