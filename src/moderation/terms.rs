//! Blocked terms: a message contains one when its folded form (Unicode compatibility
//! normalization, NFKC, then lower case) contains the term's folded form, so that
//! `ＳＰＡＭ`, `Spam` and `spam` all match `spam`. All terms are searched at once
//! (Aho-Corasick), so a thousand terms cost a chat message one pass over its text.

use aho_corasick::AhoCorasick;
use anyhow::bail;
use unicode_normalization::UnicodeNormalization;

/// The longest term taken, in characters.
pub const MAX_TERM_CHARS: usize = 100;

#[derive(Debug, Clone, Default)]
pub struct BlockedTerms {
    /// `None` when there are no terms: nothing to search.
    matcher: Option<AhoCorasick>,
    count: usize,
}

impl BlockedTerms {
    /// The terms, folded; an empty term, or one over `MAX_TERM_CHARS`, is refused.
    pub fn new(terms: &[String]) -> anyhow::Result<BlockedTerms> {
        let mut folded = Vec::with_capacity(terms.len());
        for term in terms {
            let term = fold(term.trim());
            if term.is_empty() || term.chars().count() > MAX_TERM_CHARS {
                bail!("a blocked term must be 1 to {MAX_TERM_CHARS} characters");
            }
            folded.push(term);
        }
        folded.sort();
        folded.dedup();
        if folded.is_empty() {
            return Ok(BlockedTerms::default());
        }
        let count = folded.len();
        let matcher = AhoCorasick::new(&folded)?;
        Ok(BlockedTerms {
            matcher: Some(matcher),
            count,
        })
    }

    /// Whether `text` contains a blocked term.
    pub fn found_in(&self, text: &str) -> bool {
        match &self.matcher {
            None => false,
            Some(matcher) => matcher.is_match(&fold(text)),
        }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// The form terms and messages are compared in.
fn fold(text: &str) -> String {
    text.nfkc().flat_map(char::to_lowercase).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(list: &[&str]) -> BlockedTerms {
        BlockedTerms::new(&list.iter().map(|t| t.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn terms_match_whatever_the_case_or_width() {
        let blocked = terms(&["spam", "Buy Followers"]);
        for text in [
            "SPAM here",
            "ＳＰＡＭ",
            "ｓｐａｍ!",
            "please buy followers now",
            "Ｂｕｙ ｆｏｌｌｏｗｅｒｓ",
        ] {
            assert!(blocked.found_in(text), "{text}");
        }
        for text in ["hello", "s p a m", "followers"] {
            assert!(!blocked.found_in(text), "{text}");
        }
        assert_eq!(blocked.len(), 2);
    }

    #[test]
    fn compatibility_forms_of_a_term_match_too() {
        // A term written in full width blocks its plain form, and a ligature its letters.
        assert!(terms(&["ＳＣＡＭ"]).found_in("a scam"));
        assert!(terms(&["ﬁre"]).found_in("FIRE"));
    }

    #[test]
    fn no_terms_match_nothing_and_bad_terms_are_refused() {
        assert!(!BlockedTerms::default().found_in("anything"));
        assert!(BlockedTerms::new(&["  ".into()]).is_err());
        assert!(BlockedTerms::new(&["x".repeat(MAX_TERM_CHARS + 1)]).is_err());
        assert_eq!(terms(&["a", "A", "Ａ"]).len(), 1);
    }
}
