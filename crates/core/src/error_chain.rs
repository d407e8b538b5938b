//! An error written with every cause after it, for the operator's log ([`ErrorChain`]).

use std::error::Error;
use std::fmt;

/// An error and every cause after it (its `source()`, that one's, and so on), `: `-separated, for the operator's
/// log: `error = %ErrorChain(&err)`. A cause whose words end the text written before it is not written again, so an
/// error that shows its source in its own words as well (as `sqlx`'s and `object_store`'s do) reads once.
#[derive(Debug, Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut written = self.0.to_string();
        f.write_str(&written)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            let text = error.to_string();
            if !text.is_empty() && !written.ends_with(&text) {
                write!(f, ": {text}")?;
                written = text;
            }
            cause = error.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error with `text`, and `source` as its cause.
    #[derive(Debug)]
    struct Failed {
        text: String,
        source: Option<Box<Failed>>,
    }

    impl fmt::Display for Failed {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(&self.text)
        }
    }

    impl Error for Failed {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.source.as_deref().map(|source| source as &(dyn Error + 'static))
        }
    }

    fn failed(text: &str, source: Option<Failed>) -> Failed {
        Failed { text: text.to_owned(), source: source.map(Box::new) }
    }

    #[test]
    fn every_cause_is_written_once() {
        let disk = failed("disk on fire", None);
        let apart = failed("internal error: reading a chunk", Some(failed("the staged file", Some(disk))));
        assert_eq!(ErrorChain(&apart).to_string(), "internal error: reading a chunk: the staged file: disk on fire");

        // A cause shown in its error's own words (`{0}` and `#[source]`), twice over, is written once; a cause
        // under it that no text shows yet is still written.
        let reset = failed("connection reset", Some(failed("os error 104", None)));
        let shown = failed("storage failed: connection reset", Some(reset));
        let outer = failed("the custody log: storage failed: connection reset", Some(shown));
        assert_eq!(ErrorChain(&outer).to_string(), "the custody log: storage failed: connection reset: os error 104");
        assert_eq!(ErrorChain(&failed("alone", None)).to_string(), "alone");
    }
}
