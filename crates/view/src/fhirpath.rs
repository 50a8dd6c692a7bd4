//! A standalone FHIRPath expression: compiled by the same parser and evaluated by the same
//! evaluator as the paths of a view, with typed results (the type name and the FHIRPath
//! literal text of each value). Used by the conformance runner and by callers that want
//! `fhirpathpy.evaluate`-style answers.
//!
//! ```
//! use flatfhir_view::{fhirpath::Expression, json};
//!
//! let e = Expression::parse("name.given.first() & ' ' & (0.1 + 0.2 = 0.3).toString()").unwrap();
//! let r = json::parse(r#"{"resourceType":"Patient","name":[{"given":["Ann"]}]}"#).unwrap();
//! let out = e.evaluate(&r).unwrap();
//! assert_eq!(out[0].text(), "Ann true");
//! ```

use crate::ast::Expr;
use crate::error::SyntaxError;
use crate::eval::{Env, Item, eval, root};
use crate::json::Json;

/// A compiled FHIRPath expression.
#[derive(Debug, Clone)]
pub struct Expression {
    expr: Expr,
}

/// Evaluating an expression failed (e.g. `single()` on several items, a non-boolean `iif`
/// criterion, comparing a quantity with a string).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);

/// One value of a result, with its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    type_name: String,
    text: String,
}

impl Value {
    /// The type: a System type (`boolean`, `integer`, `decimal`, `string`, `date`,
    /// `dateTime`, `time`, `Quantity`) or, for a node of the resource, its FHIR type when
    /// known (`code`, `HumanName`, `Patient`, …; `Object` for an untyped complex value).
    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    /// The value as FHIRPath writes it: `true`, `5`, `1.50` (precision kept), strings
    /// unquoted, `@2012-04-15T15:00:00+02:00`, `4 'g'`; complex values as JSON text.
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl Expression {
    /// Parses and compiles `src`; unsupported functions and constructs are refused here.
    pub fn parse(src: &str) -> Result<Expression, SyntaxError> {
        Ok(Expression {
            expr: crate::parser::parse(src, &|_| None)?,
        })
    }

    /// Like [`Expression::parse`], with FHIRPath's semantic checks against the FHIR R4 model
    /// for expressions evaluated on a `resource_type`: an element the model does not have
    /// (`name.given1`), a path for another resource type (`Encounter.name` on a Patient), an
    /// expanded choice name (`valueQuantity` for `value.ofType(Quantity)`), and
    /// order-dependent functions on `children()`/`descendants()`. (Views stay lenient: they
    /// run on any FHIR version.)
    pub fn parse_strict(src: &str, resource_type: &str) -> Result<Expression, SyntaxError> {
        let e = Expression::parse(src)?;
        crate::strict::check(&e.expr, resource_type)
            .map_err(|message| SyntaxError { pos: 0, message })?;
        Ok(e)
    }

    /// Evaluates the expression with `resource` as its focus (and `%resource`).
    pub fn evaluate(&self, resource: &Json<'_>) -> Result<Vec<Value>, EvalError> {
        let env = Env {
            resource,
            consts: &[],
            row_index: 0,
            index: 0,
            total: None,
            typed: true,
        };
        let out = eval(&env, &self.expr, &[root(resource)]).map_err(EvalError)?;
        Ok(out.iter().map(value).collect())
    }
}

fn value(it: &Item<'_>) -> Value {
    let (type_name, text) = crate::eval::describe_item(it);
    Value { type_name, text }
}
