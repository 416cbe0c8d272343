//! Replays every file of `fuzz/corpus/<target>/` through its target's function, so that
//! every input the fuzzers kept (the seeds, and each crash found, as its regression test)
//! keeps passing without a fuzzer.

use std::panic::{self, AssertUnwindSafe};
use std::path::Path;

use switchyard_fuzz_targets::TARGETS;

#[test]
fn every_corpus_file_passes_its_target() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let mut failed = Vec::new();
    for (name, target) in TARGETS {
        let dir = corpus.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no seeds in {}", dir.display());
        for file in files {
            let data = std::fs::read(&file).unwrap();
            if panic::catch_unwind(AssertUnwindSafe(|| target(&data))).is_err() {
                failed.push(format!(
                    "{name}/{}",
                    file.file_name().unwrap().to_string_lossy()
                ));
            }
        }
    }
    assert!(failed.is_empty(), "failing corpus files: {failed:#?}");
}
