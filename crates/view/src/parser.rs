//! FHIRPath parser: tokens to [`Expr`], resolving functions, constants and choice types.

use std::str::FromStr;

use rust_decimal::Decimal;

use crate::ast::{BinOp, Conv, Expr, Func, Lit, SysType, TypeSpec};
use crate::error::SyntaxError;
use crate::lexer::{Tok, Token, tokenize};

/// Resolves `%name` to a view constant index.
pub(crate) type ConstResolver<'r> = &'r dyn Fn(&str) -> Option<usize>;

/// Parses and compiles one FHIRPath expression.
pub(crate) fn parse(src: &str, consts: ConstResolver<'_>) -> Result<Expr, SyntaxError> {
    let toks = tokenize(src)?;
    let mut p = Parser { toks, i: 0, consts };
    let e = p.expr(0)?;
    if p.peek() != &Tok::Eof {
        return Err(p.err("unexpected token"));
    }
    Ok(e)
}

struct Parser<'r> {
    toks: Vec<Token>,
    i: usize,
    consts: ConstResolver<'r>,
}

/// Binding powers (higher binds tighter).
const BP_UNARY: u8 = 11;

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.toks[self.i].tok
    }

    fn pos(&self) -> usize {
        self.toks[self.i].pos
    }

    fn next(&mut self) -> Tok {
        let t = self.toks[self.i].tok.clone();
        if self.i + 1 < self.toks.len() {
            self.i += 1;
        }
        t
    }

    fn err(&self, msg: &str) -> SyntaxError {
        SyntaxError {
            pos: self.pos(),
            message: format!("{msg} ({})", describe(self.peek())),
        }
    }

    fn expect(&mut self, t: &Tok, what: &str) -> Result<(), SyntaxError> {
        if self.peek() == t {
            self.next();
            Ok(())
        } else {
            Err(self.err(&format!("expected {what}")))
        }
    }

    /// The infix operator at the cursor and its binding power.
    fn infix(&self) -> Option<(BinOpOrType, u8)> {
        use BinOp::*;
        let op = match self.peek() {
            Tok::Op(o) => match *o {
                "*" => (BinOpOrType::Op(Mul), 10),
                "/" => (BinOpOrType::Op(Div), 10),
                "+" => (BinOpOrType::Op(Add), 9),
                "-" => (BinOpOrType::Op(Sub), 9),
                "&" => (BinOpOrType::Op(Concat), 9),
                "|" => (BinOpOrType::Op(Union), 7),
                "<" => (BinOpOrType::Op(Lt), 6),
                "<=" => (BinOpOrType::Op(Le), 6),
                ">" => (BinOpOrType::Op(Gt), 6),
                ">=" => (BinOpOrType::Op(Ge), 6),
                "=" => (BinOpOrType::Op(Eq), 5),
                "!=" => (BinOpOrType::Op(Ne), 5),
                "~" => (BinOpOrType::Op(Equiv), 5),
                "!~" => (BinOpOrType::Op(NotEquiv), 5),
                _ => return None,
            },
            Tok::Ident(w) => match w.as_str() {
                "div" => (BinOpOrType::Op(IntDiv), 10),
                "mod" => (BinOpOrType::Op(Mod), 10),
                "is" => (BinOpOrType::Is, 8),
                "as" => (BinOpOrType::As, 8),
                "in" => (BinOpOrType::Op(In), 4),
                "contains" => (BinOpOrType::Op(Contains), 4),
                "and" => (BinOpOrType::Op(And), 3),
                "or" => (BinOpOrType::Op(Or), 2),
                "xor" => (BinOpOrType::Op(Xor), 2),
                "implies" => (BinOpOrType::Op(Implies), 1),
                _ => return None,
            },
            _ => return None,
        };
        Some(op)
    }

    fn expr(&mut self, min_bp: u8) -> Result<Expr, SyntaxError> {
        let mut lhs = self.prefix()?;
        while let Some((op, bp)) = self.infix() {
            if bp < min_bp {
                break;
            }
            self.next();
            lhs = match op {
                BinOpOrType::Op(op) => {
                    let rhs = self.expr(bp + 1)?;
                    Expr::Bin(op, Box::new(lhs), Box::new(rhs))
                }
                BinOpOrType::Is => {
                    let t = self.type_spec()?;
                    Expr::Call(Box::new(lhs), Func::Is(t), vec![])
                }
                BinOpOrType::As => {
                    let t = self.type_spec()?;
                    of_type(lhs, t, true)
                }
            };
        }
        Ok(lhs)
    }

    fn type_spec(&mut self) -> Result<TypeSpec, SyntaxError> {
        let pos = self.pos();
        let mut ns = None;
        let mut name = match self.next() {
            Tok::Ident(n) => n,
            _ => return Err(self.err("expected a type name")),
        };
        if self.peek() == &Tok::Dot && matches!(name.as_str(), "FHIR" | "System") {
            self.next();
            ns = Some(name);
            name = match self.next() {
                Tok::Ident(n) => n,
                _ => return Err(self.err("expected a type name")),
            };
        }
        resolve_type(ns.as_deref(), &name).ok_or(SyntaxError {
            pos,
            message: format!("unknown type '{name}'"),
        })
    }

    fn prefix(&mut self) -> Result<Expr, SyntaxError> {
        match self.peek() {
            Tok::Op("-") => {
                self.next();
                let e = self.expr(BP_UNARY)?;
                Ok(match e {
                    Expr::Lit(Lit::Int(i)) => Expr::Lit(Lit::Int(-i)),
                    Expr::Lit(Lit::Dec(d)) => Expr::Lit(Lit::Dec(-d)),
                    Expr::Lit(Lit::Quantity(d, u)) => Expr::Lit(Lit::Quantity(-d, u)),
                    e => Expr::Neg(Box::new(e)),
                })
            }
            Tok::Op("+") => {
                self.next();
                self.expr(BP_UNARY)
            }
            _ => {
                let t = self.term()?;
                self.postfix(t)
            }
        }
    }

    fn postfix(&mut self, mut e: Expr) -> Result<Expr, SyntaxError> {
        loop {
            match self.peek() {
                Tok::Dot => {
                    self.next();
                    let name_pos = self.pos();
                    let name = match self.next() {
                        Tok::Ident(n) => n,
                        _ => {
                            self.i -= 1;
                            return Err(self.err("expected a name after '.'"));
                        }
                    };
                    e = self.member_or_call(e, name, name_pos)?;
                }
                Tok::LBracket => {
                    self.next();
                    let idx = self.expr(0)?;
                    self.expect(&Tok::RBracket, "']'")?;
                    e = Expr::Indexer(Box::new(e), Box::new(idx));
                }
                _ => return Ok(e),
            }
        }
    }

    fn member_or_call(
        &mut self,
        base: Expr,
        name: String,
        pos: usize,
    ) -> Result<Expr, SyntaxError> {
        if self.peek() == &Tok::LParen {
            self.next();
            self.call(base, &name, pos)
        } else {
            Ok(Expr::Member(Box::new(base), name))
        }
    }

    fn term(&mut self) -> Result<Expr, SyntaxError> {
        let pos = self.pos();
        match self.next() {
            Tok::Ident(n) => match n.as_str() {
                "true" => Ok(Expr::Lit(Lit::Bool(true))),
                "false" => Ok(Expr::Lit(Lit::Bool(false))),
                _ => self.member_or_call(Expr::This, n, pos),
            },
            Tok::Str(s) => Ok(Expr::Lit(Lit::Str(s))),
            Tok::Num(n) => {
                let lit = num_lit(&n).ok_or(SyntaxError {
                    pos,
                    message: format!("invalid number '{n}'"),
                })?;
                // A quantity: a number followed by a unit string or a calendar duration word.
                let unit = match self.peek() {
                    Tok::Str(u) => Some(u.clone()),
                    Tok::Ident(w) if calendar_unit(w).is_some() => Some(w.clone()),
                    _ => None,
                };
                match unit {
                    Some(u) => {
                        self.next();
                        let v = match lit {
                            Lit::Int(i) => Decimal::from(i),
                            Lit::Dec(d) => d,
                            _ => unreachable!("num_lit gives numbers"),
                        };
                        Ok(Expr::Lit(Lit::Quantity(v, u)))
                    }
                    None => Ok(Expr::Lit(lit)),
                }
            }
            Tok::Date(d) => {
                if crate::temporal::Temporal::parse(&d).is_none() {
                    return Err(SyntaxError {
                        pos,
                        message: format!("invalid date/time literal '@{d}'"),
                    });
                }
                Ok(Expr::Lit(Lit::Date(d)))
            }
            Tok::Var(v) => Ok(match v.as_str() {
                "this" => Expr::This,
                "index" => Expr::Index,
                _ => Expr::Total,
            }),
            Tok::Ext(name) => match name.as_str() {
                "rowIndex" => Ok(Expr::RowIndex),
                "resource" | "rootResource" | "context" => Ok(Expr::Resource),
                "ucum" => Ok(Expr::Lit(Lit::Str("http://unitsofmeasure.org".into()))),
                "sct" => Ok(Expr::Lit(Lit::Str("http://snomed.info/sct".into()))),
                "loinc" => Ok(Expr::Lit(Lit::Str("http://loinc.org".into()))),
                _ => match (self.consts)(&name) {
                    Some(i) => Ok(Expr::Const(i)),
                    // FHIR's variables for core value sets and extensions.
                    None if name.starts_with("vs-") => Ok(Expr::Lit(Lit::Str(format!(
                        "http://hl7.org/fhir/ValueSet/{}",
                        &name[3..]
                    )))),
                    None if name.starts_with("ext-") => Ok(Expr::Lit(Lit::Str(format!(
                        "http://hl7.org/fhir/StructureDefinition/{}",
                        &name[4..]
                    )))),
                    None => Err(SyntaxError {
                        pos,
                        message: format!("undefined constant '%{name}'"),
                    }),
                },
            },
            Tok::LParen => {
                let e = self.expr(0)?;
                self.expect(&Tok::RParen, "')'")?;
                Ok(e)
            }
            Tok::LBrace => {
                self.expect(&Tok::RBrace, "'}'")?;
                Ok(Expr::Empty)
            }
            t => {
                // Point back at the token, unless it is the end (where `next` stays put: an
                // empty expression underflowed here).
                if t != Tok::Eof {
                    self.i -= 1;
                }
                Err(SyntaxError {
                    pos,
                    message: format!("unexpected {}", describe(&t)),
                })
            }
        }
    }

    /// Parses the arguments of `name(` and builds the call.
    fn call(&mut self, base: Expr, name: &str, pos: usize) -> Result<Expr, SyntaxError> {
        // Functions whose argument is a type specifier.
        if matches!(name, "ofType" | "is" | "as") {
            if self.peek() == &Tok::RParen {
                return Err(SyntaxError {
                    pos,
                    message: format!("{name}() needs a type argument"),
                });
            }
            let t = self.type_spec()?;
            self.expect(&Tok::RParen, "')'")?;
            return Ok(match name {
                "ofType" => of_type(base, t, false),
                "as" => of_type(base, t, true),
                _ => Expr::Call(Box::new(base), Func::Is(t), vec![]),
            });
        }
        if name == "getReferenceKey" {
            let t = match self.peek() {
                Tok::RParen => None,
                _ => Some(match self.next() {
                    Tok::Ident(n) => n,
                    _ => return Err(self.err("expected a resource type")),
                }),
            };
            self.expect(&Tok::RParen, "')'")?;
            return Ok(Expr::Call(Box::new(base), Func::GetReferenceKey(t), vec![]));
        }
        let mut args = Vec::new();
        if self.peek() != &Tok::RParen {
            loop {
                args.push(self.expr(0)?);
                if self.peek() == &Tok::Comma {
                    self.next();
                } else {
                    break;
                }
            }
        }
        self.expect(&Tok::RParen, "')'")?;
        let (f, min, max) = match name {
            "where" => (Func::Where, 1, 1),
            "select" => (Func::Select, 1, 1),
            "exists" => (Func::Exists, 0, 1),
            "all" => (Func::All, 1, 1),
            "empty" => (Func::Empty, 0, 0),
            "first" => (Func::First, 0, 0),
            "last" => (Func::Last, 0, 0),
            "tail" => (Func::Tail, 0, 0),
            "skip" => (Func::Skip, 1, 1),
            "take" => (Func::Take, 1, 1),
            "single" => (Func::Single, 0, 0),
            "count" => (Func::Count, 0, 0),
            "distinct" => (Func::Distinct, 0, 0),
            "not" => (Func::Not, 0, 0),
            "hasValue" => (Func::HasValue, 0, 0),
            "extension" => (Func::Extension, 1, 1),
            "join" => (Func::Join, 0, 1),
            "getResourceKey" => (Func::GetResourceKey, 0, 0),
            "lowBoundary" => (Func::LowBoundary, 0, 1),
            "highBoundary" => (Func::HighBoundary, 0, 1),
            "iif" => (Func::Iif, 2, 3),
            "toString" => (Func::ToString, 0, 0),
            "startsWith" => (Func::StartsWith, 1, 1),
            "endsWith" => (Func::EndsWith, 1, 1),
            "contains" => (Func::ContainsStr, 1, 1),
            "lower" => (Func::Lower, 0, 0),
            "upper" => (Func::Upper, 0, 0),
            "length" => (Func::Length, 0, 0),
            "allTrue" => (Func::AllTrue, 0, 0),
            "anyTrue" => (Func::AnyTrue, 0, 0),
            "allFalse" => (Func::AllFalse, 0, 0),
            "anyFalse" => (Func::AnyFalse, 0, 0),
            "toBoolean" => (Func::Convert(Conv::Boolean, false), 0, 0),
            "toInteger" => (Func::Convert(Conv::Integer, false), 0, 0),
            "toDecimal" => (Func::Convert(Conv::Decimal, false), 0, 0),
            "toDate" => (Func::Convert(Conv::Date, false), 0, 0),
            "toDateTime" => (Func::Convert(Conv::DateTime, false), 0, 0),
            "toTime" => (Func::Convert(Conv::Time, false), 0, 0),
            "toQuantity" => (Func::Convert(Conv::Quantity, false), 0, 1),
            "convertsToBoolean" => (Func::Convert(Conv::Boolean, true), 0, 0),
            "convertsToInteger" => (Func::Convert(Conv::Integer, true), 0, 0),
            "convertsToDecimal" => (Func::Convert(Conv::Decimal, true), 0, 0),
            "convertsToString" => (Func::Convert(Conv::String, true), 0, 0),
            "convertsToDate" => (Func::Convert(Conv::Date, true), 0, 0),
            "convertsToDateTime" => (Func::Convert(Conv::DateTime, true), 0, 0),
            "convertsToTime" => (Func::Convert(Conv::Time, true), 0, 0),
            "convertsToQuantity" => (Func::Convert(Conv::Quantity, true), 0, 1),
            "indexOf" => (Func::IndexOf, 1, 1),
            "lastIndexOf" => (Func::LastIndexOf, 1, 1),
            "substring" => (Func::Substring, 1, 2),
            "matches" => (Func::Matches, 1, 1),
            "matchesFull" => (Func::MatchesFull, 1, 1),
            "replaceMatches" => (Func::ReplaceMatches, 2, 2),
            "replace" => (Func::Replace, 2, 2),
            "trim" => (Func::Trim, 0, 0),
            "split" => (Func::Split, 1, 1),
            "toChars" => (Func::ToChars, 0, 0),
            "encode" => (Func::Encode, 1, 1),
            "decode" => (Func::Decode, 1, 1),
            "escape" => (Func::Escape, 1, 1),
            "unescape" => (Func::Unescape, 1, 1),
            "union" => (Func::Union, 1, 1),
            "combine" => (Func::Combine, 1, 1),
            "intersect" => (Func::Intersect, 1, 1),
            "exclude" => (Func::Exclude, 1, 1),
            "subsetOf" => (Func::SubsetOf, 1, 1),
            "supersetOf" => (Func::SupersetOf, 1, 1),
            "isDistinct" => (Func::IsDistinct, 0, 0),
            "repeat" => (Func::Repeat, 1, 1),
            "descendants" => (Func::Descendants, 0, 0),
            "children" => (Func::Children, 0, 0),
            "sort" => (Func::Sort, 0, 8),
            "aggregate" => (Func::Aggregate, 1, 2),
            "abs" => (Func::Abs, 0, 0),
            "ceiling" => (Func::Ceiling, 0, 0),
            "floor" => (Func::Floor, 0, 0),
            "round" => (Func::Round, 0, 1),
            "sqrt" => (Func::Sqrt, 0, 0),
            "exp" => (Func::Exp, 0, 0),
            "ln" => (Func::Ln, 0, 0),
            "log" => (Func::Log, 1, 1),
            "power" => (Func::Power, 1, 1),
            "truncate" => (Func::Truncate, 0, 0),
            "trace" => (Func::Trace, 1, 2),
            "today" => (Func::Today, 0, 0),
            "now" => (Func::Now, 0, 0),
            "timeOfDay" => (Func::TimeOfDay, 0, 0),
            "type" => (Func::Type, 0, 0),
            "precision" => (Func::Precision, 0, 0),
            "comparable" => (Func::Comparable, 1, 1),
            "conformsTo" => (Func::ConformsTo, 1, 1),
            _ => {
                return Err(SyntaxError {
                    pos,
                    message: format!("unsupported function '{name}'"),
                });
            }
        };
        if args.len() < min || args.len() > max {
            return Err(SyntaxError {
                pos,
                message: format!("{name}() takes {min}..={max} arguments, got {}", args.len()),
            });
        }
        Ok(Expr::Call(Box::new(base), f, args))
    }
}

enum BinOpOrType {
    Op(BinOp),
    Is,
    As,
}

/// `base.ofType(T)`: on a member access this reads the choice key directly
/// (`value.ofType(Quantity)` reads `valueQuantity`). `as` is `ofType` that fails on more
/// than one item.
fn of_type(base: Expr, t: TypeSpec, single: bool) -> Expr {
    match base {
        Expr::Member(b, name) => {
            let key = format!("{name}{}", capitalize(&t.name));
            Expr::Choice {
                base: b,
                name,
                key,
                ty: t,
                single,
            }
        }
        b if single => Expr::Call(Box::new(b), Func::As(t), vec![]),
        b => Expr::Call(Box::new(b), Func::OfType(t), vec![]),
    }
}

/// Resolves a type name: `System.X`, `FHIR.x`, or unqualified (a FHIR type of the model
/// first, then a System type). `None` for a name neither knows.
fn resolve_type(ns: Option<&str>, name: &str) -> Option<TypeSpec> {
    let spec = |system, fhir: Option<&str>| TypeSpec {
        system,
        fhir: fhir.map(str::to_string),
        name: name.to_string(),
    };
    match ns {
        Some("System") => Some(spec(
            Some(SysType::from_name(name).unwrap_or(SysType::Other)),
            None,
        )),
        Some(_) => crate::model::is_type(name).then(|| spec(None, Some(name))),
        None => {
            let fhir = crate::model::is_type(name).then_some(name);
            let system = SysType::from_name(name);
            // `Quantity` is both; other capitalised System names (`Boolean`) are System only.
            if fhir.is_none() && system.is_none() {
                return None;
            }
            Some(spec(
                if fhir.is_none() || name == "Quantity" {
                    system
                } else {
                    None
                },
                fhir,
            ))
        }
    }
}

/// The UCUM unit of a calendar duration word (`days` → `d`), if `w` is one.
pub(crate) fn calendar_unit(w: &str) -> Option<&'static str> {
    Some(match w {
        "year" | "years" => "a",
        "month" | "months" => "mo",
        "week" | "weeks" => "wk",
        "day" | "days" => "d",
        "hour" | "hours" => "h",
        "minute" | "minutes" => "min",
        "second" | "seconds" => "s",
        "millisecond" | "milliseconds" => "ms",
        _ => return None,
    })
}

fn num_lit(n: &str) -> Option<Lit> {
    if n.contains('.') {
        Decimal::from_str(n).ok().map(Lit::Dec)
    } else {
        n.parse().ok().map(Lit::Int)
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Eof => "end of expression".into(),
        Tok::Ident(n) => format!("identifier '{n}'"),
        Tok::Str(s) => format!("string '{s}'"),
        Tok::Num(n) => format!("number {n}"),
        Tok::Op(o) => format!("'{o}'"),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod fuzz_findings {
    use super::parse;

    /// Found by the `fhirpath` fuzz target: an empty expression (or one of blanks) underflowed
    /// the token index (a panic with overflow checks on) instead of being a syntax error.
    #[test]
    fn an_empty_expression_is_a_syntax_error() {
        for src in ["", "   ", "\t\n"] {
            let e = parse(src, &|_| None).unwrap_err();
            assert!(e.message.contains("unexpected"), "{src:?}: {}", e.message);
        }
        assert!(parse("(", &|_| None).is_err());
        assert!(parse("a.", &|_| None).is_err());
    }
}
