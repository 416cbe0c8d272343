//! Replays each directory of `fuzz/sequences/<target>-<what>/` through its target's
//! function, its files in numeric order, in one process: the inputs whose failure needs
//! the state the ones before them left behind (a circuit they opened), kept as
//! regression tests in the order that fails. A directory of its own process, since the
//! corpus replay shares the same in-process proxy.

use std::path::Path;

use switchyard_fuzz_targets::TARGETS;

#[test]
fn every_sequence_passes_its_target_in_order() {
    let sequences = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/sequences");
    let mut dirs: Vec<_> = std::fs::read_dir(&sequences)
        .unwrap_or_else(|e| panic!("{}: {e}", sequences.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no sequences in {}", sequences.display());
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let (_, target) = TARGETS
            .iter()
            .find(|(target, _)| name.starts_with(&format!("{target}-")))
            .unwrap_or_else(|| panic!("{name}: no target of that name"));
        let mut files: Vec<(u32, _)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| {
                let path = entry.unwrap().path();
                let n = path.file_name().unwrap().to_string_lossy().parse();
                (
                    n.unwrap_or_else(|_| panic!("{}: not a number", path.display())),
                    path,
                )
            })
            .collect();
        files.sort();
        assert!(
            files.len() > 1,
            "{name}: a sequence of one is a corpus file"
        );
        for (n, file) in files {
            eprintln!("{name}/{n}");
            target(&std::fs::read(&file).unwrap());
        }
    }
}
