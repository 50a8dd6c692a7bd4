//! Pruned parsing: which parts of a resource a view can read, and building only those.
//!
//! At compile time every FHIRPath of a view is analysed into a [`Trie`] of member paths from
//! the resource root: `code.coding.where(system = 'x').code` adds `code` → `coding` →
//! `system` and `code`. A node is *whole* when an expression may read all of it (a column's
//! value, which may be an object written as JSON; an argument of a function the analysis does
//! not follow): its subtree is built in full. While core's walker streams over a line,
//! [`build`] follows the trie and builds only the members it names (plus, at each object, the
//! `_name` elements of those members, choice-type variants such as `valueQuantity` for
//! `value`, and `resourceType`); every other member is validated by the walker and skipped
//! without being decoded. The general FHIRPath evaluator then runs on that small tree, so the
//! values are the evaluator's by construction.
//!
//! Each column is classified at compile time ([`PathKind`]): `Trie` when every step of it
//! was followed, `Subtree` when it fell back to reading whole subtrees of the members it
//! names (or the whole resource).

use std::borrow::Cow;

use flatfhir_core::internal::walk::{Reason, Scalar, Visitor};

use crate::ast::{Expr, Func};
use crate::json::{Json, JsonError};

/// How a column (or `where`/`forEach` path) reads the resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathKind {
    /// Evaluated while the walker streams over the line, with no tree (a plain member path
    /// in a view made only of them; see the `stream` module).
    Stream,
    /// Only the members its path names are built (the trie-guided path).
    Trie,
    /// Whole subtrees of the members it names are built (an expression the analysis does not
    /// follow step by step); `whole_resource` when that is the entire resource.
    Subtree {
        /// The whole resource is built for this path.
        whole_resource: bool,
    },
}

impl PathKind {
    /// A short label for reports: `stream`, `trie`, `subtree` or `resource`.
    pub fn label(self) -> &'static str {
        match self {
            PathKind::Stream => "stream",
            PathKind::Trie => "trie",
            PathKind::Subtree {
                whole_resource: false,
            } => "subtree",
            PathKind::Subtree {
                whole_resource: true,
            } => "resource",
        }
    }
}

/// Node 0 is the resource root.
pub(crate) const ROOT: u32 = 0;

#[derive(Debug, Clone, Default)]
struct Node {
    whole: bool,
    children: Vec<(String, u32)>,
}

/// The member paths a view reads, from the resource root.
#[derive(Debug, Clone)]
pub(crate) struct Trie {
    nodes: Vec<Node>,
}

/// Where a member goes while building: skipped, built whole, or followed at a trie node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    Skip,
    Whole,
    At(u32),
}

impl Default for Trie {
    fn default() -> Self {
        Trie {
            nodes: vec![Node::default()],
        }
    }
}

impl Trie {
    fn child(&mut self, n: u32, name: &str) -> u32 {
        if self.nodes[n as usize].whole {
            return n;
        }
        if let Some(&(_, c)) = self.nodes[n as usize]
            .children
            .iter()
            .find(|(k, _)| k == name)
        {
            return c;
        }
        let c = self.nodes.len() as u32;
        self.nodes.push(Node::default());
        self.nodes[n as usize].children.push((name.to_string(), c));
        c
    }

    fn mark_whole(&mut self, n: u32) {
        self.nodes[n as usize].whole = true;
    }

    /// Whether the root is built whole (no pruning at all).
    pub(crate) fn is_whole(&self) -> bool {
        self.nodes[ROOT as usize].whole
    }

    /// Where member `key` of an object at node `n` goes.
    #[inline]
    fn keep(&self, n: u32, key: &str) -> Keep {
        let node = &self.nodes[n as usize];
        if node.whole {
            return Keep::Whole;
        }
        // A primitive's id and extensions (`_birthDate`) go with it, whole.
        let (name, ext) = match key.as_bytes().first() {
            Some(b'_') => (&key[1..], true),
            _ => (key, false),
        };
        // The member's own node, and a choice element's (`value` for `valueQuantity`): when
        // both are in the trie, the member is read by two paths and is built whole.
        let mut found = None;
        let mut several = false;
        for (k, c) in &node.children {
            let exact = k.len() == name.len() && k == name;
            let choice = name.len() > k.len()
                && name.starts_with(k.as_str())
                && name.as_bytes()[k.len()].is_ascii_uppercase();
            if exact || choice {
                several |= found.is_some();
                found = Some(*c);
            }
        }
        if several {
            return Keep::Whole;
        }
        match found {
            Some(_) if ext => Keep::Whole,
            Some(c) => Keep::At(c),
            // Resources inside resources (contained, Bundle entries) are typed by it.
            None if key == "resourceType" => Keep::Whole,
            // The resource's id names it in an evaluation error (`Observation/x`), as the
            // full tree does.
            None if n == ROOT && key == "id" => Keep::Whole,
            None => Keep::Skip,
        }
    }
}

/// Builds a trie from expressions: see the module docs.
#[derive(Debug, Default)]
pub(crate) struct Analysis {
    pub(crate) trie: Trie,
    /// Set when the expression being analysed needed a whole subtree it did not return.
    fell_back: bool,
    whole_resource: bool,
}

impl Analysis {
    /// Adds a path evaluated on `focus` whose result is only iterated (a `forEach`): returns
    /// the nodes its items sit at, and how it was read.
    pub(crate) fn iterate(&mut self, e: &Expr, focus: &[u32]) -> (Vec<u32>, PathKind) {
        self.fell_back = false;
        self.whole_resource = false;
        let r = self.reach(e, focus);
        (r, self.kind())
    }

    /// Adds a path whose result is used whole (a column, a `where`, a `repeat`).
    pub(crate) fn value(&mut self, e: &Expr, focus: &[u32]) -> PathKind {
        self.fell_back = false;
        self.whole_resource = false;
        let r = self.reach(e, focus);
        for n in r {
            self.trie.mark_whole(n);
        }
        self.kind()
    }

    /// Marks `focus` whole (a `repeat`, which follows its paths recursively).
    pub(crate) fn whole(&mut self, focus: &[u32]) -> PathKind {
        for &n in focus {
            self.trie.mark_whole(n);
        }
        PathKind::Subtree {
            whole_resource: focus.contains(&ROOT),
        }
    }

    fn kind(&self) -> PathKind {
        if self.fell_back {
            PathKind::Subtree {
                whole_resource: self.whole_resource,
            }
        } else {
            PathKind::Trie
        }
    }

    fn consume(&mut self, nodes: &[u32]) {
        for &n in nodes {
            if n == ROOT {
                self.whole_resource = true;
            }
            self.trie.mark_whole(n);
        }
        if !nodes.is_empty() {
            self.fell_back = true;
        }
    }

    /// Values an argument computes (a condition, a separator): whatever they read is kept
    /// whole, as they may compare or print objects.
    fn arg_values(&mut self, args: &[Expr], focus: &[u32]) {
        for a in args {
            let r = self.reach(a, focus);
            for n in r {
                self.trie.mark_whole(n);
            }
        }
    }

    /// The nodes the items of `e`, evaluated on items at `focus`, can sit at. Past
    /// [`MAX_REACHED`] of them the analysis gives up on pruning: the whole resource is built.
    fn reach(&mut self, e: &Expr, focus: &[u32]) -> Vec<u32> {
        let out = self.reach_step(e, focus);
        if out.len() > MAX_REACHED {
            self.consume(&[ROOT]);
            return vec![ROOT];
        }
        out
    }

    /// [`reach`](Self::reach), one expression node.
    fn reach_step(&mut self, e: &Expr, focus: &[u32]) -> Vec<u32> {
        match e {
            Expr::This => focus.to_vec(),
            Expr::Index
            | Expr::RowIndex
            | Expr::Total
            | Expr::Const(_)
            | Expr::Lit(_)
            | Expr::Empty => Vec::new(),
            Expr::Resource => {
                self.consume(&[ROOT]);
                vec![ROOT]
            }
            Expr::Member(b, name) => {
                let base = self.reach(b, focus);
                let mut out = Vec::new();
                for &n in &base {
                    push(&mut out, self.trie.child(n, name));
                    // `Patient.name`: a type name on a resource of that type is the resource.
                    if name.starts_with(|c: char| c.is_ascii_uppercase()) {
                        push(&mut out, n);
                    }
                }
                out
            }
            Expr::Choice {
                base, name, key, ..
            } => {
                let base = self.reach(base, focus);
                let mut out = Vec::new();
                for &n in &base {
                    push(&mut out, self.trie.child(n, key));
                    push(&mut out, self.trie.child(n, name));
                }
                out
            }
            Expr::Indexer(b, i) => {
                let base = self.reach(b, focus);
                self.arg_values(std::slice::from_ref(i), focus);
                base
            }
            Expr::Neg(b) => {
                let r = self.reach(b, focus);
                self.trie_whole(&r);
                Vec::new()
            }
            Expr::Bin(op, l, r) => {
                let a = self.reach(l, focus);
                let b = self.reach(r, focus);
                if matches!(op, crate::ast::BinOp::Union) {
                    let mut out = a;
                    for n in b {
                        push(&mut out, n);
                    }
                    out
                } else {
                    self.trie_whole(&a);
                    self.trie_whole(&b);
                    Vec::new()
                }
            }
            Expr::Call(b, f, args) => {
                let input = self.reach(b, focus);
                // Arguments see either the input's items or the outer focus, depending on
                // the function: analyse them against both.
                let mut both = input.clone();
                for &n in focus {
                    push(&mut both, n);
                }
                match f {
                    // Filters and subsets: their items are input items.
                    Func::Where
                    | Func::First
                    | Func::Last
                    | Func::Tail
                    | Func::Skip
                    | Func::Take
                    | Func::Single
                    | Func::OfType(_)
                    | Func::As(_)
                    | Func::Trace => {
                        self.arg_values(args, &both);
                        input
                    }
                    // Existence and counting look at items, not into them.
                    Func::Exists | Func::Empty | Func::Count | Func::HasValue
                        if args.is_empty() =>
                    {
                        Vec::new()
                    }
                    Func::Exists | Func::All => {
                        self.arg_values(args, &both);
                        Vec::new()
                    }
                    Func::Select => self.reach_args(args, &input),
                    Func::Iif => {
                        if let Some((c, rest)) = args.split_first() {
                            self.arg_values(std::slice::from_ref(c), &both);
                            let mut out = self.reach_args(rest, &both);
                            // `iif(c, a)` without an else, called on the focus.
                            for n in input {
                                push(&mut out, n);
                            }
                            out
                        } else {
                            Vec::new()
                        }
                    }
                    Func::GetResourceKey => {
                        input.iter().map(|&n| self.trie.child(n, "id")).collect()
                    }
                    Func::GetReferenceKey(_) => {
                        for &n in &input {
                            let r = self.trie.child(n, "reference");
                            self.trie.mark_whole(r);
                        }
                        Vec::new()
                    }
                    Func::Extension => {
                        self.arg_values(args, &both);
                        let out: Vec<u32> = input
                            .iter()
                            .map(|&n| self.trie.child(n, "extension"))
                            .collect();
                        for &n in &out {
                            self.trie.mark_whole(n);
                        }
                        out
                    }
                    // Values computed from the input's items (strings, numbers, booleans).
                    Func::Join
                    | Func::Not
                    | Func::ToString
                    | Func::StartsWith
                    | Func::EndsWith
                    | Func::ContainsStr
                    | Func::Lower
                    | Func::Upper
                    | Func::Length
                    | Func::Convert(..)
                    | Func::Substring
                    | Func::Matches
                    | Func::MatchesFull
                    | Func::Replace
                    | Func::ReplaceMatches
                    | Func::IndexOf
                    | Func::LastIndexOf
                    | Func::Trim
                    | Func::Is(_) => {
                        self.trie_whole(&input);
                        self.arg_values(args, &both);
                        Vec::new()
                    }
                    // Anything else may read whole items and return items from anywhere
                    // inside them: keep the input whole and return it.
                    _ => {
                        self.consume(&input);
                        let r = self.reach_args(args, &both);
                        self.consume(&r);
                        let mut out = input;
                        for n in r {
                            push(&mut out, n);
                        }
                        out
                    }
                }
            }
        }
    }

    fn reach_args(&mut self, args: &[Expr], focus: &[u32]) -> Vec<u32> {
        let mut out = Vec::new();
        for a in args {
            for n in self.reach(a, focus) {
                push(&mut out, n);
            }
        }
        out
    }

    /// Marks nodes whole because a computed value reads them (not a fallback: the value of a
    /// primitive is the whole of it).
    fn trie_whole(&mut self, nodes: &[u32]) {
        for &n in nodes {
            if n == ROOT {
                self.fell_back = true;
                self.whole_resource = true;
            }
            self.trie.mark_whole(n);
        }
    }
}

/// The most trie nodes one expression's items may sit at. Each step that may keep its input
/// (a type name: `Patient.name`) or read either of two members (a choice type) can double
/// them, so a path of many such steps would reach exponentially many nodes (a 600-byte
/// expression took 50 s); real paths reach a handful.
const MAX_REACHED: usize = 64;

fn push(v: &mut Vec<u32>, n: u32) {
    if !v.contains(&n) {
        v.push(n);
    }
}

/// Builds the tree of one JSON object with core's walker, following `trie` when given
/// (members it does not name are validated and skipped). Errors are the walker's, the same
/// as `convert`'s.
pub(crate) fn build<'a>(line: &'a str, trie: Option<&Trie>) -> Result<Json<'a>, JsonError> {
    let mut b = Builder {
        line,
        trie: trie.filter(|t| !t.is_whole()),
        frames: vec![Frame {
            key: Cow::Borrowed(""),
            at: Keep::At(ROOT),
            slot: Slot::Empty,
        }],
    };
    let mut scratch = String::new();
    flatfhir_core::internal::walk::walk(line, &mut b, &mut scratch)
        .map_err(|reason| JsonError { reason })?;
    let root = b.frames.pop().map_or(Slot::Empty, |f| f.slot);
    Ok(match root {
        Slot::Empty => Json::Object(Vec::new()),
        s => s.into_json(),
    })
}

enum Slot<'a> {
    Empty,
    Obj(Vec<(Cow<'a, str>, Json<'a>)>),
    Arr(Vec<Json<'a>>),
    Leaf(Json<'a>),
}

impl<'a> Slot<'a> {
    fn into_json(self) -> Json<'a> {
        match self {
            // An object whose members were all skipped.
            Slot::Empty => Json::Object(Vec::new()),
            Slot::Obj(m) => Json::Object(m),
            Slot::Arr(a) => Json::Array(a),
            Slot::Leaf(j) => j,
        }
    }
}

struct Frame<'a> {
    key: Cow<'a, str>,
    at: Keep,
    slot: Slot<'a>,
}

struct Builder<'a, 't> {
    line: &'a str,
    trie: Option<&'t Trie>,
    frames: Vec<Frame<'a>>,
}

impl<'a> Builder<'a, '_> {
    /// `s` borrowed from the line when it lies in it (else it is in the walker's unescape
    /// buffer, and is copied).
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
    fn top(&mut self) -> &mut Frame<'a> {
        let n = self.frames.len();
        &mut self.frames[n - 1]
    }
}

impl Visitor for Builder<'_, '_> {
    #[inline]
    fn enter_key(&mut self, _depth: usize, key: &str) -> Result<bool, Reason> {
        let trie = self.trie;
        let top = self.top();
        if matches!(top.slot, Slot::Empty) {
            top.slot = Slot::Obj(Vec::new());
        }
        let at = match (top.at, trie) {
            (Keep::At(n), Some(t)) => t.keep(n, key),
            _ => Keep::Whole,
        };
        if at == Keep::Skip {
            return Ok(false);
        }
        let key = self.text(key);
        self.frames.push(Frame {
            key,
            at,
            slot: Slot::Empty,
        });
        Ok(true)
    }

    #[inline]
    fn enter_index(&mut self, _index: usize) -> Result<(), Reason> {
        let top = self.top();
        if matches!(top.slot, Slot::Empty) {
            top.slot = Slot::Arr(Vec::new());
        }
        let at = top.at;
        self.frames.push(Frame {
            key: Cow::Borrowed(""),
            at,
            slot: Slot::Empty,
        });
        Ok(())
    }

    #[inline]
    fn leave(&mut self) {
        let Some(f) = self.frames.pop() else { return };
        let v = f.slot.into_json();
        match &mut self.top().slot {
            Slot::Obj(m) => m.push((f.key, v)),
            Slot::Arr(a) => a.push(v),
            _ => {}
        }
    }

    #[inline]
    fn scalar(&mut self, value: Scalar<'_>) -> Result<(), Reason> {
        let j = match value {
            Scalar::Str(s) => Json::String(self.text(s)),
            Scalar::Num { raw, .. } => Json::Number(self.text(raw)),
            Scalar::Bool(b) => Json::Bool(b),
            Scalar::Null => Json::Null,
            Scalar::EmptyArray => Json::Array(Vec::new()),
            Scalar::EmptyObject => Json::Object(Vec::new()),
        };
        self.top().slot = Slot::Leaf(j);
        Ok(())
    }
}
