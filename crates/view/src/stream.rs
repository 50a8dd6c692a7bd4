//! The streaming fast path: views whose columns are all plain member paths (`a.b.c`, with
//! `[n]` or `first()` on any step) are evaluated while core's walker streams over the line,
//! with no tree and no FHIRPath evaluator. Members no column names are validated and skipped.
//!
//! The walk follows each column's steps from the root: a member whose name is a column's next
//! step yields that step's items (each element of an array value, else the value itself),
//! counted per step so that `[n]` keeps the n-th item of the whole collection, as FHIRPath
//! does (document order is collection order). A scalar at a column's last step is a value.
//!
//! Anything whose answer needs more than that is left to the general path for that line
//! (the line is walked again and evaluated on a tree): a primitive's `_name` element, a
//! choice-typed variant of a step (`valueQuantity` for `value`), a repeated member name, a
//! `null` or nested array on a path, an object at a column's last step (written as JSON),
//! and several values in a column that is not a collection (an error the general path words).
//! So the values are the general evaluator's by construction; a property test checks it.

use std::borrow::Cow;

use flatfhir_core::internal::walk::{Reason, Scalar, Visitor};

use crate::ast::{Expr, Func, Lit};
use crate::eval::Item;
use crate::json::{Json, JsonError};
use crate::rows::{Cell, CellInner, Row};
use crate::view::{Iter, Select};

/// One step of a column's path: a member name, and the index kept of its items (`[n]`,
/// `first()` is `[0]`), if any.
#[derive(Debug, Clone)]
struct Step {
    name: String,
    index: Option<usize>,
}

#[derive(Debug, Clone)]
struct Col {
    /// From the resource root (a `forEach` column's start with the `forEach` path).
    steps: Vec<Step>,
    collection: bool,
    /// A column of the `forEach` select: its steps after the `forEach` path's.
    each: Option<usize>,
}

/// The one `forEach`/`forEachOrNull` select a streamed view may have.
#[derive(Debug, Clone)]
struct Each {
    /// Index of its pseudo-column (its path) in `cols`, after the output columns.
    col: usize,
    or_null: bool,
}

/// A view compiled for streaming: its columns in output order, then the `forEach` path.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    cols: Vec<Col>,
    outputs: usize,
    each: Option<Each>,
    /// Where each column's step counters start in the counter buffer.
    count_base: Vec<usize>,
}

/// The steps of a plain member path, or `None` when the expression is anything else.
fn steps(e: &Expr) -> Option<Vec<Step>> {
    match e {
        Expr::This => Some(Vec::new()),
        // A lower-case name: upper-case ones may be type names (`Patient.name`).
        Expr::Member(b, n) if n.starts_with(|c: char| c.is_ascii_lowercase()) => {
            let mut s = steps(b)?;
            s.push(Step {
                name: n.clone(),
                index: None,
            });
            Some(s)
        }
        Expr::Indexer(b, i) => match **i {
            Expr::Lit(Lit::Int(n)) if n >= 0 => with_index(steps(b)?, n as usize),
            _ => None,
        },
        Expr::Call(b, Func::First, args) if args.is_empty() => with_index(steps(b)?, 0),
        _ => None,
    }
}

/// Adds an index to the last step (a second index is not taken: `a[1][0]` stays general).
fn with_index(mut s: Vec<Step>, n: usize) -> Option<Vec<Step>> {
    let last = s.last_mut()?;
    if last.index.is_some() {
        return None;
    }
    last.index = Some(n);
    Some(s)
}

/// The streaming plan of a view, when every path of it is a plain member path: no `where`,
/// no union or nested select, at most one `forEach`/`forEachOrNull` (a plain path too) in a
/// top-level select, no typed evaluation.
pub(crate) fn plan(wheres_empty: bool, root: &Select) -> Option<Plan> {
    if !wheres_empty || !matches!(root.iter, Iter::Once) || !root.union.is_empty() {
        return None;
    }
    if !root.columns.is_empty() {
        return None;
    }
    let mut cols = Vec::new();
    let mut each: Option<(Vec<Step>, bool)> = None;
    for s in &root.selects {
        if !s.selects.is_empty() || !s.union.is_empty() {
            return None;
        }
        let prefix = match &s.iter {
            Iter::Once => None,
            Iter::ForEach(c) | Iter::ForEachOrNull(c) if each.is_none() && !c.typed => {
                let p = steps(&c.expr).filter(|p| !p.is_empty())?;
                each = Some((p.clone(), matches!(s.iter, Iter::ForEachOrNull(_))));
                Some(p)
            }
            _ => return None,
        };
        for (c, collection) in &s.columns {
            if c.typed {
                return None;
            }
            let own = steps(&c.expr).filter(|s| !s.is_empty())?;
            let (steps, each) = match &prefix {
                Some(p) => (p.iter().cloned().chain(own).collect(), Some(p.len())),
                None => (own, None),
            };
            cols.push(Col {
                steps,
                collection: *collection,
                each,
            });
        }
    }
    let outputs = cols.len();
    let each = each.map(|(steps, or_null)| {
        cols.push(Col {
            steps,
            collection: true,
            each: None,
        });
        Each {
            col: outputs,
            or_null,
        }
    });
    let count_base = cols
        .iter()
        .scan(0, |at, c| {
            let base = *at;
            *at += c.steps.len();
            Some(base)
        })
        .collect();
    (outputs > 0 && cols.len() < u16::MAX as usize).then_some(Plan {
        cols,
        outputs,
        each,
        count_base,
    })
}

/// What streaming one line gave.
pub(crate) enum Outcome<'a> {
    /// Not of the view's type.
    OtherType,
    /// The rows: per column, its values and (for `forEach` columns) the item each is from;
    /// and the number of `forEach` items.
    Rows(Values<'a>),
    /// The line needs the general path.
    General,
}

/// The values of a line in the order found: column, the `forEach` item it came from (0
/// outside one), value; and the number of `forEach` items.
pub(crate) struct Values<'a> {
    values: Vec<(u16, u32, Json<'a>)>,
    items: u32,
}

/// Buffers reused from line to line (per thread): a line allocates only its values.
#[derive(Default)]
struct Scratch {
    spare: Vec<Vec<Pos>>,
    /// Items seen per (column, step), for `[n]`, at `Plan::count_base[column] + step`.
    counts: Vec<usize>,
    /// Per column, the `forEach` item of its last value (`u32::MAX`: none yet).
    last: Vec<u32>,
    levels: Vec<Level>,
    unescaped: String,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// A column position at a JSON node: column `c` has matched its first `k` steps here.
type Pos = (u16, u16);

#[derive(Default)]
struct Level {
    /// Positions at this node, when it is an item (an object, or a scalar).
    at: Vec<Pos>,
    /// For a member value not yet known to be an array or an item: the positions its items
    /// will take (after the index filter).
    pending: Vec<Pos>,
    /// Positions that matched a member of this object (a repeated name goes general).
    matched: Vec<Pos>,
    /// An element of an array.
    element: bool,
    root_type: bool,
}

struct Walk<'a, 'p> {
    line: &'a str,
    plan: &'p Plan,
    levels: Vec<Level>,
    counts: Vec<usize>,
    last: Vec<u32>,
    values: Vec<(u16, u32, Json<'a>)>,
    /// `forEach` items seen.
    each_items: u32,
    general: bool,
    resource_type: Option<Cow<'a, str>>,
    /// Spare position vectors, reused across levels.
    spare: Vec<Vec<Pos>>,
}

impl<'a> Walk<'a, '_> {
    #[inline]
    fn text(&self, s: &str) -> Cow<'a, str> {
        let base = self.line.as_ptr() as usize;
        let p = s.as_ptr() as usize;
        if p >= base && p + s.len() <= base + self.line.len() {
            let off = p - base;
            Cow::Borrowed(&self.line[off..off + s.len()])
        } else {
            Cow::Owned(s.to_string())
        }
    }

    fn vec(&mut self) -> Vec<Pos> {
        self.spare.pop().unwrap_or_default()
    }

    fn recycle(&mut self, mut v: Vec<Pos>) {
        if v.capacity() > 0 {
            v.clear();
            self.spare.push(v);
        }
    }

    /// The items `pending` becomes at one item (the value, or one element of it).
    fn items(&mut self, pending: &[Pos], out: &mut Vec<Pos>) {
        for &(c, k) in pending {
            let step = &self.plan.cols[c as usize].steps[k as usize - 1];
            if let Some(n) = step.index {
                let seen = &mut self.counts[self.plan.count_base[c as usize] + k as usize - 1];
                *seen += 1;
                if *seen - 1 != n {
                    continue;
                }
            }
            out.push((c, k));
            if let Some(e) = &self.plan.each
                && c as usize == e.col
                && k as usize == self.plan.cols[e.col].steps.len()
            {
                // A `forEach` item: its columns start here, their indexes counted anew.
                self.each_items += 1;
                for (i, col) in self.plan.cols[..self.plan.outputs].iter().enumerate() {
                    if let Some(base) = col.each {
                        let at = self.plan.count_base[i];
                        let len = self.plan.cols[i].steps.len();
                        self.counts[at + base..at + len]
                            .iter_mut()
                            .for_each(|n| *n = 0);
                        out.push((i as u16, base as u16));
                    }
                }
            }
        }
    }

    /// The current member value turns out to be one item (a scalar or an object).
    fn resolve_item(&mut self) {
        let n = self.levels.len() - 1;
        if self.levels[n].pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.levels[n].pending);
        let mut at = std::mem::take(&mut self.levels[n].at);
        self.items(&pending, &mut at);
        self.levels[n].at = at;
        self.recycle(pending);
    }
}

impl Visitor for Walk<'_, '_> {
    fn enter_key(&mut self, depth: usize, key: &str) -> Result<bool, Reason> {
        if self.general {
            return Ok(false);
        }
        self.resolve_item();
        let n = self.levels.len() - 1;
        let plan = self.plan;
        let last = |&(c, k): &Pos| {
            (c as usize) < plan.outputs && k as usize == plan.cols[c as usize].steps.len()
        };
        if self.levels[n].at.iter().any(last) {
            // An object as a column's value is written as JSON: the general path's.
            self.general = true;
            return Ok(false);
        }
        let root_type = depth == 1 && key == "resourceType";
        if self.levels[n].at.is_empty() && !root_type {
            return Ok(false);
        }
        let (name, ext) = match key.as_bytes().first() {
            Some(b'_') => (&key[1..], true),
            _ => (key, false),
        };
        let mut pending = self.vec();
        let level = &mut self.levels[n];
        let nb = name.as_bytes();
        for &(c, k) in &level.at {
            let Some(step) = plan.cols[c as usize].steps.get(k as usize) else {
                continue;
            };
            let sb = step.name.as_bytes();
            // Both a match and a choice variant start with the step's first byte.
            if sb.first() != nb.first() {
                continue;
            }
            if sb.len() == nb.len() && sb == nb {
                if ext || level.matched.contains(&(c, k)) {
                    // A `_name` element, or the member again: the general path's.
                    self.general = true;
                } else {
                    level.matched.push((c, k));
                    pending.push((c, k + 1));
                }
            } else if nb.len() > sb.len() && nb.starts_with(sb) && nb[sb.len()].is_ascii_uppercase()
            {
                // A choice variant (`valueQuantity` for `value`).
                self.general = true;
            }
        }
        if self.general || (pending.is_empty() && !root_type) {
            self.recycle(pending);
            return Ok(false);
        }
        let at = self.vec();
        let matched = self.vec();
        self.levels.push(Level {
            at,
            pending,
            matched,
            element: false,
            root_type,
        });
        Ok(true)
    }

    fn enter_index(&mut self, _index: usize) -> Result<(), Reason> {
        let n = self.levels.len() - 1;
        let mut at = self.vec();
        if self.levels[n].element && !self.levels[n].at.is_empty() {
            // An array inside an array on a path.
            self.general = true;
        }
        let pending = std::mem::take(&mut self.levels[n].pending);
        self.items(&pending, &mut at);
        self.levels[n].pending = pending;
        let matched = self.vec();
        let p = self.vec();
        self.levels.push(Level {
            at,
            pending: p,
            matched,
            element: true,
            root_type: false,
        });
        Ok(())
    }

    fn leave(&mut self) {
        if let Some(l) = self.levels.pop() {
            self.recycle(l.at);
            self.recycle(l.pending);
            self.recycle(l.matched);
        }
    }

    fn scalar(&mut self, value: Scalar<'_>) -> Result<(), Reason> {
        if self.general {
            return Ok(());
        }
        let n = self.levels.len() - 1;
        if self.levels[n].root_type
            && let Scalar::Str(s) = value
        {
            if self.resource_type.is_some() {
                self.general = true;
            }
            self.resource_type = Some(self.text(s));
        }
        match value {
            // No items, unless it is an element (an item that is an empty array).
            Scalar::EmptyArray => {
                if self.levels[n].element && !self.levels[n].at.is_empty() {
                    self.general = true;
                }
                return Ok(());
            }
            // An item only with a `_name` element (which goes general), but counted by
            // nothing: when it could shift an index, the general path decides.
            Scalar::Null => {
                let l = &self.levels[n];
                let in_path = !l.pending.is_empty()
                    || !l.at.is_empty()
                    || (l.element && n > 0 && !self.levels[n - 1].pending.is_empty());
                if in_path {
                    self.general = true;
                }
                return Ok(());
            }
            _ => {}
        }
        self.resolve_item();
        let at = std::mem::take(&mut self.levels[n].at);
        let plan = self.plan;
        let last = |&(c, k): &Pos| {
            (c as usize) < plan.outputs && k as usize == plan.cols[c as usize].steps.len()
        };
        if at.iter().any(last) {
            let j = match value {
                Scalar::Str(s) => Json::String(self.text(s)),
                Scalar::Num { raw, .. } => Json::Number(self.text(raw)),
                Scalar::Bool(b) => Json::Bool(b),
                // `{}` as a value is written as JSON: the general path's.
                _ => {
                    self.general = true;
                    Json::Null
                }
            };
            for &(c, _) in at.iter().filter(|p| last(p)) {
                let col = &plan.cols[c as usize];
                let item = if col.each.is_some() {
                    self.each_items
                } else {
                    0
                };
                let last = &mut self.last[c as usize];
                if !col.collection && *last == item {
                    // Several values in a single-valued column: the general path's error.
                    self.general = true;
                }
                *last = item;
                self.values.push((c, item, j.clone()));
            }
        }
        // (A scalar where more steps follow has no members: nothing.)
        self.levels[n].at = at;
        Ok(())
    }
}

impl Plan {
    /// Streams one line. Walker errors are returned as they are (the same as `convert`'s).
    pub(crate) fn run<'a>(&self, line: &'a str, resource: &str) -> Result<Outcome<'a>, JsonError> {
        SCRATCH.with(|cell| {
            let mut scratch = cell.take();
            let r = self.run_with(line, resource, &mut scratch);
            cell.replace(scratch);
            r
        })
    }

    fn run_with<'a>(
        &self,
        line: &'a str,
        resource: &str,
        scratch: &mut Scratch,
    ) -> Result<Outcome<'a>, JsonError> {
        let mut spare = std::mem::take(&mut scratch.spare);
        let mut at = spare.pop().unwrap_or_default();
        // `forEach` columns start at each `forEach` item, not at the root.
        at.extend(
            (0..self.cols.len() as u16)
                .filter(|&c| self.cols[c as usize].each.is_none())
                .map(|c| (c, 0)),
        );
        let mut levels = std::mem::take(&mut scratch.levels);
        levels.clear();
        levels.push(Level {
            at,
            ..Level::default()
        });
        let mut counts = std::mem::take(&mut scratch.counts);
        counts.clear();
        counts.resize(
            self.count_base
                .last()
                .map_or(0, |b| b + self.cols[self.cols.len() - 1].steps.len()),
            0,
        );
        let mut last = std::mem::take(&mut scratch.last);
        last.clear();
        last.resize(self.outputs, u32::MAX);
        let mut w = Walk {
            line,
            plan: self,
            levels,
            counts,
            last,
            values: Vec::with_capacity(self.outputs + 4),
            each_items: 0,
            general: false,
            resource_type: None,
            spare,
        };
        let walked = flatfhir_core::internal::walk::walk(line, &mut w, &mut scratch.unescaped);
        // Back to the scratch, for the next line.
        for l in w.levels.drain(..) {
            for mut v in [l.at, l.pending, l.matched] {
                if v.capacity() > 0 {
                    v.clear();
                    w.spare.push(v);
                }
            }
        }
        scratch.spare = std::mem::take(&mut w.spare);
        scratch.levels = std::mem::take(&mut w.levels);
        scratch.counts = std::mem::take(&mut w.counts);
        scratch.last = std::mem::take(&mut w.last);
        walked.map_err(|reason| JsonError { reason })?;
        if w.general {
            return Ok(Outcome::General);
        }
        if w.resource_type.as_deref() != Some(resource) {
            // Not a string, or another type: the general path decides.
            return Ok(if w.resource_type.is_some() {
                Outcome::OtherType
            } else {
                Outcome::General
            });
        }
        Ok(Outcome::Rows(Values {
            values: w.values,
            items: w.each_items,
        }))
    }

    /// The rows of a streamed line: one, or one per `forEach` item (none when there is no
    /// item, one with nulls for `forEachOrNull`).
    pub(crate) fn rows<'a>(&self, v: &'a Values<'a>) -> Vec<Row<'a>> {
        let cell = |col: usize, c: &Col, item: u32| {
            let mut items = v
                .values
                .iter()
                .filter(move |(k, i, _)| *k as usize == col && (c.each.is_none() || *i == item))
                .map(|(_, _, j)| Item::Node(j, None, None));
            Cell(if c.collection {
                CellInner::List(items.collect())
            } else {
                items.next().map_or(CellInner::Null, CellInner::One)
            })
        };
        let row = |item: u32| -> Row<'a> {
            self.cols[..self.outputs]
                .iter()
                .enumerate()
                .map(|(i, c)| cell(i, c, item))
                .collect()
        };
        match &self.each {
            None => vec![row(0)],
            // Items are numbered from 1; 0 matches no `forEach` value.
            Some(e) if v.items == 0 => {
                if e.or_null {
                    vec![row(0)]
                } else {
                    Vec::new()
                }
            }
            Some(_) => (1..=v.items).map(row).collect(),
        }
    }
}
