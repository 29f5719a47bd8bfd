//! Property tests of the rule-file parser: any text, YAML-shaped or not, gives rules or
//! problems with positions, never a panic or a hang (alias bombs included); and the
//! corpus in `fuzz/corpus/rules` plus `fuzz/regressions/rules` is replayed.

use std::path::{Path, PathBuf};

use proptest::prelude::*;

const SEED: &str = "groups:\n  - name: shop\n    interval: 30s\n    rules:\n      - alert: High\n        expr: sum(rate(x[5m])) > 1\n        for: 10m\n        labels: {severity: page}\n        annotations:\n          summary: \"{{ $value | humanize }}\"\n      - record: job:x:rate5m\n        expr: sum by (job) (rate(x[5m]))\n      - alert: Slow\n        sql: SELECT 1 AS value\n        condition: value > 0\n      - alert: Logs\n        logs: {query: 'error', window: 5m, threshold: 3}\n";

const TOKENS: &[&str] = &[
    "groups:",
    "- name: g",
    "rules:",
    "- alert: A",
    "expr:",
    "up",
    "for:",
    "5m",
    "labels:",
    "{",
    "}",
    "[",
    "]",
    "&a",
    "*a",
    "<<:",
    "'",
    "\"",
    "|",
    ">",
    "---",
    "...",
    "!!str",
    "annotations:",
    "{{ $labels.x }}",
    "{{ end }}",
    "sql:",
    "logs:",
    "record:",
    "\n",
    "\n  ",
    "\n    ",
    ":",
    "-",
    "#",
    "%YAML 1.2",
    "\t",
    "interval: -1s",
    "limit: 99999999999999999999",
];

fn check(text: &str) {
    let _ = crate::rules::parse_file(Path::new("fuzz.yml"), text);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn token_soup_never_panics(v in prop::collection::vec(prop::sample::select(TOKENS), 0..40)) {
        check(&v.join(" "));
    }

    #[test]
    fn edited_rule_files_never_panic(at in any::<prop::sample::Index>(), len in 0usize..12, v in prop::collection::vec(prop::sample::select(TOKENS), 0..6)) {
        let chars: Vec<char> = SEED.chars().collect();
        let start = at.index(chars.len() + 1);
        let end = (start + len).min(chars.len());
        let mut text: String = chars[..start].iter().collect();
        text.push_str(&v.join(""));
        text.extend(&chars[end..]);
        check(&text);
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
        check(&text);
    }
}

#[test]
fn the_seed_is_valid_and_corpora_replay() {
    let groups = crate::rules::parse_file(Path::new("seed.yml"), SEED).expect("the seed parses");
    assert_eq!(groups.len(), 1);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut replayed = 0;
    for kind in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(kind).join("rules")) else {
            continue;
        };
        for e in entries.flatten() {
            let data = std::fs::read(e.path()).expect("read corpus file");
            check(&String::from_utf8_lossy(&data));
            replayed += 1;
        }
    }
    assert!(replayed >= 2, "corpus under {}", root.display());
}
