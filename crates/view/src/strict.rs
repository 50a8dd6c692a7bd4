//! FHIRPath's semantic checks against the FHIR R4 model (strict mode, used by
//! [`crate::fhirpath::Expression::parse_strict`]): an element the model does not have
//! (`name.given1`), a path rooted at another resource type than the context's
//! (`Encounter.name` on a Patient), an expanded choice name (`valueQuantity` instead of
//! `value.ofType(Quantity)`), and order-dependent functions on the unordered results of
//! `children()`/`descendants()`. Views do not use it: they accept any FHIR version.

use crate::ast::{Expr, Func};
use crate::eval::CHOICE_SUFFIXES;
use crate::model;

/// Possible model keys of an expression's result; `None` when not known statically.
type Keys = Option<Vec<String>>;

/// Checks `e` evaluated on a resource of type `root`.
pub(crate) fn check(e: &Expr, root: &str) -> Result<(), String> {
    infer(e, &Some(vec![root.to_string()]), root).map(|_| ())
}

fn unordered(e: &Expr) -> bool {
    matches!(e, Expr::Call(_, Func::Children | Func::Descendants, _))
}

fn infer(e: &Expr, focus: &Keys, root: &str) -> Result<Keys, String> {
    Ok(match e {
        Expr::This => focus.clone(),
        Expr::Resource => Some(vec![root.to_string()]),
        Expr::Member(base, name) => {
            let Some(keys) = infer(base, focus, root)? else {
                return Ok(None);
            };
            let mut out = Vec::new();
            for k in &keys {
                if name == k {
                    out.push(k.clone());
                    continue;
                }
                if let Some(c) = model::child(k, name) {
                    if let Some(prefix) = expanded_choice(k, name) {
                        return Err(format!(
                            "'{name}' is a choice element: use {prefix}.ofType(...)"
                        ));
                    }
                    out.push(c.to_string());
                    continue;
                }
                if is_choice_base(k, name) {
                    return Ok(None);
                }
                if name.starts_with(|c: char| c.is_ascii_uppercase()) && model::is_type(name) {
                    return Err(format!(
                        "the expression is for {name} but is evaluated on {}",
                        model::type_of(k)
                    ));
                }
                return Err(format!(
                    "'{name}' is not an element of {}",
                    model::type_of(k)
                ));
            }
            Some(out)
        }
        Expr::Choice { base, ty, .. } => {
            infer(base, focus, root)?;
            ty.fhir.clone().map(|t| vec![t])
        }
        Expr::Indexer(b, i) => {
            if unordered(b) {
                return Err(
                    "an indexer on the unordered result of children()/descendants()".into(),
                );
            }
            infer(i, focus, root)?;
            infer(b, focus, root)?
        }
        Expr::Neg(x) => {
            infer(x, focus, root)?;
            None
        }
        Expr::Bin(_, l, r) => {
            infer(l, focus, root)?;
            infer(r, focus, root)?;
            None
        }
        Expr::Call(b, f, args) => {
            let bt = infer(b, focus, root)?;
            if matches!(
                f,
                Func::First | Func::Last | Func::Tail | Func::Skip | Func::Take
            ) && unordered(b)
            {
                return Err(
                    "an order-dependent function on the unordered result of children()/descendants()"
                        .into(),
                );
            }
            let iterating = matches!(
                f,
                Func::Where
                    | Func::Select
                    | Func::Exists
                    | Func::All
                    | Func::Repeat
                    | Func::Trace
                    | Func::Sort
                    | Func::Aggregate
            );
            let mut last = None;
            for a in args {
                last = infer(a, if iterating { &bt } else { focus }, root)?;
            }
            match f {
                Func::Where
                | Func::First
                | Func::Last
                | Func::Tail
                | Func::Skip
                | Func::Take
                | Func::Single
                | Func::Distinct
                | Func::Trace => bt,
                Func::OfType(t) | Func::As(t) => t.fhir.clone().map(|t| vec![t]),
                Func::Extension => Some(vec!["Extension".into()]),
                Func::Select => last,
                _ => None,
            }
        }
        _ => None,
    })
}

/// `valueQuantity` on a type whose `value` is a choice: the choice's name.
fn expanded_choice<'n>(key: &str, name: &'n str) -> Option<&'n str> {
    CHOICE_SUFFIXES.iter().find_map(|s| {
        let prefix = name.strip_suffix(s)?;
        // A choice has several types (`birthDate` is a plain element of Patient).
        let types = CHOICE_SUFFIXES
            .iter()
            .filter(|t| model::child(key, &format!("{prefix}{t}")).is_some())
            .count();
        (!prefix.is_empty() && model::child(key, prefix).is_none() && types > 1).then_some(prefix)
    })
}

/// Whether `name` is a choice element of `key` (`value` of Observation).
fn is_choice_base(key: &str, name: &str) -> bool {
    CHOICE_SUFFIXES
        .iter()
        .filter(|s| model::child(key, &format!("{name}{s}")).is_some())
        .count()
        > 1
}
