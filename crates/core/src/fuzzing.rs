//! Entry points for the fuzz targets in `fuzz/` (not a stable API): the JSON walker's view of
//! a line as a `serde_json::Value`, so a target can hold it against `serde_json` itself.

use serde_json::{Map, Value};

use crate::scan::{self, Reason, Scalar, Visitor};

/// Walks `line` with the flattener's walker and rebuilds the object it reports. Numbers are
/// rebuilt from their source text (`f64` where the text is out of `serde_json`'s range); a
/// repeated member keeps its last value, as in `serde_json`. When `guess_keys` is set the
/// visitor predicts each member name from the names seen before at the same depth, as the
/// flattener does, so the walker's fast path for expected names is exercised too.
pub fn walk_to_value(line: &str, guess_keys: bool) -> Result<Value, String> {
    let mut b = Builder {
        stack: vec![Frame {
            value: Value::Object(Map::new()),
            key: None,
        }],
        seen: Vec::new(),
        guess_keys,
        ticks: 0,
    };
    let mut scratch = String::new();
    scan::walk(line, &mut b, &mut scratch)?;
    assert_eq!(b.stack.len(), 1, "every enter has its leave");
    Ok(b.stack.pop().expect("the root").value)
}

struct Frame {
    /// `Null` until the first child or scalar says what it is.
    value: Value,
    /// The member name this frame is stored under in its parent (`None`: an array element).
    key: Option<String>,
}

struct Builder {
    stack: Vec<Frame>,
    /// Member names seen per depth, for `expected_key`.
    seen: Vec<Vec<String>>,
    guess_keys: bool,
    ticks: usize,
}

impl Visitor for Builder {
    fn enter_key(&mut self, depth: usize, key: &str) -> Result<bool, Reason> {
        if self.seen.len() <= depth {
            self.seen.resize(depth + 1, Vec::new());
        }
        let plain = !key.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20);
        if plain && !self.seen[depth].iter().any(|k| k == key) {
            self.seen[depth].push(key.to_string());
        }
        self.stack.push(Frame {
            value: Value::Null,
            key: Some(key.to_string()),
        });
        Ok(true)
    }

    fn enter_index(&mut self, _index: usize) -> Result<(), Reason> {
        self.stack.push(Frame {
            value: Value::Null,
            key: None,
        });
        Ok(())
    }

    fn leave(&mut self) {
        let child = self.stack.pop().expect("a frame to leave");
        let parent = self.stack.last_mut().expect("a parent");
        match child.key {
            Some(k) => {
                if parent.value.is_null() {
                    parent.value = Value::Object(Map::new());
                }
                let obj = parent
                    .value
                    .as_object_mut()
                    .expect("members go in an object");
                obj.insert(k, child.value);
            }
            None => {
                if parent.value.is_null() {
                    parent.value = Value::Array(Vec::new());
                }
                let arr = parent
                    .value
                    .as_array_mut()
                    .expect("elements go in an array");
                arr.push(child.value);
            }
        }
    }

    fn scalar(&mut self, value: Scalar<'_>) -> Result<(), Reason> {
        let v = match value {
            Scalar::Str(s) => Value::String(s.to_string()),
            Scalar::Bool(b) => Value::Bool(b),
            Scalar::Null => Value::Null,
            Scalar::EmptyArray => Value::Array(Vec::new()),
            Scalar::EmptyObject => Value::Object(Map::new()),
            Scalar::Num { raw, int } => {
                let has_fraction = raw.bytes().any(|b| matches!(b, b'.' | b'e' | b'E'));
                if int == has_fraction {
                    return Err(format!("number {raw} flagged int={int}").into());
                }
                serde_json::from_str::<Value>(raw).unwrap_or_else(|_| {
                    // Out of serde_json's range (e.g. 1e400): the text as f64.
                    let f: f64 = raw.parse().expect("the walker's number syntax");
                    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
                })
            }
        };
        let top = self.stack.last_mut().expect("a frame");
        top.value = v;
        Ok(())
    }

    fn expected_key(&mut self, depth: usize) -> Option<&str> {
        if !self.guess_keys {
            return None;
        }
        self.ticks += 1;
        let names = self.seen.get(depth)?;
        if names.is_empty() {
            return None;
        }
        Some(&names[self.ticks % names.len()])
    }
}
