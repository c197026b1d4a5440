//! Two instant vectors combined across all steps of a range: each series' matching signature,
//! and each matched pair's output labels, are computed once; values are matched step by step
//! through signature ids. Errors (duplicates on the "one" side, ambiguous matches) are
//! Prometheus's, at the first step where they occur, as the per-step operator in `binary`
//! reports them.

use std::collections::HashMap;
use std::rc::Rc;

use promql_parser::parser::token::{T_LAND, T_LOR, TokenId};
use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};

use super::{Grid, StepSeries};
use crate::binary::{between_elements, result_labels, signature};
use crate::error::{Error, Result};
use crate::value::LabelSet;

/// Signature ids of the series of both sides: equal ids, equal signatures.
fn signature_ids(
    sides: [&[StepSeries]; 2],
    matching: Option<&LabelModifier>,
) -> ([Vec<usize>; 2], usize) {
    let mut ids: HashMap<Vec<(String, String)>, usize> = HashMap::new();
    let mut of = |series: &[StepSeries]| -> Vec<usize> {
        series
            .iter()
            .map(|s| {
                let n = ids.len();
                *ids.entry(signature(&s.labels, matching)).or_insert(n)
            })
            .collect()
    };
    let left = of(sides[0]);
    let right = of(sides[1]);
    ([left, right], ids.len())
}

/// (step index, series index, value) of every point, by step; series in order within a step.
fn by_step(series: &[StepSeries], g: Grid) -> Vec<(usize, usize, f64)> {
    let mut out: Vec<(usize, usize, f64)> = series
        .iter()
        .enumerate()
        .flat_map(|(i, s)| s.points.iter().map(move |&(t, v)| (g.index(t), i, v)))
        .collect();
    out.sort_by_key(|e| e.0);
    out
}

/// The entries of `entries` (sorted by step) at step `i`, advancing `at`.
fn at_step<'e>(
    entries: &'e [(usize, usize, f64)],
    at: &mut usize,
    i: usize,
) -> &'e [(usize, usize, f64)] {
    let from = *at;
    while *at < entries.len() && entries[*at].0 == i {
        *at += 1;
    }
    &entries[from..*at]
}

/// `and`, `or`, `unless` at every step; labels are kept, so series are filtered, not built.
pub(super) fn set_op_steps(
    op: TokenId,
    l: Vec<StepSeries>,
    r: Vec<StepSeries>,
    b: &BinaryExpr,
    g: Grid,
) -> Vec<StepSeries> {
    let matching = b.modifier.as_ref().and_then(|m| m.matching.as_ref());
    let ([lsig, rsig], n) = signature_ids([&l, &r], matching);
    // The step at which a signature was last seen on the side looked up.
    let mut seen = vec![usize::MAX; n];
    let (le, re) = (by_step(&l, g), by_step(&r, g));
    let mut lpoints: Vec<Vec<(i64, f64)>> = vec![Vec::new(); l.len()];
    let mut rpoints: Vec<Vec<(i64, f64)>> = vec![Vec::new(); r.len()];
    let (mut la, mut ra) = (0, 0);
    for i in 0..g.len() {
        let (lhere, rhere) = (at_step(&le, &mut la, i), at_step(&re, &mut ra, i));
        if lhere.is_empty() && rhere.is_empty() {
            continue;
        }
        let t = g.time(i);
        if op == T_LOR {
            for &(_, s, v) in lhere {
                seen[lsig[s]] = i;
                lpoints[s].push((t, v));
            }
            for &(_, s, v) in rhere {
                if seen[rsig[s]] != i {
                    rpoints[s].push((t, v));
                }
            }
        } else {
            for &(_, s, _) in rhere {
                seen[rsig[s]] = i;
            }
            for &(_, s, v) in lhere {
                if (seen[lsig[s]] == i) == (op == T_LAND) {
                    lpoints[s].push((t, v));
                }
            }
        }
    }
    let keep = |series: Vec<StepSeries>, points: Vec<Vec<(i64, f64)>>| {
        series
            .into_iter()
            .zip(points)
            .filter(|(_, p)| !p.is_empty())
            .map(|(s, points)| StepSeries {
                labels: s.labels,
                points,
            })
            .collect::<Vec<_>>()
    };
    let mut out = keep(l, lpoints);
    out.extend(keep(r, rpoints));
    out
}

/// Arithmetic and comparisons between two vectors at every step, with `on`/`ignoring` and
/// `group_left`/`group_right`.
pub(super) fn arithmetic_steps(
    op: TokenId,
    l: Vec<StepSeries>,
    r: Vec<StepSeries>,
    b: &BinaryExpr,
    ret_bool: bool,
    g: Grid,
) -> Result<Vec<StepSeries>> {
    let modifier = b.modifier.as_ref();
    let matching = modifier.and_then(|m| m.matching.as_ref());
    let card = modifier.map_or(&VectorMatchCardinality::OneToOne, |m| &m.card);
    let one_to_one = matches!(card, VectorMatchCardinality::OneToOne);
    let one_to_many = matches!(card, VectorMatchCardinality::OneToMany(_));
    let (many, one) = if one_to_many { (r, l) } else { (l, r) };
    let ([msig, osig], n) = signature_ids([&many, &one], matching);
    let include: &[String] = card.labels().map_or(&[], |ls| &ls.labels);
    let (me, oe) = (by_step(&many, g), by_step(&one, g));
    // Per signature: the "one" side's (step, series, value) at the latest step it had one.
    let mut one_at: Vec<(usize, usize, f64)> = vec![(usize::MAX, 0, 0.0); n];
    // Per signature: the step at which it last matched (one-to-one matching).
    let mut matched = vec![usize::MAX; n];
    // Output series per (many, one) pair; the last pair of each "many" series, to skip the
    // map at steps where it matches the same series again.
    let mut pairs: HashMap<(usize, usize), usize> = HashMap::new();
    let mut last_pair: Vec<Option<(usize, usize)>> = vec![None; many.len()];
    let mut out: Vec<StepSeries> = Vec::new();
    // Grouped matching: output label sets by id, and the step each was last produced at.
    let mut label_ids: HashMap<LabelSet, usize> = HashMap::new();
    let mut out_label_id: Vec<usize> = Vec::new();
    let mut produced_at: Vec<usize> = Vec::new();
    let (mut ma, mut oa) = (0, 0);
    for i in 0..g.len() {
        let (mhere, ohere) = (at_step(&me, &mut ma, i), at_step(&oe, &mut oa, i));
        if mhere.is_empty() || ohere.is_empty() {
            continue;
        }
        for &(_, s, v) in ohere {
            let sig = osig[s];
            if one_at[sig].0 == i {
                let side = if one_to_many { "left" } else { "right" };
                return Err(Error::Execution(format!(
                    "found duplicate series for the match group on the {side} hand-side of the operation; many-to-many matching not allowed: matching labels must be unique on one side"
                )));
            }
            one_at[sig] = (i, s, v);
        }
        let t = g.time(i);
        for &(_, m, mv) in mhere {
            let sig = msig[m];
            let (step, o, ov) = one_at[sig];
            if step != i {
                continue;
            }
            if one_to_one {
                if matched[sig] == i {
                    return Err(Error::Execution(
                        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)".into(),
                    ));
                }
                matched[sig] = i;
            }
            let (vl, vr) = if one_to_many { (ov, mv) } else { (mv, ov) };
            let Some(value) = between_elements(op, vl, vr, ret_bool)? else {
                continue;
            };
            let idx = match last_pair[m] {
                Some((lo, idx)) if lo == o => idx,
                _ => {
                    let idx = *pairs.entry((m, o)).or_insert_with(|| {
                        let labels = result_labels(
                            many[m].labels.as_ref().clone(),
                            &one[o].labels,
                            op,
                            ret_bool,
                            one_to_one.then_some(matching).flatten(),
                            include,
                        );
                        let next = label_ids.len();
                        let id = *label_ids.entry(labels.clone()).or_insert(next);
                        if id == produced_at.len() {
                            produced_at.push(usize::MAX);
                        }
                        out_label_id.push(id);
                        out.push(StepSeries {
                            labels: Rc::new(labels),
                            points: Vec::new(),
                        });
                        out.len() - 1
                    });
                    last_pair[m] = Some((o, idx));
                    idx
                }
            };
            if !one_to_one {
                let id = out_label_id[idx];
                if produced_at[id] == i {
                    return Err(Error::Execution(
                        "multiple matches for labels: grouping labels must ensure unique matches"
                            .into(),
                    ));
                }
                produced_at[id] = i;
            }
            out[idx].points.push((t, value));
        }
    }
    Ok(out)
}
