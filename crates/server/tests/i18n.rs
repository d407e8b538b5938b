//! The pages' words cannot drift: every key of any language file (web/static/i18n) is in all four, once, with the
//! same `{placeholders}` as the English; and every key a page names (`data-i18n`, `data-i18n-placeholder`,
//! `data-i18n-label`, `t('…')`, `words('…')` in web/src and web/static) is in English, so no page shows a raw key or
//! falls back to English in another language. A key built at run time (`` t(`role.${role}`) ``) must at least have
//! its fixed start in English.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const LANGUAGES: [&str; 4] = ["en", "fr", "it", "ar"];

fn web() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web")
}

/// A language file's keys and strings; refused if it is not a flat object of strings or names a key twice.
fn translations(language: &str) -> BTreeMap<String, String> {
    let path = web().join(format!("static/i18n/{language}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let strings: BTreeMap<String, String> =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{language}.json is not a flat object of strings: {e}"));
    // A JSON object may name a key twice, and a parser keeps one of them silently: count them as written.
    let mut seen = BTreeSet::new();
    for line in text.lines().map(str::trim_start).filter(|line| line.starts_with('"')) {
        let key: String = serde_json::Deserializer::from_str(line)
            .into_iter::<String>()
            .next()
            .unwrap_or_else(|| panic!("{language}.json: {line}"))
            .unwrap_or_else(|e| panic!("{language}.json: {line}: {e}"));
        assert!(seen.insert(key.clone()), "{language}.json names {key:?} twice");
    }
    assert_eq!(seen.len(), strings.len(), "{language}.json has one key a line");
    strings
}

/// The `{name}`s a string fills in.
fn placeholders(text: &str) -> BTreeSet<&str> {
    text.split('{').skip(1).filter_map(|rest| rest.split_once('}')).map(|(name, _)| name).collect()
}

/// Every page source under web/src and web/static (the translations themselves aside).
fn page_sources() -> Vec<PathBuf> {
    let mut pending = vec![web().join("src"), web().join("static")];
    let mut files = Vec::new();
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if !path.ends_with("i18n") {
                    pending.push(path);
                }
            } else if path.extension().is_some_and(|ext| ext == "js" || ext == "html") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// A key a page names: fixed, or only its fixed start (a template literal that goes on with `${…}`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Named {
    Key(String),
    Prefix(String),
}

/// The keys named in `source`: in the markup's attributes, and as the first argument of `t(…)` or `words(…)`;
/// not in comments (which show how to name one).
fn named_keys(source: &str) -> Vec<Named> {
    let comment = |line: &&str| ["//", "/*", "*", "<!--"].iter().any(|start| line.trim_start().starts_with(start));
    let source = source.lines().filter(|line| !comment(line)).collect::<Vec<_>>().join("\n");
    let source = source.as_str();
    let mut keys = Vec::new();
    for attribute in ["data-i18n=\"", "data-i18n-placeholder=\"", "data-i18n-label=\""] {
        for (at, _) in source.match_indices(attribute) {
            let rest = &source[at + attribute.len()..];
            keys.push(Named::Key(rest[..rest.find('"').expect("a closed attribute")].to_owned()));
        }
    }
    for function in ["t(", "words("] {
        for (at, _) in source.match_indices(function) {
            // `t(` alone, not the end of `fetch(` or `x.t(`.
            let before = source[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || matches!(c, '_' | '$' | '.')) {
                continue;
            }
            let argument = source[at + function.len()..].trim_start();
            let Some(quote) = argument.chars().next().filter(|c| matches!(c, '\'' | '"' | '`')) else { continue };
            let body = &argument[1..];
            let end = body.find(quote).unwrap_or(body.len());
            let literal = &body[..end];
            keys.push(match (quote, literal.find("${")) {
                ('`', Some(dynamic)) => Named::Prefix(literal[..dynamic].to_owned()),
                _ => Named::Key(literal.to_owned()),
            });
        }
    }
    keys
}

#[test]
fn every_language_has_every_key_with_the_same_placeholders() {
    let files: BTreeMap<&str, BTreeMap<String, String>> =
        LANGUAGES.iter().map(|&language| (language, translations(language))).collect();
    let every_key: BTreeSet<&String> = files.values().flat_map(BTreeMap::keys).collect();
    let mut problems = Vec::new();
    for (language, strings) in &files {
        for key in &every_key {
            match strings.get(*key) {
                None => problems.push(format!("{language}.json lacks {key:?}")),
                Some(text) if text.trim().is_empty() => problems.push(format!("{language}.json: {key:?} is empty")),
                Some(text) => {
                    let english = files["en"].get(*key).map(String::as_str).unwrap_or_default();
                    if placeholders(text) != placeholders(english) {
                        problems.push(format!("{language}.json: {key:?} fills {text:?}, the English {english:?}"));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}

#[test]
fn every_key_a_page_names_is_in_english() {
    let english = translations("en");
    let sources = page_sources();
    assert!(sources.iter().any(|path| path.ends_with("portal.js")), "the pages are found: {sources:?}");
    let mut named = 0;
    let mut problems = Vec::new();
    for path in &sources {
        let source = std::fs::read_to_string(path).unwrap();
        for key in named_keys(&source) {
            named += 1;
            let found = match &key {
                Named::Key(key) => english.contains_key(key),
                Named::Prefix(start) => english.keys().any(|key| key.starts_with(start.as_str())),
            };
            if !found {
                problems.push(format!("{}: {key:?} is not in en.json", path.strip_prefix(web()).unwrap().display()));
            }
        }
    }
    // The pages name hundreds of keys; finding few would mean the scan above missed them.
    assert!(named > 500, "only {named} keys named in the pages");
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}

#[test]
fn the_scan_finds_keys_as_pages_name_them() {
    let source = r#"<p data-i18n="a.b">x</p> <input data-i18n-placeholder="c"> t('d', { n }); words("e", 'E');
        // Markup names its text with data-i18n="key", and code with t('key').
        t(`f.${kind}`); await fetch('g'); view.t('h'); t(variable); t(`i`)"#;
    let mut keys = named_keys(source);
    keys.sort();
    let key = |text: &str| Named::Key(text.to_owned());
    assert_eq!(keys, [key("a.b"), key("c"), key("d"), key("e"), key("i"), Named::Prefix("f.".to_owned())]);
}
