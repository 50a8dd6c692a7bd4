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
