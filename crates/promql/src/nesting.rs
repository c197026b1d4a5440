//! A bound on how deeply a query may nest, checked before it is parsed. Parsing, evaluating,
//! formatting and dropping an expression all recurse once per level of its tree, so a query of
//! a few kilobytes — a thousand `(`, or `1+1+...+1` with a thousand terms — would overflow a
//! thread's stack and abort the whole server. No real query comes near the bound.
//!
//! The check is lexical and conservative: every token that can add a level to the tree counts
//! once — an opening `(` or `[`, an operator character, a set operator or `atan2` — outside
//! string literals, comments and label matchers (`{...}`), whatever the nesting. A query with
//! at most [`MAX_NESTING`] of them has a tree at most that deep.

/// Most operators and brackets a query may have.
pub const MAX_NESTING: usize = 200;

/// Ok when `query` has at most [`MAX_NESTING`] operators and brackets; the error names the count.
pub fn check(query: &str) -> Result<(), String> {
    let mut count = 0usize;
    let mut braces = 0usize;
    let mut chars = query.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                // A string: skip to its closing quote (backslash escapes, except in raw strings).
                while let Some(d) = chars.next() {
                    if d == '\\' && c != '`' {
                        chars.next();
                    } else if d == c {
                        break;
                    }
                }
            }
            '#' => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
            }
            '{' => braces += 1,
            '}' => braces = braces.saturating_sub(1),
            _ if braces > 0 => {}
            '(' | '[' | '+' | '-' | '*' | '/' | '%' | '^' | '=' | '!' | '<' | '>' => count += 1,
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut word = String::from(c);
                while let Some(&d) = chars.peek() {
                    if !(d.is_ascii_alphanumeric() || d == '_' || d == ':') {
                        break;
                    }
                    word.push(d);
                    chars.next();
                }
                let word = word.to_ascii_lowercase();
                if matches!(word.as_str(), "and" | "or" | "unless" | "atan2") {
                    count += 1;
                }
            }
            _ => {}
        }
        if count > MAX_NESTING {
            return Err(format!(
                "the query has more than {MAX_NESTING} operators and brackets; at most \
                 {MAX_NESTING} are accepted"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_queries_pass() {
        for q in [
            "sum by (device) (rate(fleetmon_ingest_batches_total{job=~\"a|b\", x!=\"(((\"}[5m]))",
            "max_over_time((battery_charge_ratio < 0.2)[1h:5m]) and on (device) device_up == 1",
            "histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m]))) # ((((((",
        ] {
            assert_eq!(check(q), Ok(()), "{q}");
        }
    }

    #[test]
    fn deep_or_long_chains_are_refused() {
        let n = MAX_NESTING + 1;
        for q in [
            format!("{}1{}", "(".repeat(n), ")".repeat(n)),
            format!("{}1", "-".repeat(n)),
            format!("1{}", "+1".repeat(n)),
            format!("up{}", " or up".repeat(n)),
            format!("(up){}", "[5m:]".repeat(n)),
        ] {
            let e = check(&q).err();
            assert!(e.is_some_and(|e| e.contains("at most 200")), "{q}");
        }
        // At the bound exactly, still fine.
        assert_eq!(check(&format!("1{}", "+1".repeat(MAX_NESTING))), Ok(()));
    }

    #[test]
    fn strings_and_matchers_do_not_count() {
        let long = "+".repeat(10 * MAX_NESTING);
        assert_eq!(check(&format!("up{{a=~\"{long}\"}}")), Ok(()));
        assert_eq!(
            check(&format!(
                "label_replace(up, \"a\", '{long}', \"b\", `{long}`)"
            )),
            Ok(())
        );
    }
}
