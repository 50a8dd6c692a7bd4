//! The streaming fast path: views whose columns are all plain member paths (`a.b.c`, with
//! `[n]` or `first()` on any step) are evaluated while core's walker streams over the line,
//! with no tree and no FHIRPath evaluator. Members no column names are validated and skipped.
//!
//! The columns' paths form a trie from the root (the `forEach` columns' own paths a second
//! trie, entered at each `forEach` item). The walk keeps, per open JSON value, the trie nodes
//! it is an item at: a member whose name is a child's step yields that child's items (each
//! element of an array value, else the value itself), counted per node so that `[n]` keeps
//! the n-th item of the whole collection, as FHIRPath does (document order is collection
//! order). A scalar at a node where a column's path ends is a value.
//!
//! Each node remembers (per thread) the member names met at its objects, in first-seen
//! order, with what each does ([`Memo`]): the next one is offered to the walker as the
//! expected name, so most names are neither scanned nor matched.
//!
//! A value is kept as its place in the line ([`Val`]: offsets and kind; only a string with
//! escapes is copied, unescaped), in a slot per column and row (`forEach` item), so a line
//! builds no nodes and its buffers are reused by the next line; the sink takes the values
//! while they are at hand ([`Sink::streamed`]), and makes a JSON node of one only where a
//! cell is converted the general way (numbers, booleans, other sinks).
//!
//! Anything whose answer needs more than that is left to the general path for that line
//! (the line is walked again and evaluated on a tree): a primitive's `_name` element, a
//! choice-typed variant of a step (`valueQuantity` for `value`), a repeated member name, a
//! `null` or nested array on a path, an object at a column's last step (written as JSON),
//! and several values in a column that is not a collection (an error the general path words).
//! So the values are the general evaluator's by construction; a property test checks it.

use std::borrow::Cow;

use std::sync::atomic::{AtomicU64, Ordering};

use flatfhir_core::internal::walk::{Reason, Scalar, Visitor, same_bytes};

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
    /// Names this plan's trie in the per-thread key memos ([`Bufs::memos`]).
    id: u64,
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
    static PLANS: AtomicU64 = AtomicU64::new(1);
    let mut plan = Plan {
        id: PLANS.fetch_add(1, Ordering::Relaxed),
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
pub(crate) enum Outcome {
    /// Not of the view's type.
    OtherType,
    /// Its values went to the sink.
    Done,
    /// The line needs the general path.
    General,
}

/// A streamed value: its kind and where its text is. Plain data (offsets, not borrowed text),
/// so the buffers holding values are reused from line to line and nothing is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Val {
    /// No value (an empty slot).
    None,
    /// A string without escapes: `line[start..end]`.
    Str(usize, usize),
    /// A string with escapes, unescaped: `esc[start..end]` of [`Values`].
    Esc(usize, usize),
    /// A number's source text: `line[start..end]`.
    Num(usize, usize),
    /// `true` / `false`.
    Bool(bool),
}

/// The values of a streamed line. A column that is not a collection has a slot per row:
/// `slots[item * width + column]`, where `item` is the `forEach` item (numbered from 1; 0
/// holds the columns outside the `forEach`). Collection columns' values are in `list`, in
/// document order: column, `forEach` item (0 outside one), value.
pub(crate) struct Values<'v> {
    line: &'v str,
    esc: &'v str,
    slots: &'v [Val],
    list: &'v [(u16, u32, Val)],
    /// The number of `forEach` items.
    items: u32,
}

impl<'v> Values<'v> {
    /// The value as a JSON node (borrowing the line), `None` for an empty slot.
    #[inline]
    pub(crate) fn json(&self, v: Val) -> Option<Json<'v>> {
        Some(match v {
            Val::None => return None,
            Val::Str(a, e) => Json::String(Cow::Borrowed(&self.line[a..e])),
            Val::Esc(a, e) => Json::String(Cow::Borrowed(&self.esc[a..e])),
            Val::Num(a, e) => Json::Number(Cow::Borrowed(&self.line[a..e])),
            Val::Bool(b) => Json::Bool(b),
        })
    }

    /// The `k`-th value of the list (see [`Plan::list_of`]).
    #[inline]
    pub(crate) fn list_val(&self, k: usize) -> Val {
        self.list[k].2
    }

    /// The text of a string value.
    #[inline]
    pub(crate) fn str(&self, v: Val) -> Option<&'v str> {
        match v {
            Val::Str(a, e) => Some(&self.line[a..e]),
            Val::Esc(a, e) => Some(&self.esc[a..e]),
            _ => None,
        }
    }
}

/// The cell of a value made a node by [`Values::json`] (null for none).
#[inline]
pub(crate) fn one_cell<'j>(j: &'j Option<Json<'j>>) -> Cell<'j> {
    Cell(match j {
        Some(j) => CellInner::One(Item::Node(j, None, None)),
        None => CellInner::Null,
    })
}

/// The cell of a collection column from its values made nodes.
pub(crate) fn list_cell<'j>(js: &'j [Json<'j>]) -> Cell<'j> {
    Cell(CellInner::List(
        js.iter().map(|j| Item::Node(j, None, None)).collect(),
    ))
}

/// What a member name does at an object that is an item at one node: learnt from the lines
/// (see [`Memo`]), it is the same at every object of that node.
#[derive(Debug, Clone)]
enum Action {
    /// Not on any path: validated and skipped.
    Skip,
    /// The line needs the general path.
    General,
    /// The member's items are items at `kids`; `root_type`: it is the root's `resourceType`.
    Enter { kids: Box<[u32]>, root_type: bool },
    /// [`Action::Enter`] of one node, not the root's `resourceType` (most members entered).
    EnterOne(u32),
}

/// A member name learnt at a node, in [`Bufs::keys`].
#[derive(Debug, Clone)]
struct MemoKey {
    key: Box<str>,
    /// Needs no escaping in JSON, so the walker may compare the line with it.
    plain: bool,
    action: Action,
    /// The name learnt after it at the same node ([`NO_KEY`]: none yet).
    next: u32,
}

/// The member names met at the objects of one node, in first-seen order, with what each
/// does. FHIR writes members in a fixed order, so the name after the one just read is
/// usually the next one here: it is offered to the walker as the expected name (compared
/// with the line in place of scanning it), and its action needs no matching.
///
/// The names of all nodes are in one list ([`Bufs::keys`]), each node's linked in order
/// from `head`: the expected name is one index away, with no per-node list to look up.
#[derive(Debug, Clone)]
struct Memo {
    head: u32,
    tail: u32,
    len: u32,
}

impl Default for Memo {
    fn default() -> Self {
        Memo {
            head: NO_KEY,
            tail: NO_KEY,
            len: 0,
        }
    }
}

/// No key: the end of a node's names, or no name expected.
const NO_KEY: u32 = u32::MAX;

/// Member names remembered per node, at most (hostile input with ever new names does not
/// grow the memo without bound; those names take the matching path).
const MEMO_KEYS: u32 = 64;

/// No memo: a frame whose items are at several nodes, or at none.
const NO_MEMO: u32 = u32::MAX;

/// Buffers reused from line to line (per thread): a line allocates only its values.
#[derive(Default)]
struct Scratch {
    /// The plan whose trie `bufs.memos` belong to.
    plan: u64,
    bufs: Bufs,
    unescaped: String,
}

/// What a [`Walk`] works in, kept in the [`Scratch`] and borrowed by each line's walk (not
/// moved out and back: a dozen buffers moved twice a line were ~3 % of a view's instructions).
#[derive(Default)]
struct Bufs {
    /// Per node of the scratch's plan.
    memos: Vec<Memo>,
    /// The names the memos link (see [`Memo`]).
    keys: Vec<MemoKey>,
    /// Items seen per node, for `[n]`.
    counts: Vec<u32>,
    /// Per node, the object in which a member last matched its step (a repeated member name
    /// goes general).
    stamps: Vec<u64>,
    /// Objects numbered so far on this thread (so stamps need no reset between lines).
    serial: u64,
    frames: Vec<Frame>,
    sets: Vec<u32>,
    /// A line's values (see [`Values`]); `width` slots per row.
    slots: Vec<Val>,
    list: Vec<(u16, u32, Val)>,
    esc: String,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// A range of node ids in [`Bufs::sets`].
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
/// element). Its node sets sit at the top of [`Bufs::sets`], dropped when it is left.
#[derive(Debug, Clone, Copy, Default)]
struct Frame {
    /// Where its sets start in [`Bufs::sets`].
    base: u32,
    /// Nodes this value is an item at (known once it is known not to be an array).
    at: Set,
    /// For a member value: the nodes whose step its name matched; its items (the value, or
    /// each element) are items at them (after the index filter).
    pending: Set,
    /// This object's number, for [`Bufs::stamps`] (0: not numbered yet).
    serial: u64,
    /// The node whose [`Memo`] this object's members follow ([`NO_MEMO`]: none), and the
    /// name expected next: its index in [`Bufs::keys`] ([`NO_KEY`]: none).
    memo: u32,
    hint: u32,
    /// An element of an array.
    element: bool,
    /// The root's `resourceType`.
    root_type: bool,
}

struct Walk<'a, 'p, 'b> {
    line: &'a str,
    plan: &'p Plan,
    b: &'b mut Bufs,
    width: usize,
    /// `forEach` items seen.
    each_items: u32,
    general: bool,
    resource_type: Option<Cow<'a, str>>,
}

impl<'a> Walk<'a, '_, '_> {
    /// Where `s` is in the line, if it is part of it (else it is in the walker's unescape
    /// buffer).
    #[inline]
    fn offsets(&self, s: &str) -> Option<(usize, usize)> {
        let base = self.line.as_ptr() as usize;
        let p = s.as_ptr() as usize;
        (p >= base && p + s.len() <= base + self.line.len()).then(|| (p - base, p - base + s.len()))
    }

    #[inline]
    fn text(&self, s: &str) -> Cow<'a, str> {
        match self.offsets(s) {
            Some((a, e)) => Cow::Borrowed(&self.line[a..e]),
            None => Cow::Owned(s.to_string()),
        }
    }

    /// A string value: its place in the line, or (unescaped) a copy in `esc`.
    #[inline]
    fn val_str(&mut self, s: &str) -> Val {
        match self.offsets(s) {
            Some((a, e)) => Val::Str(a, e),
            None => self.val_esc(s),
        }
    }

    /// [`Walk::val_str`] of a string with escapes (rare in FHIR): copied.
    #[cold]
    #[inline(never)]
    fn val_esc(&mut self, s: &str) -> Val {
        let a = self.b.esc.len();
        self.b.esc.push_str(s);
        Val::Esc(a, self.b.esc.len())
    }

    /// Puts a value of output column `c`: in its slot of the current row, or for a
    /// collection column in `list`.
    #[inline]
    fn put(&mut self, c: u16, val: Val) {
        let col = &self.plan.cols[c as usize];
        let item = if col.each { self.each_items } else { 0 };
        if col.collection {
            self.b.list.push((c, item, val));
            return;
        }
        let i = item as usize * self.width + c as usize;
        let slot = &mut self.b.slots[i];
        if *slot != Val::None {
            // Several values in a single-valued column: the general path's error.
            self.general = true;
        }
        *slot = val;
    }

    #[inline]
    fn top(&mut self) -> &mut Frame {
        let n = self.b.frames.len() - 1;
        &mut self.b.frames[n]
    }

    /// Appends to `sets` the nodes that an item of a value matched at `pending` is an item
    /// at (after the index filter, counting it), and returns them.
    #[inline(always)]
    fn items(&mut self, pending: Set) -> Set {
        // Most values match one node, with no index and no `forEach`: the item is at it.
        if pending.end - pending.start == 1 {
            let n = self.b.sets[pending.start as usize];
            let node = &self.plan.nodes[n as usize];
            if node.index.is_none() && !node.each {
                let start = self.b.sets.len() as u32;
                self.b.sets.push(n);
                return Set {
                    start,
                    end: start + 1,
                };
            }
        }
        self.items_counted(pending)
    }

    /// [`Walk::items`] for any `pending`.
    #[inline(never)]
    fn items_counted(&mut self, pending: Set) -> Set {
        let start = self.b.sets.len() as u32;
        for i in pending.start..pending.end {
            let n = self.b.sets[i as usize];
            let node = &self.plan.nodes[n as usize];
            if let Some(want) = node.index {
                let seen = &mut self.b.counts[n as usize];
                *seen += 1;
                if *seen as usize - 1 != want {
                    continue;
                }
            }
            // The end of the `forEach` path alone adds nothing but its `forEach` item.
            if !(node.each && node.children.is_empty() && node.outputs.is_empty()) {
                self.b.sets.push(n);
            }
            if node.each
                && let Some(e) = &self.plan.each
            {
                // A `forEach` item: its columns start here, their indexes counted anew,
                // their values in a new row of slots.
                self.each_items += 1;
                let n = self.b.slots.len() + self.width;
                self.b.slots.resize(n, Val::None);
                self.b.counts[e.root as usize..]
                    .iter_mut()
                    .for_each(|c| *c = 0);
                self.b.sets.push(e.root);
            }
        }
        Set {
            start,
            end: self.b.sets.len() as u32,
        }
    }

    /// The current member value turns out to be one item (a scalar or an object). Called
    /// for every member and leaf, so the usual case (resolved already) is a test inline.
    #[inline(always)]
    fn resolve_item(&mut self) {
        let n = self.b.frames.len() - 1;
        let pending = self.b.frames[n].pending;
        if !pending.is_empty() {
            self.resolve_pending(pending);
        }
    }

    /// The nodes the scalar at the current position is an item at. A member value that is
    /// a scalar is one item: when its name matched one node with no index and no `forEach`
    /// (the usual case), the item is at that node, which is the pending set itself, and
    /// nothing is kept for it (the walker leaves the member next).
    #[inline(always)]
    fn scalar_at(&mut self) -> Set {
        let n = self.b.frames.len() - 1;
        let f = self.b.frames[n];
        if f.pending.is_empty() {
            return f.at;
        }
        if f.pending.end - f.pending.start == 1 {
            let node = &self.plan.nodes[self.b.sets[f.pending.start as usize] as usize];
            if node.index.is_none() && !node.each {
                return f.pending;
            }
        }
        self.resolve_pending(f.pending);
        self.b.frames[n].at
    }

    /// The column a scalar member value goes to when it is the usual leaf: its name matched
    /// one node (not the root's `resourceType`), with no index and no `forEach`, where exactly
    /// one column's path ends.
    #[inline(always)]
    fn one_output(&self) -> Option<u16> {
        let f = &self.b.frames[self.b.frames.len() - 1];
        if f.pending.end.wrapping_sub(f.pending.start) != 1 || f.root_type {
            return None;
        }
        let node = &self.plan.nodes[self.b.sets[f.pending.start as usize] as usize];
        match *node.outputs {
            [c] if node.index.is_none() && !node.each => Some(c),
            _ => None,
        }
    }

    #[inline(never)]
    fn resolve_pending(&mut self, pending: Set) {
        let at = self.items(pending);
        let memo = self.memo_of(at);
        let hint = self.first_key(memo);
        let top = self.top();
        top.pending = Set {
            start: at.start,
            end: at.start,
        };
        top.at = at;
        top.memo = memo;
        top.hint = hint;
    }

    /// The first name learnt at node `memo` ([`NO_KEY`] for none, or for [`NO_MEMO`]).
    #[inline]
    fn first_key(&self, memo: u32) -> u32 {
        match self.b.memos.get(memo as usize) {
            Some(m) => m.head,
            None => NO_KEY,
        }
    }

    /// The memo an object that is an item at `at` follows: its node's, when it is one node.
    #[inline]
    fn memo_of(&self, at: Set) -> u32 {
        if at.end - at.start == 1 {
            self.b.sets[at.start as usize]
        } else {
            NO_MEMO
        }
    }

    /// Pushes onto `sets` the nodes whose step member `key` of an object at `at` matches,
    /// without numbering the object; returns whether the key sends the line to the general
    /// path instead (see [`Visitor::enter_key`] below).
    fn match_key(&mut self, at: Set, key: &str) -> bool {
        if self.outputs_at(at) {
            // An object as a column's value is written as JSON: the general path's.
            return true;
        }
        let (name, ext) = match key.as_bytes().first() {
            Some(b'_') => (&key[1..], true),
            _ => (key, false),
        };
        let nb = name.as_bytes();
        let plan = self.plan;
        let mut general = false;
        for i in at.start..at.end {
            let at = self.b.sets[i as usize];
            for &c in &plan.nodes[at as usize].children {
                let sb = plan.nodes[c as usize].name.as_bytes();
                // Both a match and a choice variant start with the step's first byte.
                if sb.first() != nb.first() {
                    continue;
                }
                if same_bytes(sb, nb) {
                    if ext {
                        // A `_name` element: the general path's.
                        general = true;
                    } else {
                        self.b.sets.push(c);
                    }
                } else if nb.len() > sb.len()
                    && nb.starts_with(sb)
                    && nb[sb.len()].is_ascii_uppercase()
                {
                    // A choice variant (`valueQuantity` for `value`).
                    general = true;
                }
            }
        }
        general
    }

    /// Enters a member whose matched nodes are `sets[start..]`: numbers the object they are
    /// members of, and goes general when one of them matched a member of it before.
    #[inline(always)]
    fn enter_member(&mut self, start: u32, root_type: bool) -> bool {
        let end = self.b.sets.len() as u32;
        if start == end && !root_type {
            return false;
        }
        if start < end {
            let n = self.b.frames.len() - 1;
            let mut serial = self.b.frames[n].serial;
            if serial == 0 {
                self.b.serial += 1;
                serial = self.b.serial;
                self.b.frames[n].serial = serial;
            }
            for i in start..end {
                let c = self.b.sets[i as usize] as usize;
                if self.b.stamps[c] == serial {
                    // The member again: the general path's.
                    self.general = true;
                    self.b.sets.truncate(start as usize);
                    return false;
                }
                self.b.stamps[c] = serial;
            }
        }
        let pending = Set { start, end };
        self.b.frames.push(Frame {
            base: start,
            at: Set { start: end, end },
            pending,
            serial: 0,
            memo: NO_MEMO,
            hint: NO_KEY,
            element: false,
            root_type,
        });
        true
    }

    /// Applies the action of learnt name `k` (see [`Bufs::keys`]). A skipped or general member is
    /// decided here, inline in the walker's member loop (most members a view meets are
    /// skipped); an entered one out of line.
    #[inline(always)]
    fn apply(&mut self, k: u32) -> bool {
        match &self.b.keys[k as usize].action {
            Action::Skip => false,
            Action::General => {
                self.general = true;
                false
            }
            Action::EnterOne(kid) => {
                let kid = *kid;
                self.enter_one(kid)
            }
            Action::Enter { .. } => self.apply_enter(k),
        }
    }

    /// [`Walk::apply`] of an [`Action::EnterOne`]: [`Walk::enter_member`] of one node.
    #[inline(never)]
    fn enter_one(&mut self, kid: u32) -> bool {
        let n = self.b.frames.len() - 1;
        let mut serial = self.b.frames[n].serial;
        if serial == 0 {
            self.b.serial += 1;
            serial = self.b.serial;
            self.b.frames[n].serial = serial;
        }
        let stamp = &mut self.b.stamps[kid as usize];
        if *stamp == serial {
            // The member again: the general path's.
            self.general = true;
            return false;
        }
        *stamp = serial;
        let start = self.b.sets.len() as u32;
        self.b.sets.push(kid);
        self.b.frames.push(Frame {
            base: start,
            at: Set {
                start: start + 1,
                end: start + 1,
            },
            pending: Set {
                start,
                end: start + 1,
            },
            serial: 0,
            memo: NO_MEMO,
            hint: NO_KEY,
            element: false,
            root_type: false,
        });
        true
    }

    /// [`Walk::apply`] of an [`Action::Enter`].
    #[inline(never)]
    fn apply_enter(&mut self, k: u32) -> bool {
        let start = self.b.sets.len() as u32;
        let Action::Enter { kids, root_type } = &self.b.keys[k as usize].action else {
            return false;
        };
        let root_type = *root_type;
        // Mostly one node: pushed, not copied with a call of `memcpy`.
        match **kids {
            [k] => self.b.sets.push(k),
            ref ks => self.b.sets.extend_from_slice(ks),
        }
        self.enter_member(start, root_type)
    }

    /// Whether a column's path ends at one of `set`'s nodes.
    #[inline]
    fn outputs_at(&self, set: Set) -> bool {
        self.b.sets[set.start as usize..set.end as usize]
            .iter()
            .any(|&n| !self.plan.nodes[n as usize].outputs.is_empty())
    }
}

impl Visitor for Walk<'_, '_, '_> {
    fn enter_key(&mut self, depth: usize, key: &str) -> Result<bool, Reason> {
        if self.general {
            return Ok(false);
        }
        self.resolve_item();
        let f = *self.top();
        let root_type = depth == 1 && key == "resourceType";
        if f.memo != NO_MEMO {
            let mut k = self.b.memos[f.memo as usize].head;
            while k != NO_KEY {
                let known = &self.b.keys[k as usize];
                if same_bytes(known.key.as_bytes(), key.as_bytes()) {
                    self.top().hint = known.next;
                    return Ok(self.apply(k));
                }
                k = known.next;
            }
        } else if f.at.is_empty() && !root_type {
            return Ok(false);
        }
        let start = self.b.sets.len() as u32;
        let general = self.match_key(f.at, key);
        if f.memo != NO_MEMO {
            // Learn what the name does here.
            let memo = &self.b.memos[f.memo as usize];
            if memo.len < MEMO_KEYS {
                let kids: Box<[u32]> = self.b.sets[start as usize..].into();
                let action = if general {
                    Action::General
                } else if kids.is_empty() && !root_type {
                    Action::Skip
                } else if let ([kid], false) = (&*kids, root_type) {
                    Action::EnterOne(*kid)
                } else {
                    Action::Enter { kids, root_type }
                };
                let n = self.b.keys.len() as u32;
                let tail = memo.tail;
                self.b.keys.push(MemoKey {
                    key: key.into(),
                    plain: !key.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20),
                    action,
                    next: NO_KEY,
                });
                match tail {
                    NO_KEY => self.b.memos[f.memo as usize].head = n,
                    t => self.b.keys[t as usize].next = n,
                }
                let memo = &mut self.b.memos[f.memo as usize];
                memo.tail = n;
                memo.len += 1;
                // Nothing learnt follows it yet.
                self.top().hint = NO_KEY;
            }
        }
        if general {
            self.general = true;
            self.b.sets.truncate(start as usize);
            return Ok(false);
        }
        Ok(self.enter_member(start, root_type))
    }

    #[inline]
    fn expected_key(&mut self, _depth: usize) -> Option<&str> {
        if self.general {
            return None;
        }
        self.resolve_item();
        let f = self.b.frames.last()?;
        let k = self.b.keys.get(f.hint as usize)?;
        k.plain.then_some(&*k.key)
    }

    #[inline]
    fn enter_expected(&mut self, _depth: usize, _key: &str) -> Result<bool, Reason> {
        // The walker found the name `expected_key` gave: learnt name `hint`.
        let n = self.b.frames.len() - 1;
        let k = self.b.frames[n].hint;
        self.b.frames[n].hint = self.b.keys[k as usize].next;
        Ok(self.apply(k))
    }

    fn enter_index(&mut self, _index: usize) -> Result<(), Reason> {
        let f = *self.top();
        if f.element && !f.at.is_empty() {
            // An array inside an array on a path.
            self.general = true;
        }
        let at = self.items(f.pending);
        let memo = self.memo_of(at);
        let hint = self.first_key(memo);
        self.b.frames.push(Frame {
            base: at.start,
            at,
            pending: Set {
                start: at.end,
                end: at.end,
            },
            serial: 0,
            memo,
            hint,
            element: true,
            root_type: false,
        });
        Ok(())
    }

    fn leave(&mut self) {
        if let Some(f) = self.b.frames.pop() {
            // The frame's sets are the top of `sets`.
            self.b.sets.truncate(f.base as usize);
        }
    }

    /// Inline in the walker: the usual leaf here, the rest in [`Walk::scalar_general`].
    #[inline]
    fn scalar(&mut self, value: Scalar<'_>) -> Result<(), Reason> {
        if self.general {
            return Ok(());
        }
        // The usual leaf: a string member value whose name matched one node with no index
        // and no `forEach`, where one column's path ends. What the general loop does for it
        // (the item is at that node, see `scalar_at`), without the loop.
        if let Scalar::Str(s) = value
            && let Some(c) = self.one_output()
        {
            let v = self.val_str(s);
            self.put(c, v);
            return Ok(());
        }
        self.scalar_general(value)
    }
}

impl Walk<'_, '_, '_> {
    /// [`Visitor::scalar`] for any scalar.
    #[inline(never)]
    fn scalar_general(&mut self, value: Scalar<'_>) -> Result<(), Reason> {
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
                let n = self.b.frames.len() - 1;
                let in_path = !f.pending.is_empty()
                    || !f.at.is_empty()
                    || (f.element && n > 0 && !self.b.frames[n - 1].pending.is_empty());
                if in_path {
                    self.general = true;
                }
                return Ok(());
            }
            _ => {}
        }
        let at = self.scalar_at();
        let plan = self.plan;
        let mut val = Val::None;
        for i in at.start..at.end {
            let n = self.b.sets[i as usize];
            let outputs = &plan.nodes[n as usize].outputs;
            if outputs.is_empty() {
                // (A scalar where more steps follow has no members: nothing.)
                continue;
            }
            if val == Val::None {
                val = match value {
                    Scalar::Str(s) => self.val_str(s),
                    Scalar::Num { raw, .. } => match self.offsets(raw) {
                        Some((a, e)) => Val::Num(a, e),
                        // (The walker reads numbers from the line: not reached.)
                        None => {
                            self.general = true;
                            return Ok(());
                        }
                    },
                    Scalar::Bool(b) => Val::Bool(b),
                    // `{}` as a value is written as JSON: the general path's.
                    _ => {
                        self.general = true;
                        return Ok(());
                    }
                };
            }
            for &c in outputs {
                self.put(c, val);
            }
        }
        Ok(())
    }
}

impl Plan {
    /// Streams one line, handing its values to `sink`. Walker errors are returned as they are
    /// (the same as `convert`'s).
    pub(crate) fn run(
        &self,
        line: &str,
        resource: &str,
        sink: &mut dyn Sink,
    ) -> Result<Outcome, JsonError> {
        // Borrowed in place, not taken out and put back (two moves of the scratch per line).
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => self.run_with(line, resource, &mut scratch, sink),
            // A sink that streams a line itself (the scratch is in use): buffers of its own.
            Err(_) => self.run_with(line, resource, &mut Scratch::default(), sink),
        })
    }

    fn run_with(
        &self,
        line: &str,
        resource: &str,
        scratch: &mut Scratch,
        sink: &mut dyn Sink,
    ) -> Result<Outcome, JsonError> {
        if scratch.plan != self.id {
            // Another view ran on this thread last: its names do not apply.
            scratch.bufs.memos.clear();
            scratch.bufs.keys.clear();
            scratch.plan = self.id;
        }
        let b = &mut scratch.bufs;
        b.sets.clear();
        b.sets.push(0);
        let n = self.nodes.len();
        if b.memos.len() != n {
            b.memos.resize(n, Memo::default());
        }
        b.frames.clear();
        b.frames.push(Frame {
            at: Set { start: 0, end: 1 },
            pending: Set { start: 1, end: 1 },
            memo: 0,
            hint: b.memos[0].head,
            ..Frame::default()
        });
        b.counts.clear();
        b.counts.resize(n, 0);
        // Stamps of earlier lines are older serials than any of this line: no reset.
        b.stamps.resize(n, 0);
        let width = self.cols.len();
        b.slots.clear();
        b.slots.resize(width, Val::None);
        b.list.clear();
        b.esc.clear();
        let mut w = Walk {
            line,
            plan: self,
            b,
            width,
            each_items: 0,
            general: false,
            resource_type: None,
        };
        let walked = flatfhir_core::internal::walk::walk(line, &mut w, &mut scratch.unescaped);
        match walked {
            Err(reason) => Err(JsonError { reason }),
            Ok(()) if w.general => Ok(Outcome::General),
            // Not a string, or another type: the general path decides.
            Ok(()) if w.resource_type.as_deref() != Some(resource) => {
                Ok(if w.resource_type.is_some() {
                    Outcome::OtherType
                } else {
                    Outcome::General
                })
            }
            Ok(()) => {
                sink.streamed(
                    self,
                    &Values {
                        line,
                        esc: &w.b.esc,
                        slots: &w.b.slots,
                        list: &w.b.list,
                        items: w.each_items,
                    },
                );
                Ok(Outcome::Done)
            }
        }
    }

    /// The rows of a streamed line (see [`Plan::each_row`]), its values made nodes: `slots`
    /// and `list` are [`Values::json`] of each of `v`'s slots and list values.
    pub(crate) fn rows<'a>(
        &self,
        v: &Values<'_>,
        slots: &'a [Option<Json<'a>>],
        list: &'a [Json<'a>],
    ) -> Vec<Row<'a>> {
        let mut rows = Vec::new();
        self.each_row(v, |item| {
            rows.push(
                (0..self.cols.len())
                    .map(|i| {
                        if self.cols[i].collection {
                            Cell(CellInner::List(
                                self.list_of(v, i, item)
                                    .map(|k| Item::Node(&list[k], None, None))
                                    .collect(),
                            ))
                        } else {
                            one_cell(&slots[self.slot_index(i, item)])
                        }
                    })
                    .collect(),
            );
        });
        rows
    }

    /// Calls `row` with the `forEach` item of each row of a streamed line (0 for the one
    /// row of a view without `forEach`, and for the row of nulls of `forEachOrNull`).
    #[inline]
    pub(crate) fn each_row(&self, v: &Values<'_>, mut row: impl FnMut(u32)) {
        match &self.each {
            None => row(0),
            // Items are numbered from 1; 0 matches no `forEach` value.
            Some(e) if v.items == 0 => {
                if e.or_null {
                    row(0);
                }
            }
            Some(_) => (1..=v.items).for_each(row),
        }
    }

    /// Where the slot of column `col` (not a collection) in the row of `forEach` item
    /// `item` is in [`Values`]' slots.
    #[inline]
    fn slot_index(&self, col: usize, item: u32) -> usize {
        // Item 0 (the row of nulls of `forEachOrNull`) holds no `forEach` column's value.
        if self.cols[col].each {
            item as usize * self.cols.len() + col
        } else {
            col
        }
    }

    /// The value of column `col` (not a collection) in the row of `forEach` item `item`.
    #[inline]
    pub(crate) fn slot(&self, v: &Values<'_>, col: usize, item: u32) -> Val {
        v.slots
            .get(self.slot_index(col, item))
            .copied()
            .unwrap_or(Val::None)
    }

    /// Whether column `col` is a collection.
    #[inline]
    pub(crate) fn is_collection(&self, col: usize) -> bool {
        self.cols[col].collection
    }

    /// The positions in [`Values`]' list of the values of collection column `col` in the
    /// row of `forEach` item `item`.
    pub(crate) fn list_of<'s>(
        &'s self,
        v: &'s Values<'_>,
        col: usize,
        item: u32,
    ) -> impl Iterator<Item = usize> + 's {
        let each = self.cols[col].each;
        v.list
            .iter()
            .enumerate()
            .filter(move |(_, (k, i, _))| *k as usize == col && (!each || *i == item))
            .map(|(n, _)| n)
    }

    /// The number of output columns.
    pub(crate) fn width(&self) -> usize {
        self.cols.len()
    }
}

/// Where the rows of lines go: rows built by the general path, or a streamed line's values
/// (by default made into rows the same way).
pub(crate) trait Sink {
    /// The rows of a line.
    fn rows(&mut self, rows: &[Row<'_>]);
    /// The values of a streamed line.
    fn streamed(&mut self, plan: &Plan, values: &Values<'_>) {
        let slots: Vec<Option<Json<'_>>> = values.slots.iter().map(|&v| values.json(v)).collect();
        let list: Vec<Json<'_>> = values
            .list
            .iter()
            .filter_map(|&(_, _, v)| values.json(v))
            .collect();
        self.rows(&plan.rows(values, &slots, &list));
    }
}

/// A [`Sink`] that hands rows to a closure.
pub(crate) struct RowsSink<'f, 'g>(pub(crate) &'f mut (dyn FnMut(&[Row<'_>]) + 'g));

impl Sink for RowsSink<'_, '_> {
    fn rows(&mut self, rows: &[Row<'_>]) {
        (self.0)(rows);
    }
}
