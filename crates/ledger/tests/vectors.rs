//! Every RFC 6962 proof vector from transparency-dev/merkle passes or fails exactly as its `wantErr` says. The
//! vectors are kept in `tests/testdata/merkle` (their source and licence are beside them).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use custodia_ledger::merkle::{Hash, verify_consistency_bytes, verify_inclusion};
use serde::Deserialize;

fn vector_dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/merkle").join(kind)
}

fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|err| panic!("{}: {err}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(json_files(&path));
        } else if path.extension().is_some_and(|e| e == "json") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// Decodes a base64 hash; anything that is not 32 bytes is unusable, which a verifier must treat as an error.
fn hash(text: &Option<String>) -> Option<Hash> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(text.as_deref()?).ok()?;
    Hash::from_slice(&bytes)
}

fn proof_hashes(texts: &Option<Vec<String>>) -> Option<Vec<Hash>> {
    texts.iter().flatten().map(|t| hash(&Some(t.clone()))).collect()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Inclusion {
    leaf_idx: u64,
    tree_size: u64,
    root: Option<String>,
    leaf_hash: Option<String>,
    proof: Option<Vec<String>>,
    want_err: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Consistency {
    size1: u64,
    size2: u64,
    root1: Option<String>,
    root2: Option<String>,
    proof: Option<Vec<String>>,
    want_err: bool,
}

#[test]
fn inclusion_vectors() {
    let files = json_files(&vector_dir("inclusion"));
    assert!(files.len() > 50, "expected the inclusion vectors, found {}", files.len());
    for file in files {
        let v: Inclusion = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        let result = match (hash(&v.leaf_hash), hash(&v.root), proof_hashes(&v.proof)) {
            (Some(leaf), Some(root), Some(proof)) => {
                verify_inclusion(v.leaf_idx, v.tree_size, &leaf, &proof, &root).is_ok()
            }
            _ => false,
        };
        assert_eq!(result, !v.want_err, "{}", file.display());
    }
}

#[test]
fn consistency_vectors() {
    let files = json_files(&vector_dir("consistency"));
    assert!(files.len() > 50, "expected the consistency vectors, found {}", files.len());
    for file in files {
        let v: Consistency = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        let bytes = |text: &Option<String>| {
            base64::engine::general_purpose::STANDARD.decode(text.as_deref().unwrap_or("")).ok()
        };
        let proof: Option<Vec<Vec<u8>>> = v.proof.iter().flatten().map(|t| bytes(&Some(t.clone()))).collect();
        let result = match (bytes(&v.root1), bytes(&v.root2), proof) {
            (Some(root1), Some(root2), Some(proof)) => {
                let proof: Vec<&[u8]> = proof.iter().map(Vec::as_slice).collect();
                verify_consistency_bytes(v.size1, v.size2, &proof, &root1, &root2).is_ok()
            }
            _ => false,
        };
        assert_eq!(result, !v.want_err, "{}", file.display());
    }
}
