//! The alert rule-file parser (Prometheus-style YAML, PromQL expressions, templates) on
//! arbitrary text: it must never panic, only accept a rule set or list what is wrong.
#![no_main]

use fleetmon_alert::rulefile::RuleSet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = RuleSet::from_str("fuzz.yml", text) {
        assert!(
            !e.errors.is_empty(),
            "a refused rule file names at least one error"
        );
        let _ = e.to_string();
    }
});
