//! The compiled form of a FHIRPath expression: an AST with functions and constants resolved.

use rust_decimal::Decimal;

/// A literal value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Lit {
    Bool(bool),
    Int(i64),
    /// An exact decimal; its scale is the literal's precision (`1.50` has scale 2).
    Dec(Decimal),
    Str(String),
    /// A date, dateTime or time literal, without its `@` (validated by the parser).
    Date(String),
    /// `4.5 'mg'`, `3 days`: the value and the UCUM unit (calendar words kept as written).
    Quantity(Decimal, String),
}

/// The System (FHIRPath) types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SysType {
    Boolean,
    Integer,
    Decimal,
    String,
    Date,
    DateTime,
    Time,
    Quantity,
    /// A `System.` name FHIRPath does not define: matches nothing.
    Other,
}

impl SysType {
    pub(crate) fn from_name(n: &str) -> Option<SysType> {
        Some(match n {
            "Boolean" => SysType::Boolean,
            "Integer" => SysType::Integer,
            "Decimal" => SysType::Decimal,
            "String" => SysType::String,
            "Date" => SysType::Date,
            "DateTime" => SysType::DateTime,
            "Time" => SysType::Time,
            "Quantity" => SysType::Quantity,
            _ => return None,
        })
    }
}

/// A resolved type specifier (`string`, `FHIR.Patient`, `System.Boolean`): a System type,
/// a FHIR type of the model, or both when an unqualified name is both (`Quantity`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TypeSpec {
    pub(crate) system: Option<SysType>,
    pub(crate) fhir: Option<String>,
    /// The name as written, for choice keys (`value.ofType(Quantity)` reads `valueQuantity`).
    pub(crate) name: String,
}

/// Which conversion `toX()` / `convertsToX()` performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Conv {
    Boolean,
    Integer,
    Decimal,
    String,
    Date,
    DateTime,
    Time,
    Quantity,
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
    OfType(TypeSpec),
    Is(TypeSpec),
    As(TypeSpec),
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
    AllFalse,
    AnyFalse,
    /// `toX()` (false) or `convertsToX()` (true).
    Convert(Conv, bool),
    IndexOf,
    LastIndexOf,
    Substring,
    Matches,
    MatchesFull,
    ReplaceMatches,
    Replace,
    Trim,
    Split,
    ToChars,
    Encode,
    Decode,
    Escape,
    Unescape,
    Union,
    Combine,
    Intersect,
    Exclude,
    SubsetOf,
    SupersetOf,
    IsDistinct,
    Repeat,
    Descendants,
    Children,
    Sort,
    Aggregate,
    Abs,
    Ceiling,
    Floor,
    Round,
    Sqrt,
    Exp,
    Ln,
    Log,
    Power,
    Truncate,
    Trace,
    Today,
    Now,
    TimeOfDay,
    Type,
    Precision,
    Comparable,
    ConformsTo,
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
    /// else `name` filtered by type. `single` for `as`: more than one value is an error.
    Choice {
        base: Box<Expr>,
        name: String,
        key: String,
        ty: TypeSpec,
        single: bool,
    },
    /// `$total` inside `aggregate`.
    Total,
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
}
