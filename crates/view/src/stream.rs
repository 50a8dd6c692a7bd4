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
#[derive(Debug, Clone, PartialEq, Eq)]
struct Step {
    name: String,
    index: Option<usize>,
}

/// An output column.
#[derive(Debug, Clone)]
struct Col {
    collection: bool,
    /// A column of the `forEach` select (its values belong to a `forEach` item).
    each: bool,
}

/// A node of the plan's trie: the items reached by a sequence of steps.
#[derive(Debug, Clone, Default)]
struct Node {
    /// The step that leads here (empty at the two roots).
    name: Box<str>,
    index: Option<usize>,
    children: Vec<u32>,
    /// The output columns whose path ends here.
    outputs: Vec<u16>,
    /// The `forEach` path ends here: each item here is a `forEach` item.
    each: bool,
}

/// The one `forEach`/`forEachOrNull` select a streamed view may have.
#[derive(Debug, Clone)]
struct Each {
    /// The root of the `forEach` columns' paths: every node from it on is theirs, and their
    /// indexes are counted anew at each `forEach` item.
    root: u32,
    or_null: bool,
}

/// A view compiled for streaming: the trie of its columns' paths from the resource root
/// (node 0, with the `forEach` path), then the trie of the `forEach` columns' own paths.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    nodes: Vec<Node>,
    cols: Vec<Col>,
    each: Option<Each>,
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

impl Plan {
    /// The node `steps` lead to from `from`, added as needed.
    fn insert(&mut self, from: u32, steps: &[Step]) -> u32 {
        let mut at = from;
        for s in steps {
            let found = self.nodes[at as usize].children.iter().copied().find(|&c| {
                let n = &self.nodes[c as usize];
                *n.name == *s.name && n.index == s.index
            });
            at = match found {
                Some(c) => c,
                None => {
                    let c = self.nodes.len() as u32;
                    self.nodes.push(Node {
                        name: s.name.as_str().into(),
                        index: s.index,
                        ..Node::default()
                    });
                    self.nodes[at as usize].children.push(c);
                    c
                }
            };
        }
        at
    }
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
    // Per output column: its steps (from the root, or for a `forEach` column from the
    // `forEach` item) and whether it is a collection.
    let mut cols: Vec<(Vec<Step>, bool, bool)> = Vec::new();
    let mut each: Option<(Vec<Step>, bool)> = None;
    for s in &root.selects {
        if !s.selects.is_empty() || !s.union.is_empty() {
            return None;
        }
        let in_each = match &s.iter {
            Iter::Once => false,
            Iter::ForEach(c) | Iter::ForEachOrNull(c) if each.is_none() && !c.typed => {
                let p = steps(&c.expr).filter(|p| !p.is_empty())?;
                each = Some((p, matches!(s.iter, Iter::ForEachOrNull(_))));
                true
            }
            _ => return None,
        };
        for (c, collection) in &s.columns {
            if c.typed {
                return None;
            }
            let own = steps(&c.expr).filter(|s| !s.is_empty())?;
            cols.push((own, *collection, in_each));
        }
    }
    if cols.is_empty() || cols.len() >= u16::MAX as usize {
        return None;
    }
    let mut plan = Plan {
        nodes: vec![Node::default()],
        cols: cols
            .iter()
            .map(|(_, collection, each)| Col {
                collection: *collection,
                each: *each,
            })
            .collect(),
        each: None,
    };
    // The root's trie first (columns and the `forEach` path), then the `forEach` columns'
    // trie, so that its nodes are the last ones.
    for (i, (steps, _, _)) in cols.iter().enumerate().filter(|c| !c.1.2) {
        let n = plan.insert(0, steps);
        plan.nodes[n as usize].outputs.push(i as u16);
    }
    if let Some((path, or_null)) = each {
        let n = plan.insert(0, &path);
        plan.nodes[n as usize].each = true;
        let root = plan.nodes.len() as u32;
        plan.nodes.push(Node::default());
        for (i, (steps, _, _)) in cols.iter().enumerate().filter(|c| c.1.2) {
            let n = plan.insert(root, steps);
            plan.nodes[n as usize].outputs.push(i as u16);
        }
        plan.each = Some(Each { root, or_null });
    }
    Some(plan)
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
    /// Items seen per node, for `[n]`.
    counts: Vec<u32>,
    /// Per node, the object in which a member last matched its step (a repeated member name
    /// goes general).
    stamps: Vec<u64>,
    /// Objects numbered so far on this thread (so stamps need no reset between lines).
    serial: u64,
    /// Per column, the `forEach` item of its last value (`u32::MAX`: none yet).
    last: Vec<u32>,
    frames: Vec<Frame>,
    sets: Vec<u32>,
    unescaped: String,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// A range of node ids in [`Walk::sets`].
#[derive(Debug, Clone, Copy, Default)]
struct Set {
    start: u32,
    end: u32,
}

impl Set {
    #[inline]
    fn is_empty(self) -> bool {
        self.start == self.end
    }
}

/// The walk's state at one open JSON value (the root object, a member value or an array
/// element). Its node sets sit at the top of [`Walk::sets`], dropped when it is left.
#[derive(Debug, Clone, Copy, Default)]
struct Frame {
    /// Where its sets start in [`Walk::sets`].
    base: u32,
    /// Nodes this value is an item at (known once it is known not to be an array).
    at: Set,
    /// For a member value: the nodes whose step its name matched; its items (the value, or
    /// each element) are items at them (after the index filter).
    pending: Set,
    /// This object's number, for [`Scratch::stamps`] (0: not numbered yet).
    serial: u64,
    /// An element of an array.
    element: bool,
    /// The root's `resourceType`.
    root_type: bool,
}

struct Walk<'a, 'p> {
    line: &'a str,
    plan: &'p Plan,
    frames: Vec<Frame>,
    sets: Vec<u32>,
    counts: Vec<u32>,
    stamps: Vec<u64>,
    serial: u64,
    last: Vec<u32>,
    values: Vec<(u16, u32, Json<'a>)>,
    /// `forEach` items seen.
    each_items: u32,
    general: bool,
    resource_type: Option<Cow<'a, str>>,
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

    #[inline]
    fn top(&mut self) -> &mut Frame {
        let n = self.frames.len() - 1;
        &mut self.frames[n]
    }

    /// Appends to `sets` the nodes that an item of a value matched at `pending` is an item
    /// at (after the index filter, counting it), and returns them.
    fn items(&mut self, pending: Set) -> Set {
        let start = self.sets.len() as u32;
        for i in pending.start..pending.end {
            let n = self.sets[i as usize];
            let node = &self.plan.nodes[n as usize];
            if let Some(want) = node.index {
                let seen = &mut self.counts[n as usize];
                *seen += 1;
                if *seen as usize - 1 != want {
                    continue;
                }
            }
            self.sets.push(n);
            if node.each
                && let Some(e) = &self.plan.each
            {
                // A `forEach` item: its columns start here, their indexes counted anew.
                self.each_items += 1;
                self.counts[e.root as usize..].iter_mut().for_each(|c| *c = 0);
                self.sets.push(e.root);
            }
        }
        Set {
            start,
            end: self.sets.len() as u32,
        }
    }

    /// The current member value turns out to be one item (a scalar or an object).
    #[inline]
    fn resolve_item(&mut self) {
        let f = *self.top();
        if !f.pending.is_empty() {
            let at = self.items(f.pending);
            let top = self.top();
            top.pending = Set {
                start: at.start,
                end: at.start,
            };
            top.at = at;
        }
    }

    /// Whether a column's path ends at one of `set`'s nodes.
    #[inline]
    fn outputs_at(&self, set: Set) -> bool {
        self.sets[set.start as usize..set.end as usize]
            .iter()
            .any(|&n| !self.plan.nodes[n as usize].outputs.is_empty())
    }

}

impl Visitor for Walk<'_, '_> {
    fn enter_key(&mut self, depth: usize, key: &str) -> Result<bool, Reason> {
        if self.general {
            return Ok(false);
        }
        self.resolve_item();
        let f = *self.top();
        let root_type = depth == 1 && key == "resourceType";
        if f.at.is_empty() && !root_type {
            return Ok(false);
        }
        if self.outputs_at(f.at) {
            // An object as a column's value is written as JSON: the general path's.
            self.general = true;
            return Ok(false);
        }
        let (name, ext) = match key.as_bytes().first() {
            Some(b'_') => (&key[1..], true),
            _ => (key, false),
        };
        let nb = name.as_bytes();
        let plan = self.plan;
        let start = self.sets.len() as u32;
        let mut serial = f.serial;
        for i in f.at.start..f.at.end {
            let at = self.sets[i as usize];
            for &c in &plan.nodes[at as usize].children {
                let sb = plan.nodes[c as usize].name.as_bytes();
                // Both a match and a choice variant start with the step's first byte.
                if sb.first() != nb.first() {
                    continue;
                }
                if sb.len() == nb.len() && sb == nb {
                    if serial == 0 {
                        self.serial += 1;
                        serial = self.serial;
                        self.top().serial = serial;
                    }
                    if ext || self.stamps[c as usize] == serial {
                        // A `_name` element, or the member again: the general path's.
                        self.general = true;
                    } else {
                        self.stamps[c as usize] = serial;
                        self.sets.push(c);
                    }
                } else if nb.len() > sb.len()
                    && nb.starts_with(sb)
                    && nb[sb.len()].is_ascii_uppercase()
                {
                    // A choice variant (`valueQuantity` for `value`).
                    self.general = true;
                }
            }
        }
        let pending = Set {
            start,
            end: self.sets.len() as u32,
        };
        if self.general || (pending.is_empty() && !root_type) {
            self.sets.truncate(start as usize);
            return Ok(false);
        }
        self.frames.push(Frame {
            base: start,
            at: Set {
                start: pending.end,
                end: pending.end,
            },
            pending,
            serial: 0,
            element: false,
            root_type,
        });
        Ok(true)
    }

    fn enter_index(&mut self, _index: usize) -> Result<(), Reason> {
        let f = *self.top();
        if f.element && !f.at.is_empty() {
            // An array inside an array on a path.
            self.general = true;
        }
        let at = self.items(f.pending);
        self.frames.push(Frame {
            base: at.start,
            at,
            pending: Set {
                start: at.end,
                end: at.end,
            },
            serial: 0,
            element: true,
            root_type: false,
        });
        Ok(())
    }

    fn leave(&mut self) {
        if let Some(f) = self.frames.pop() {
            // The frame's sets are the top of `sets`.
            self.sets.truncate(f.base as usize);
        }
    }

    fn scalar(&mut self, value: Scalar<'_>) -> Result<(), Reason> {
        if self.general {
            return Ok(());
        }
        let f = *self.top();
        if f.root_type
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
                if f.element && !f.at.is_empty() {
                    self.general = true;
                }
                return Ok(());
            }
            // An item only with a `_name` element (which goes general), but counted by
            // nothing: when it could shift an index, the general path decides.
            Scalar::Null => {
                let n = self.frames.len() - 1;
                let in_path = !f.pending.is_empty()
                    || !f.at.is_empty()
                    || (f.element && n > 0 && !self.frames[n - 1].pending.is_empty());
                if in_path {
                    self.general = true;
                }
                return Ok(());
            }
            _ => {}
        }
        self.resolve_item();
        let at = self.top().at;
        if !self.outputs_at(at) {
            // (A scalar where more steps follow has no members: nothing.)
            return Ok(());
        }
        let j = match value {
            Scalar::Str(s) => Json::String(self.text(s)),
            Scalar::Num { raw, .. } => Json::Number(self.text(raw)),
            Scalar::Bool(b) => Json::Bool(b),
            // `{}` as a value is written as JSON: the general path's.
            _ => {
                self.general = true;
                return Ok(());
            }
        };
        let plan = self.plan;
        for i in at.start..at.end {
            let n = self.sets[i as usize];
            for &c in &plan.nodes[n as usize].outputs {
                let col = &plan.cols[c as usize];
                let item = if col.each { self.each_items } else { 0 };
                let last = &mut self.last[c as usize];
                if !col.collection && *last == item {
                    // Several values in a single-valued column: the general path's error.
                    self.general = true;
                }
                *last = item;
                self.values.push((c, item, j.clone()));
            }
        }
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
        let mut sets = std::mem::take(&mut scratch.sets);
        sets.clear();
        sets.push(0);
        let mut frames = std::mem::take(&mut scratch.frames);
        frames.clear();
        frames.push(Frame {
            at: Set { start: 0, end: 1 },
            pending: Set { start: 1, end: 1 },
            ..Frame::default()
        });
        let mut counts = std::mem::take(&mut scratch.counts);
        counts.clear();
        counts.resize(self.nodes.len(), 0);
        let mut stamps = std::mem::take(&mut scratch.stamps);
        // Stamps of earlier lines are older serials than any of this line: no reset.
        stamps.resize(self.nodes.len(), 0);
        let mut last = std::mem::take(&mut scratch.last);
        last.clear();
        last.resize(self.cols.len(), u32::MAX);
        let mut w = Walk {
            line,
            plan: self,
            frames,
            sets,
            counts,
            stamps,
            serial: scratch.serial,
            last,
            values: Vec::with_capacity(self.cols.len() + 4),
            each_items: 0,
            general: false,
            resource_type: None,
        };
        let walked = flatfhir_core::internal::walk::walk(line, &mut w, &mut scratch.unescaped);
        // Back to the scratch, for the next line.
        scratch.sets = std::mem::take(&mut w.sets);
        scratch.frames = std::mem::take(&mut w.frames);
        scratch.counts = std::mem::take(&mut w.counts);
        scratch.stamps = std::mem::take(&mut w.stamps);
        scratch.serial = w.serial;
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
                .filter(move |(k, i, _)| *k as usize == col && (!c.each || *i == item))
                .map(|(_, _, j)| Item::Node(j, None, None));
            Cell(if c.collection {
                CellInner::List(items.collect())
            } else {
                items.next().map_or(CellInner::Null, CellInner::One)
            })
        };
        let row = |item: u32| -> Row<'a> {
            self.cols
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
