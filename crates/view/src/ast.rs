//! The compiled form of a FHIRPath expression: an AST with functions and constants resolved.

/// A literal value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Lit {
    Bool(bool),
    Int(i64),
    /// A decimal and its number of fraction digits (its precision).
    Dec(f64, u32),
    Str(String),
    /// A date, dateTime or time literal, without its `@`.
    Date(String),
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinOp {
    Mul,
    Div,
    IntDiv,
    Mod,
    Add,
    Sub,
    Concat,
    Union,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    Equiv,
    NotEquiv,
    In,
    Contains,
    And,
    Or,
    Xor,
    Implies,
}

/// Functions, resolved at compile time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Func {
    Where,
    Select,
    Exists,
    All,
    Empty,
    First,
    Last,
    Tail,
    Skip,
    Take,
    Single,
    Count,
    Distinct,
    Not,
    HasValue,
    OfType(String),
    Is(String),
    Extension,
    Join,
    GetResourceKey,
    GetReferenceKey(Option<String>),
    LowBoundary,
    HighBoundary,
    Iif,
    ToString,
    StartsWith,
    EndsWith,
    ContainsStr,
    Lower,
    Upper,
    Length,
    AllTrue,
    AnyTrue,
}

/// An expression node.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    /// `$this`: the input collection.
    This,
    /// `$index` inside `where`/`select`.
    Index,
    /// `%rowIndex`.
    RowIndex,
    /// `%resource`, `%rootResource`, `%context`.
    Resource,
    /// A view constant, by index into the view's constant table.
    Const(usize),
    Lit(Lit),
    /// `{}`
    Empty,
    /// `base.name`
    Member(Box<Expr>, String),
    /// `base.name.ofType(T)` on raw JSON: reads the key `nameT` (e.g. `valueQuantity`),
    /// else `name` filtered by type.
    Choice {
        base: Box<Expr>,
        name: String,
        key: String,
        ty: String,
    },
    /// `base[index]`
    Indexer(Box<Expr>, Box<Expr>),
    /// `base.f(args)`
    Call(Box<Expr>, Func, Vec<Expr>),
    Neg(Box<Expr>),
    Bin(BinOp, Box<Expr>, Box<Expr>),
}

impl Expr {
    /// Calls `f` on this node and every node below it.
    pub(crate) fn walk(&self, f: &mut impl FnMut(&Expr)) {
        f(self);
        match self {
            Expr::Member(b, _) | Expr::Choice { base: b, .. } | Expr::Neg(b) => b.walk(f),
            Expr::Indexer(b, i) => {
                b.walk(f);
                i.walk(f);
            }
            Expr::Call(b, _, args) => {
                b.walk(f);
                for a in args {
                    a.walk(f);
                }
            }
            Expr::Bin(_, l, r) => {
                l.walk(f);
                r.walk(f);
            }
            _ => {}
        }
    }

    /// Whether the expression may return its focus itself (so the whole resource when run on
    /// it): `$this`, or a filter such as `where(...)` or `first()` applied to it.
    pub(crate) fn may_return_focus(&self) -> bool {
        match self {
            Expr::This => true,
            Expr::Call(b, f, _) => match f {
                Func::Iif | Func::Select => true,
                Func::Where
                | Func::First
                | Func::Last
                | Func::Tail
                | Func::Skip
                | Func::Take
                | Func::Single
                | Func::Distinct
                | Func::OfType(_) => b.may_return_focus(),
                _ => false,
            },
            Expr::Indexer(b, _) => b.may_return_focus(),
            Expr::Bin(BinOp::Union, l, r) => l.may_return_focus() || r.may_return_focus(),
            _ => false,
        }
    }
}
