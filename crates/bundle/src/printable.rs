//! Text from a bundle as a report may show it: [`printable`], which every verifier output goes through, and
//! [`echoed`], the same for a name, cut to [`MAX_ECHOED_NAME`] characters.

use custodia_core::{Sha256, acts_on_display};

/// The most characters of a name (a path from the bundle) echoed in a detail; a longer one is cut, with its
/// SHA-256 so that two long names stay told apart. A hostile bundle's names cost the report no more than this.
pub const MAX_ECHOED_NAME: usize = 200;

/// `name` as a detail echoes it, made [`printable`]: whole up to [`MAX_ECHOED_NAME`] characters as shown, else
/// the characters that show in that many, an ellipsis and the first 16 hex digits of its SHA-256.
pub fn echoed(name: &str) -> String {
    let mut shown = String::new();
    let mut width = 0;
    for c in name.chars() {
        let escaped = if acts_on_display(c) { c.escape_unicode().to_string() } else { c.to_string() };
        width += escaped.chars().count();
        if width > MAX_ECHOED_NAME {
            let digest = Sha256::of(name.as_bytes()).to_string();
            return format!("{shown}… (SHA-256 {})", &digest[..16]);
        }
        shown.push_str(&escaped);
    }
    shown
}

/// `text` from a bundle (a name, a path, a line of a file, a message that quotes one) as it may be shown: every
/// character that would act on a terminal or a page (a control character, a line or paragraph separator, an
/// invisible format character but the zero-width joiners) written as `\u{...}` instead, so a report line is one
/// line that says what it says, and the verdict after it stays as written. The one function every verifier output
/// goes through: each detail in [`Verification`](crate::Verification)'s report, and the CLI's error messages.
pub fn printable(text: &str) -> String {
    if !text.chars().any(acts_on_display) {
        return text.to_owned();
    }
    let mut shown = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if acts_on_display(c) {
            shown.extend(c.escape_unicode());
        } else {
            shown.push(c);
        }
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_what_acts_on_a_terminal_and_keeps_names_whole() {
        assert_eq!(printable("\u{1b}[1A\u{1b}[2KVALID\n"), "\\u{1b}[1A\\u{1b}[2KVALID\\u{a}");
        assert_eq!(
            printable("fdp\u{202E}exe.pdf\u{2066}\u{2028}\u{85}\u{7f}"),
            "fdp\\u{202e}exe.pdf\\u{2066}\\u{2028}\\u{85}\\u{7f}"
        );
        // Persian with a zero-width non-joiner, accents, and CJK stay as they are.
        for name in ["می\u{200C}خواهم", "Amélie Ødegård", "证据.webm", "plain-name_1.txt"] {
            assert_eq!(printable(name), name);
        }
        // An echoed name is cut by what it shows: escapes count toward MAX_ECHOED_NAME.
        let hostile = "\u{1b}".repeat(1000);
        let shown = echoed(&hostile);
        assert!(shown.chars().count() < MAX_ECHOED_NAME + 40 && !shown.contains('\u{1b}'), "{shown}");
        assert_eq!(echoed("short\u{1b}"), "short\\u{1b}");
    }
}
