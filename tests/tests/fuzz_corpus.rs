//! Replays the fuzzing corpus (`fuzz/corpus/<target>/`, inputs that `cargo fuzz` found or
//! minimized, crashes included) through the same entry points the fuzz targets call
//! (`fuzz/entry.rs`, compiled here too), on stable Rust, in every `cargo test`.
//!
//! Each input must come back as accepted or as a proper error; a panic fails the test and
//! names the file. The corpus also holds the inputs that once crashed a target
//! (`fuzz/corpus/<target>/crash-*`), so a fixed crash stays fixed.

#[path = "../../fuzz/entry.rs"]
mod entry;

use std::path::{Path, PathBuf};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

#[test]
fn every_saved_input_is_accepted_or_refused_never_a_panic() {
    // KULISSE_FUZZ_VERBOSE=1 (with --nocapture) prints why each refused input was refused.
    let verbose = std::env::var_os("KULISSE_FUZZ_VERBOSE").is_some();
    let mut replayed = 0;
    for (target, run) in entry::TARGETS {
        let dir = corpus_dir().join(target);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("the corpus of {target} ({}): {e}", dir.display()))
            .map(|e| e.expect("corpus entry").path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "the corpus of {target} is empty");
        let (mut accepted, mut refused) = (0, 0);
        for file in &files {
            let data = std::fs::read(file).expect("read a corpus file");
            let outcome = std::panic::catch_unwind(|| run(&data));
            match outcome {
                Ok(Ok(())) => accepted += 1,
                Ok(Err(message)) => {
                    assert!(
                        !message.trim().is_empty(),
                        "{}: refused without a message",
                        file.display()
                    );
                    if verbose {
                        eprintln!("{}: refused: {message}", file.display());
                    }
                    refused += 1;
                }
                Err(_) => panic!("{target} panicked on {}", file.display()),
            }
        }
        eprintln!(
            "{target}: {} inputs, {accepted} accepted, {refused} refused",
            files.len()
        );
        replayed += files.len();
    }
    assert!(replayed > 0);
}

/// Inputs that once panicked, each with the outcome it must have now.
#[test]
fn inputs_that_once_panicked_are_answered_properly() {
    // A JSON patch whose undo fails (found by reading json-patch's undo code): its atomic
    // `patch` panicked ("unable to undo applied patches"); kulisse applies it to a copy and
    // answers 422. Also in the corpus as fuzz/corpus/patch/json-patch-undo-fails.
    let mut hostile = vec![2u8];
    hostile.extend_from_slice(
        br#"[{"op":"move","from":"/metadata/labels","path":"/metadata"},{"op":"test","path":"/x","value":1}]"#,
    );
    let refused = entry::patch_bytes(&hostile).expect_err("the failing test op refuses the patch");
    assert!(refused.contains("could not be applied"), "{refused}");
}
