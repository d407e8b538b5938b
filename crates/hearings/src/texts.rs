//! The words a hearing shows its people before they speak: the rights notice, the oath, the affirmation and the
//! interpreter's oath, per language.
//!
//! The gateway embeds a default wording in English, French, Italian and Arabic (`crates/hearings/texts/`). The court
//! replaces them without rebuilding: `CUSTODIA_TEXTS_DIR` names a directory with one sub-directory per language,
//! named by its two-letter ISO 639-1 code (`fr/`, `ar/`), each holding exactly these four files, in UTF-8:
//!
//! - `rights_notice.txt`: the rights notice;
//! - `oath.txt`: the oath;
//! - `affirmation.txt`: the solemn affirmation, for those who do not swear;
//! - `interpreter_oath.txt`: the interpreter's oath.
//!
//! A language in the directory replaces the embedded one whole; a language the directory adds is offered too; the
//! embedded languages the directory does not name keep their defaults. Every file is read at start-up and shown
//! exactly as it is (line breaks kept). Anything else is a start-up error that names the file: a missing or extra
//! file, a directory that is not a language code, a file that is empty, not UTF-8, longer than
//! [`MAX_TEXT_BYTES`], or that holds control characters other than line breaks and tabs. Nothing falls back quietly.
//!
//! The judge presents a text before the step it precedes ([`custodia_hearing::Event::PresentText`]); what a person
//! was shown is on the record by the SHA-256 of the file's exact bytes and its language
//! ([`custodia_hearing::TextShown`]), in the minutes and (committed) in the hearing's record, so the court proves
//! what the witness heard with `sha256sum fr/oath.txt`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use custodia_core::{Label, Sha256};
use custodia_hearing::{TextShown, Wording};
use include_dir::{Dir, include_dir};

/// The embedded default texts.
static EMBEDDED: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/texts");

/// The longest text taken, in bytes: a notice read out in a hearing is a page at most.
pub const MAX_TEXT_BYTES: usize = 16 * 1024;

/// A text's file name: its name (`Wording::as_str`) with `.txt`.
fn file_name(kind: Wording) -> String {
    format!("{}.txt", kind.as_str())
}

/// The file names a language directory holds, for messages.
const FILES: &str = "rights_notice.txt, oath.txt, affirmation.txt and interpreter_oath.txt";

/// One text as the court wrote it, and what the record says of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CourtText {
    pub words: String,
    pub shown: TextShown,
}

/// Every text in every language the gateway offers.
#[derive(Debug, Clone)]
pub struct CourtTexts {
    texts: BTreeMap<(String, Wording), CourtText>,
}

/// Why the court's texts could not be read; the gateway does not start.
#[derive(Debug, thiserror::Error)]
pub enum TextsError {
    #[error("the texts directory {dir} cannot be read")]
    Unreadable { dir: PathBuf, source: std::io::Error },
    #[error("{path}: {reason}")]
    Malformed { path: PathBuf, reason: String },
    /// A language directory's name is not a label (a two-letter code always is).
    #[error("{path}: the language is not a label")]
    Language { path: PathBuf, source: custodia_core::IdError },
}

impl CourtTexts {
    /// The embedded defaults.
    pub fn embedded() -> Self {
        Self::load(None).unwrap_or_else(|err| {
            unreachable!("the embedded texts are checked by a test: {}", custodia_service::error::Chain(&err))
        })
    }

    /// The embedded defaults, with the languages in `dir` (if given) replacing or adding to them.
    pub fn load(dir: Option<&Path>) -> Result<Self, TextsError> {
        let mut texts = BTreeMap::new();
        for language in EMBEDDED.dirs() {
            let files = language
                .files()
                .map(|file| {
                    (
                        file.path().file_name().unwrap_or_default().to_string_lossy().into_owned(),
                        file.contents().to_vec(),
                    )
                })
                .collect();
            let path = Path::new("(embedded)").join(language.path());
            texts.extend(read_language(&path, files)?);
        }
        if let Some(dir) = dir {
            texts.extend(read_dir(dir)?);
        }
        Ok(Self { texts })
    }

    /// The text of `kind` in `language`, if the court has one.
    pub fn get(&self, language: &str, kind: Wording) -> Option<&CourtText> {
        self.texts.get(&(language.to_owned(), kind))
    }

    /// The languages offered, in order.
    pub fn languages(&self) -> Vec<&str> {
        let mut languages: Vec<&str> = self.texts.keys().map(|(language, _)| language.as_str()).collect();
        languages.dedup();
        languages
    }
}

fn malformed(path: &Path, reason: impl Into<String>) -> TextsError {
    TextsError::Malformed { path: path.to_path_buf(), reason: reason.into() }
}

/// Every language directory under `dir`.
fn read_dir(dir: &Path) -> Result<BTreeMap<(String, Wording), CourtText>, TextsError> {
    let unreadable = |source| TextsError::Unreadable { dir: dir.to_path_buf(), source };
    let mut texts = BTreeMap::new();
    let mut entries: Vec<_> =
        std::fs::read_dir(dir).map_err(unreadable)?.collect::<Result<_, _>>().map_err(unreadable)?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    if entries.is_empty() {
        return Err(malformed(dir, format!("holds no language directory (such as fr/ with {FILES})")));
    }
    for entry in entries {
        let path = entry.path();
        if !path.is_dir() {
            return Err(malformed(&path, "is not a language directory (such as fr/)"));
        }
        let mut files = Vec::new();
        for file in std::fs::read_dir(&path).map_err(unreadable)? {
            let file = file.map_err(unreadable)?;
            let name = file.file_name().to_string_lossy().into_owned();
            if !file.path().is_file() {
                return Err(malformed(&file.path(), "is not a file"));
            }
            let bytes = std::fs::read(file.path()).map_err(unreadable)?;
            files.push((name, bytes));
        }
        texts.extend(read_language(&path, files)?);
    }
    Ok(texts)
}

/// One language's four texts: `path` is its directory, named by the language, and `files` what it holds.
fn read_language(
    path: &Path,
    mut files: Vec<(String, Vec<u8>)>,
) -> Result<BTreeMap<(String, Wording), CourtText>, TextsError> {
    let language = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
    if !(language.len() == 2 && language.bytes().all(|b| b.is_ascii_lowercase())) {
        return Err(malformed(path, "a language directory is named by a two-letter ISO 639-1 code, such as fr"));
    }
    let label =
        Label::new(language.clone()).map_err(|source| TextsError::Language { path: path.to_path_buf(), source })?;
    let mut texts = BTreeMap::new();
    for kind in Wording::ALL {
        let name = file_name(kind);
        let file = path.join(&name);
        let Some(at) = files.iter().position(|(found, _)| *found == name) else {
            return Err(malformed(&file, format!("is missing: each language has {FILES}")));
        };
        let (_, bytes) = files.swap_remove(at);
        let words = check_text(&file, bytes)?;
        let shown = TextShown { language: label.clone(), sha256: Sha256::of(words.as_bytes()) };
        texts.insert((language.clone(), kind), CourtText { words, shown });
    }
    if let Some((extra, _)) = files.first() {
        return Err(malformed(
            &path.join(extra),
            format!("is not one of {FILES} (a misspelt name would leave a text unused)"),
        ));
    }
    Ok(texts)
}

fn check_text(path: &Path, bytes: Vec<u8>) -> Result<String, TextsError> {
    if bytes.len() > MAX_TEXT_BYTES {
        return Err(malformed(path, format!("is {} bytes; a text has at most {MAX_TEXT_BYTES}", bytes.len())));
    }
    let words = String::from_utf8(bytes)
        .map_err(|e| malformed(path, format!("is not UTF-8 (at byte {})", e.utf8_error().valid_up_to())))?;
    if words.trim().is_empty() {
        return Err(malformed(path, "is empty"));
    }
    if let Some(c) = words.chars().find(|&c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
        return Err(malformed(path, format!("holds the control character U+{:04X}", u32::from(c))));
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, language: &str, files: Files<'_>) {
        let path = dir.join(language);
        std::fs::create_dir_all(&path).unwrap();
        for (name, bytes) in files {
            std::fs::write(path.join(name), bytes).unwrap();
        }
    }

    /// A language directory's files: names and contents.
    type Files<'a> = &'a [(&'a str, &'a [u8])];

    const GOOD: [(&str, &[u8]); 4] = [
        ("rights_notice.txt", b"You may stay silent.\n"),
        ("oath.txt", b"I swear.\n"),
        ("affirmation.txt", b"I affirm.\n"),
        ("interpreter_oath.txt", b"I will interpret faithfully.\n"),
    ];

    #[test]
    fn the_embedded_texts_cover_english_french_italian_and_arabic() {
        let texts = CourtTexts::embedded();
        assert_eq!(texts.languages(), ["ar", "en", "fr", "it"]);
        for language in texts.languages() {
            for kind in Wording::ALL {
                let text = texts.get(language, kind).unwrap();
                assert_eq!(text.shown.sha256, Sha256::of(text.words.as_bytes()));
                assert_eq!(text.shown.language.as_str(), language);
            }
        }
    }

    #[test]
    fn a_directory_replaces_and_adds_languages_and_digests_the_exact_bytes() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "fr", &GOOD);
        write(dir.path(), "de", &GOOD);
        let texts = CourtTexts::load(Some(dir.path())).unwrap();
        assert_eq!(texts.languages(), ["ar", "de", "en", "fr", "it"]);
        let oath = texts.get("fr", Wording::Oath).unwrap();
        assert_eq!(oath.words, "I swear.\n");
        assert_eq!(oath.shown.sha256, Sha256::of(b"I swear.\n"));
        assert_eq!(texts.get("it", Wording::Oath), CourtTexts::embedded().get("it", Wording::Oath));
    }

    #[test]
    fn a_malformed_directory_is_an_error_that_names_the_file() {
        let cases: [(&str, Files<'_>, &str); 7] = [
            ("fr", &GOOD[..3], "interpreter_oath.txt: is missing"),
            ("fr", &[GOOD[0], GOOD[1], GOOD[2], GOOD[3], ("oath.tx", b"I swear")], "oath.tx: is not one of"),
            ("fr", &[GOOD[0], GOOD[1], GOOD[3], ("affirmation.txt", b" \n\n")], "affirmation.txt: is empty"),
            ("fr", &[GOOD[0], GOOD[1], GOOD[3], ("affirmation.txt", b"\xff\xfe")], "affirmation.txt: is not UTF-8"),
            ("fr", &[GOOD[0], GOOD[1], GOOD[3], ("affirmation.txt", b"I \x1b[31maffirm")], "U+001B"),
            ("french", &GOOD, "french: a language directory is named"),
            ("fr", &[GOOD[0], GOOD[1], GOOD[3], ("affirmation.txt", &[b'a'; MAX_TEXT_BYTES + 1])], "at most 16384"),
        ];
        for (language, files, expected) in cases {
            let dir = tempfile::tempdir().unwrap();
            write(dir.path(), language, files);
            let err = CourtTexts::load(Some(dir.path())).unwrap_err().to_string();
            assert!(err.contains(expected), "{err:?} lacks {expected:?}");
        }
        let empty = tempfile::tempdir().unwrap();
        assert!(CourtTexts::load(Some(empty.path())).unwrap_err().to_string().contains("holds no language"));
        let missing = empty.path().join("nowhere");
        let unreadable = CourtTexts::load(Some(&missing)).unwrap_err();
        assert!(unreadable.to_string().contains("cannot be read"), "{unreadable}");
        let cause = std::error::Error::source(&unreadable).expect("the I/O error is kept");
        assert!(cause.downcast_ref::<std::io::Error>().is_some(), "{cause}");
    }
}
