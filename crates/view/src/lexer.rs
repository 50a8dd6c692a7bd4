//! FHIRPath tokenizer: turns an expression string into tokens with byte positions.

use crate::error::SyntaxError;

/// A token kind.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Ident(String),
    /// `%name` or `` %`name` ``
    Ext(String),
    /// `$this`, `$index`, `$total`
    Var(String),
    Str(String),
    /// Integer or decimal literal text.
    Num(String),
    /// `@...` date/time literal text without the `@`.
    Date(String),
    Dot,
    Comma,
    LParen,
    RParen,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    /// Operator symbol: `= != ~ !~ < <= > >= + - * / | &`
    Op(&'static str),
    Eof,
}

/// A token and its byte offset in the expression.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub(crate) tok: Tok,
    pub(crate) pos: usize,
}

pub(crate) fn tokenize(src: &str) -> Result<Vec<Token>, SyntaxError> {
    let b = src.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    let err = |pos: usize, msg: String| SyntaxError { pos, message: msg };
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        // Comments.
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'*') {
            match src[i + 2..].find("*/") {
                Some(e) => i = i + 2 + e + 2,
                None => return Err(err(i, "unterminated comment".into())),
            }
            continue;
        }
        let tok = match c {
            b'.' => {
                i += 1;
                Tok::Dot
            }
            b',' => {
                i += 1;
                Tok::Comma
            }
            b'(' => {
                i += 1;
                Tok::LParen
            }
            b')' => {
                i += 1;
                Tok::RParen
            }
            b'[' => {
                i += 1;
                Tok::LBracket
            }
            b']' => {
                i += 1;
                Tok::RBracket
            }
            b'{' => {
                i += 1;
                Tok::LBrace
            }
            b'}' => {
                i += 1;
                Tok::RBrace
            }
            b'=' => {
                i += 1;
                Tok::Op("=")
            }
            b'~' => {
                i += 1;
                Tok::Op("~")
            }
            b'!' if b.get(i + 1) == Some(&b'=') => {
                i += 2;
                Tok::Op("!=")
            }
            b'!' if b.get(i + 1) == Some(&b'~') => {
                i += 2;
                Tok::Op("!~")
            }
            b'<' if b.get(i + 1) == Some(&b'=') => {
                i += 2;
                Tok::Op("<=")
            }
            b'>' if b.get(i + 1) == Some(&b'=') => {
                i += 2;
                Tok::Op(">=")
            }
            b'<' => {
                i += 1;
                Tok::Op("<")
            }
            b'>' => {
                i += 1;
                Tok::Op(">")
            }
            b'+' => {
                i += 1;
                Tok::Op("+")
            }
            b'-' => {
                i += 1;
                Tok::Op("-")
            }
            b'*' => {
                i += 1;
                Tok::Op("*")
            }
            b'/' => {
                i += 1;
                Tok::Op("/")
            }
            b'|' => {
                i += 1;
                Tok::Op("|")
            }
            b'&' => {
                i += 1;
                Tok::Op("&")
            }
            b'\'' => {
                let (s, n) = quoted(src, i, b'\'')?;
                i = n;
                Tok::Str(s)
            }
            b'`' => {
                let (s, n) = quoted(src, i, b'`')?;
                i = n;
                Tok::Ident(s)
            }
            b'%' => {
                i += 1;
                match b.get(i) {
                    Some(b'`') => {
                        let (s, n) = quoted(src, i, b'`')?;
                        i = n;
                        Tok::Ext(s)
                    }
                    Some(b'\'') => {
                        let (s, n) = quoted(src, i, b'\'')?;
                        i = n;
                        Tok::Ext(s)
                    }
                    Some(c) if c.is_ascii_alphabetic() || *c == b'_' => {
                        let s = i;
                        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                            i += 1;
                        }
                        Tok::Ext(src[s..i].to_string())
                    }
                    _ => return Err(err(start, "expected a name after '%'".into())),
                }
            }
            b'$' => {
                i += 1;
                let s = i;
                while i < b.len() && b[i].is_ascii_alphabetic() {
                    i += 1;
                }
                let name = &src[s..i];
                if !matches!(name, "this" | "index" | "total") {
                    return Err(err(start, format!("unknown variable '${name}'")));
                }
                Tok::Var(name.to_string())
            }
            b'@' => {
                i += 1;
                let s = i;
                // A '.' belongs to the literal only as the seconds' fraction (`@T10:30:00.5`),
                // so `@2015.is(Date)` is a literal followed by a call.
                let mut seen_colon = false;
                while i < b.len() {
                    let c = b[i];
                    let take = c.is_ascii_digit()
                        || matches!(c, b'-' | b'T' | b'Z' | b'+')
                        || c == b':'
                        || (c == b'.'
                            && seen_colon
                            && b.get(i + 1).is_some_and(u8::is_ascii_digit));
                    if !take {
                        break;
                    }
                    seen_colon |= c == b':';
                    i += 1;
                }
                if i == s || !b[s].is_ascii_digit() && b[s] != b'T' {
                    return Err(err(start, "invalid date/time literal".into()));
                }
                Tok::Date(src[s..i].to_string())
            }
            b'0'..=b'9' => {
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                if b.get(i) == Some(&b'.') && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                }
                Tok::Num(src[start..i].to_string())
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                Tok::Ident(src[start..i].to_string())
            }
            _ => {
                let ch = src[i..].chars().next().unwrap_or('?');
                return Err(err(i, format!("unexpected character '{ch}'")));
            }
        };
        out.push(Token { tok, pos: start });
    }
    out.push(Token {
        tok: Tok::Eof,
        pos: src.len(),
    });
    Ok(out)
}

/// Reads a quoted string starting at `start` (the quote); returns the unescaped text and the
/// offset after the closing quote.
fn quoted(src: &str, start: usize, q: u8) -> Result<(String, usize), SyntaxError> {
    let b = src.as_bytes();
    let mut i = start + 1;
    let mut out = String::new();
    while i < b.len() {
        match b[i] {
            c if c == q => return Ok((out, i + 1)),
            b'\\' => {
                let e = *b.get(i + 1).ok_or(SyntaxError {
                    pos: i,
                    message: "unterminated escape".into(),
                })?;
                i += 2;
                match e {
                    b'n' => out.push('\n'),
                    b'r' => out.push('\r'),
                    b't' => out.push('\t'),
                    b'f' => out.push('\u{c}'),
                    b'u' => {
                        let h = src
                            .get(i..i + 4)
                            .and_then(|h| u32::from_str_radix(h, 16).ok())
                            .and_then(char::from_u32)
                            .ok_or(SyntaxError {
                                pos: i,
                                message: "bad \\u escape".into(),
                            })?;
                        out.push(h);
                        i += 4;
                    }
                    _ => {
                        // `\'`, `\"`, `` \` ``, `\\` and `\/` stand for the character; so,
                        // leniently, does any other. It is decoded whole: taking its first
                        // byte as a character garbled a non-ASCII one and left `i` inside it
                        // (a panic, found by the `fhirpath` fuzz target).
                        let ch = src[i - 1..].chars().next().unwrap_or('?');
                        out.push(ch);
                        i += ch.len_utf8() - 1;
                    }
                }
            }
            _ => {
                let ch = src[i..].chars().next().unwrap_or('?');
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    Err(SyntaxError {
        pos: start,
        message: "unterminated string".into(),
    })
}

#[cfg(test)]
mod fuzz_findings {
    use super::{Tok, tokenize};

    /// Found by the `fhirpath` fuzz target: a backslash before a non-ASCII character in a
    /// string panicked (slicing inside the character) and garbled it.
    #[test]
    fn an_escaped_non_ascii_character_is_kept_whole() {
        let toks = tokenize("'a\\é\\\u{e4363}b' = `\\ü`").unwrap();
        assert_eq!(toks[0].tok, Tok::Str("aé\u{e4363}b".into()));
        assert_eq!(toks[2].tok, Tok::Ident("ü".into()));
        assert_eq!(tokenize("'\\''").unwrap()[0].tok, Tok::Str("'".into()));
    }
}
