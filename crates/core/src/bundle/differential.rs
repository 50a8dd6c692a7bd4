//! The block-scan copy against the tokenizer alone, and against the compact text of the
//! same tokens: random Bundles (and other documents), pretty-printed with random whitespace,
//! strings full of escapes and backslash runs that cross 64-byte blocks, read whole, a byte
//! at a time and in random chunks; and the same texts broken by one random edit.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::Path;

use proptest::prelude::*;

use super::*;

/// A small deterministic generator (xorshift64*), seeded by proptest.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// Writes the same tokens twice: pretty (random whitespace between tokens) and compact.
struct Gen {
    rng: Rng,
    pretty: Vec<u8>,
    compact: Vec<u8>,
    /// `fullUrl`s written so far, for references to name.
    urls: Vec<String>,
}

const KEYS: &[&str] = &[
    "resourceType",
    "id",
    "reference",
    "value",
    "code",
    "display",
    "x",
    "resource",
    "fullUrl",
];

impl Gen {
    fn ws(&mut self) {
        let pick = self.rng.below(10);
        let text: String = match pick {
            0..=2 => String::new(),
            3 => " ".into(),
            4 | 5 => format!("\n{}", " ".repeat(self.rng.below(40))),
            6 => format!("\r\n{}", "\t".repeat(self.rng.below(4))),
            7 => " ".repeat(self.rng.below(130)),
            8 => "\t \n".into(),
            _ => format!("\n{}", " ".repeat(60 + self.rng.below(10))),
        };
        self.pretty.extend_from_slice(text.as_bytes());
    }

    fn raw(&mut self, t: &[u8]) {
        self.pretty.extend_from_slice(t);
        self.compact.extend_from_slice(t);
    }

    fn tok(&mut self, t: &[u8]) {
        self.ws();
        self.raw(t);
    }

    /// A string token (quotes included) of escapes, backslash runs, structural characters
    /// and non-ASCII text, sometimes long enough to cross several blocks.
    fn string_text(&mut self) -> Vec<u8> {
        let mut s = vec![b'"'];
        let most = if self.rng.chance(10) { 60 } else { 6 };
        let parts = self.rng.below(most);
        for _ in 0..parts {
            match self.rng.below(12) {
                0 => s.extend_from_slice(b"\\\""),
                1 => {
                    // An even run of backslashes (escaped backslashes) of any length.
                    let n = self.rng.below(40);
                    s.extend(std::iter::repeat_n(b'\\', 2 * n));
                }
                2 => s.extend_from_slice(b"\\\\\\\""),
                3 => s.extend_from_slice(b"\\u00e9\\n\\t\\/"),
                4 => s.extend_from_slice("é日本".as_bytes()),
                5 => s.extend_from_slice(b"{[,:]} "),
                6 => s.extend_from_slice(" ".repeat(self.rng.below(70)).as_bytes()),
                7 => s.extend_from_slice(b"urn:uuid:"),
                _ => {
                    let n = 1 + self.rng.below(30);
                    s.extend((0..n).map(|i| b'a' + (i % 26) as u8));
                }
            }
        }
        s.push(b'"');
        s
    }

    fn string(&mut self) {
        let t = self.string_text();
        self.tok(&t);
    }

    fn scalar(&mut self) {
        let t: &[u8] = match self.rng.below(7) {
            0 => b"-1.50e+3",
            1 => b"0",
            2 => b"true",
            3 => b"null",
            4 => b"12345678901234567890",
            5 => b"false",
            _ => {
                self.string();
                return;
            }
        };
        self.tok(t);
    }

    fn key(&mut self, k: &str) {
        self.tok(format!("\"{k}\"").as_bytes());
        self.tok(b":");
    }

    fn value(&mut self, depth: usize) {
        let kinds = if depth > 4 { 2 } else { 5 };
        match self.rng.below(kinds) {
            0 | 1 => self.scalar(),
            2 => {
                self.tok(b"[");
                let n = self.rng.below(4);
                for i in 0..n {
                    if i > 0 {
                        self.tok(b",");
                    }
                    self.value(depth + 1);
                }
                self.tok(b"]");
            }
            _ => self.object(depth + 1, false),
        }
    }

    /// An object; a resource one has its `resourceType` (usually first) and an `id`.
    fn object(&mut self, depth: usize, resource: bool) {
        self.tok(b"{");
        let mut members = Vec::new();
        if resource && !self.rng.chance(5) {
            members.push("resourceType");
        }
        if resource && self.rng.chance(80) {
            members.push("id");
        }
        for _ in 0..self.rng.below(5) {
            members.push(KEYS[self.rng.below(KEYS.len())]);
        }
        if resource && members.len() > 1 && self.rng.chance(10) {
            members.swap(0, 1);
        }
        for (i, k) in members.iter().enumerate() {
            if i > 0 {
                self.tok(b",");
            }
            self.key(k);
            match *k {
                "resourceType" if self.rng.chance(90) => {
                    let t = ["Patient", "Observation", "Bad Type", "Bundle2"][self.rng.below(4)];
                    self.tok(format!("\"{t}\"").as_bytes());
                }
                "id" if self.rng.chance(90) => {
                    let id = format!("\"i{}\"", self.rng.below(6));
                    self.tok(id.as_bytes());
                }
                "reference" if !self.urls.is_empty() && self.rng.chance(70) => {
                    let r = if self.rng.chance(80) {
                        self.urls[self.rng.below(self.urls.len())].clone()
                    } else {
                        "urn:uuid:unknown".to_string()
                    };
                    self.tok(format!("\"{r}\"").as_bytes());
                }
                _ => self.value(depth),
            }
        }
        self.tok(b"}");
    }

    /// A Bundle; returns the compact text of each entry's resource, in order.
    fn bundle(&mut self) -> Vec<Vec<u8>> {
        let mut resources = Vec::new();
        self.tok(b"{");
        self.key("resourceType");
        self.tok(b"\"Bundle\"");
        if self.rng.chance(30) {
            self.tok(b",");
            self.key("link");
            self.value(1);
        }
        self.tok(b",");
        self.key("entry");
        self.tok(b"[");
        for i in 0..self.rng.below(6) {
            if i > 0 {
                self.tok(b",");
            }
            self.tok(b"{");
            let url = format!("urn:uuid:u{}", self.rng.below(1000));
            self.urls.push(url.clone());
            self.key("fullUrl");
            self.tok(format!("\"{url}\"").as_bytes());
            if self.rng.chance(95) {
                self.tok(b",");
                self.key("resource");
                self.ws();
                let start = self.compact.len();
                self.object(1, true);
                resources.push(self.compact[start..].to_vec());
            }
            if self.rng.chance(60) {
                self.tok(b",");
                self.key("request");
                self.tok(b"{");
                self.key("method");
                self.tok(b"\"POST\"");
                self.tok(b"}");
            }
            self.tok(b"}");
        }
        self.tok(b"]");
        self.tok(b"}");
        resources
    }

    /// A file of documents: Bundles, and sometimes a resource on its own. Returns the text and
    /// the compact text of every resource, in order.
    fn file(seed: u64) -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut g = Gen {
            rng: Rng(seed | 1),
            pretty: Vec::new(),
            compact: Vec::new(),
            urls: Vec::new(),
        };
        let mut resources = Vec::new();
        for _ in 0..1 + g.rng.below(3) {
            if g.rng.chance(85) {
                resources.extend(g.bundle());
            } else {
                let start = g.compact.len();
                g.object(0, true);
                resources.push(g.compact[start..].to_vec());
            }
            g.pretty.push(b'\n');
        }
        (g.pretty, resources)
    }
}

/// Reads in chunks of random sizes (1 to 300 bytes), or of one byte.
struct Chunks(io::Cursor<Vec<u8>>, Option<Rng>);
impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf
            .len()
            .min(self.1.as_mut().map_or(1, |r| 1 + r.below(300)));
        self.0.read(&mut buf[..n])
    }
}

/// One line handed on: bytes, kind, type, id, `fullUrl`, entry, line.
type Line = (
    Vec<u8>,
    Kind,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    u32,
    u64,
);

/// Everything the parser hands on.
#[derive(Debug, Default)]
struct Seen {
    lines: Vec<Line>,
    bundles: u64,
    resolved: u64,
    unresolved: u64,
    /// Values the block scan copied (not compared: zero for the tokenizer alone).
    fast_copies: u64,
}

impl PartialEq for Seen {
    fn eq(&self, o: &Seen) -> bool {
        (&self.lines, self.bundles, self.resolved, self.unresolved)
            == (&o.lines, o.bundles, o.resolved, o.unresolved)
    }
}

impl Emit for Seen {
    fn emit(&mut self, e: Emitted<'_>) -> Result<()> {
        self.lines.push((
            e.bytes.to_vec(),
            e.kind,
            e.rtype.map(<[u8]>::to_vec),
            e.id.map(<[u8]>::to_vec),
            e.full_url.map(<[u8]>::to_vec),
            e.entry,
            e.line,
        ));
        Ok(())
    }
    fn bundle(&mut self) {
        self.bundles += 1;
    }
}

#[derive(Clone, Copy, Debug)]
enum Reading {
    Whole,
    Trickle,
    Chunks(u64),
}

fn parse(
    text: &[u8],
    fast: Option<blocks::Simd>,
    reading: Reading,
    urls: Option<&HashMap<Vec<u8>, Vec<u8>>>,
    max: usize,
    window: usize,
) -> Seen {
    let cursor = io::Cursor::new(text.to_vec());
    let src: Box<dyn Read + Send> = match reading {
        Reading::Whole => Box::new(cursor),
        Reading::Trickle => Box::new(Chunks(cursor, None)),
        Reading::Chunks(seed) => Box::new(Chunks(cursor, Some(Rng(seed | 1)))),
    };
    let mut p = Parser::new(src, Path::new("t.json"), 0, max, urls);
    p.fast = fast.is_some();
    p.simd = fast.unwrap_or_default();
    p.window = window;
    let mut seen = Seen::default();
    p.documents(&mut seen).unwrap();
    seen.resolved = p.resolved;
    seen.unresolved = p.unresolved;
    seen.fast_copies = p.fast_copies;
    seen
}

/// The `fullUrl` map of a text, as `collect_full_urls` makes it.
fn full_urls(text: &[u8]) -> HashMap<Vec<u8>, Vec<u8>> {
    let mut seen = Seen::default();
    let src: Box<dyn Read + Send> = Box::new(io::Cursor::new(text.to_vec()));
    let mut p = Parser::new(src, Path::new("t.json"), 0, 1 << 20, None);
    p.fast = false;
    p.documents(&mut seen).unwrap();
    let mut map = HashMap::new();
    for (_, _, t, id, url, _, _) in seen.lines {
        if let (Some(u), Some(t), Some(id)) = (url, t, id) {
            let mut target = t;
            target.push(b'/');
            target.extend_from_slice(&id);
            map.insert(u, target);
        }
    }
    map
}

/// One random edit: a byte inserted, replaced or removed, or the text cut short.
fn break_text(text: &mut Vec<u8>, seed: u64) {
    let mut rng = Rng(seed | 1);
    if text.is_empty() {
        return;
    }
    let at = rng.below(text.len());
    let bytes = b"\"\\\n{}[],:x \xEF";
    let b = bytes[rng.below(bytes.len())];
    match rng.below(4) {
        0 => text.insert(at, b),
        1 => text[at] = b,
        2 => {
            text.remove(at);
        }
        _ => text.truncate(at),
    }
}

/// The fast path and the tokenizer alone hand on the same lines, kinds, types, ids, entries,
/// line numbers and counts, however the input is read. Returns what the fast path read
/// whole.
fn same_as_tokenizer(text: &[u8], seed: u64, resolve: bool, max: usize, window: usize) -> Seen {
    let urls = resolve.then(|| full_urls(text));
    let want = parse(text, None, Reading::Whole, urls.as_ref(), max, window);
    let mut fast = None;
    let simds = [
        blocks::Simd::Best,
        blocks::Simd::Avx2,
        blocks::Simd::Sse2,
        blocks::Simd::Portable,
    ];
    for (k, reading) in [Reading::Whole, Reading::Chunks(seed), Reading::Trickle]
        .into_iter()
        .enumerate()
    {
        if matches!(reading, Reading::Trickle) && text.len() > 20_000 {
            continue;
        }
        // Every way of reading with the best lanes; whole with each of the others.
        for &simd in if k == 0 { &simds[..] } else { &simds[..1] } {
            let got = parse(text, Some(simd), reading, urls.as_ref(), max, window);
            assert_eq!(
                got,
                want,
                "{reading:?} {simd:?} resolve {resolve} max {max} window {window}: {}",
                String::from_utf8_lossy(text)
            );
            fast.get_or_insert(got);
        }
    }
    fast.expect("read whole")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Valid Bundles: every resource is its tokens without the whitespace between them.
    #[test]
    fn resources_are_their_compact_tokens(seed in any::<u64>(), resolve in any::<bool>()) {
        let (text, resources) = Gen::file(seed);
        let seen = same_as_tokenizer(&text, seed, resolve, 1 << 20, 1 << 20);
        if !resolve {
            let got: Vec<&Vec<u8>> = seen
                .lines
                .iter()
                .filter(|l| l.1 == Kind::Resource)
                .map(|l| &l.0)
                .collect();
            let want: Vec<&Vec<u8>> = resources.iter().collect();
            prop_assert_eq!(got, want);
        }
        // Every resource was copied by the block scan.
        let containers = seen.lines.iter().filter(|l| l.1 == Kind::Resource).count();
        prop_assert!(seen.fast_copies as usize >= containers, "{} < {}", seen.fast_copies, containers);
    }

    /// The same texts after one random edit (broken strings, brackets, truncation, a byte
    /// order mark's byte, a backslash outside a string), with a small limit on the length of
    /// a resource now and then.
    #[test]
    fn broken_bundles_are_read_as_the_tokenizer_reads_them(
        seed in any::<u64>(),
        edit in any::<u64>(),
        resolve in any::<bool>(),
        small_max in any::<bool>(),
    ) {
        let (mut text, _) = Gen::file(seed);
        break_text(&mut text, edit);
        let max = if small_max { 200 } else { 1 << 20 };
        same_as_tokenizer(&text, seed, resolve, max, 1 << 20);
    }
}

/// A resource longer than the buffer widens the window (doubling it), and one longer than the
/// window's limit is left to the tokenizer; both hand on what the tokenizer does.
#[test]
fn long_resources_widen_the_window_or_stream() {
    let mut body = String::new();
    for i in 0..12_000 {
        body.push_str(&format!(
            "\n        {{ \"code\": \"c{i}\", \"display\": \"a \\\\\\\" b {i}\" }},"
        ));
    }
    body.pop();
    let text = format!(
        "{{\n  \"resourceType\": \"Bundle\",\n  \"entry\": [\n    {{\n      \"resource\": {{\n        \"resourceType\": \"Observation\",\n        \"id\": \"o\",\n        \"coding\": [{body}\n        ]\n      }}\n    }},\n    {{ \"resource\": {{ \"resourceType\": \"Patient\", \"id\": \"p\" }} }}\n  ]\n}}\n"
    );
    assert!(text.len() > 2 * BUF, "{}", text.len());
    let patient_line = text[..text.find("{ \"resource\"").unwrap()]
        .matches('\n')
        .count()
        + 1;
    for window in [1 << 20, BUF] {
        let seen = same_as_tokenizer(text.as_bytes(), 7, false, 1 << 30, window);
        assert_eq!(seen.lines.len(), 2);
        assert_eq!(seen.lines[0].2.as_deref(), Some(&b"Observation"[..]));
        assert_eq!(seen.lines[1].2.as_deref(), Some(&b"Patient"[..]));
        assert_eq!(seen.lines[1].6, patient_line as u64);
        // With the smaller window, the long resource is left to the tokenizer.
        assert_eq!(seen.fast_copies, if window == BUF { 1 } else { 2 });
    }
}

/// A byte order mark is skipped at the start of the file only: elsewhere its bytes are
/// text, as any other byte outside a string (the tokenizer once dropped 0xEF anywhere on the
/// first line, turning a broken one-line Bundle into a valid one).
#[test]
fn a_byte_order_mark_is_skipped_only_at_the_start() {
    let text = "\u{feff}{\"resourceType\":\"Bundle\",\"entry\":[{\"resource\":{\"resourceType\":\"Patient\",\"a\":\u{feff}1}}]}";
    let seen = same_as_tokenizer(text.as_bytes(), 3, false, 1 << 20, 1 << 20);
    assert_eq!(seen.lines.len(), 1);
    assert_eq!(
        seen.lines[0].0,
        "{\"resourceType\":\"Patient\",\"a\":\u{feff}1}".as_bytes()
    );
}

/// Broken resources where the tokenizer's notion of "the next string is a key" depends on
/// strings inside a nested value that the block scan does not step through (it follows only
/// the brackets below the root object): a string right after a closed value is left to the
/// tokenizer, so the `id` noted is the tokenizer's (none, in the first two).
#[test]
fn strings_right_after_a_closed_value_are_read_as_the_tokenizer_reads_them() {
    for resource in [
        r#"{"resourceType":"Patient","a":{"b":1} "id":"x"}"#,
        r#"{"resourceType":"Patient","a":[{"b":"c"}] "id" : "y"}"#,
        r#"{"resourceType":"Patient","a":{} "id":"z"}"#,
        r#"{"resourceType":"Patient","a":{"b":1}, "id":"w"}"#,
    ] {
        let text = format!(r#"{{"resourceType":"Bundle","entry":[{{"resource":{resource}}}]}}"#);
        let seen = same_as_tokenizer(text.as_bytes(), 5, false, 1 << 20, 1 << 20);
        assert_eq!(seen.lines.len(), 1, "{resource}");
        assert_eq!(
            seen.lines[0].0,
            resource
                .as_bytes()
                .to_vec()
                .into_iter()
                .filter(|&b| b != b' ')
                .collect::<Vec<u8>>()
        );
    }
}

/// Values nested deeper than the block scan's 64 levels are read by the tokenizer.
#[test]
fn deep_nesting_is_left_to_the_tokenizer() {
    let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
    let text = format!(
        r#"{{"resourceType":"Bundle","entry":[{{"resource":{{"resourceType":"Patient","id":"d","a":{deep}}}}}]}}"#
    );
    let seen = same_as_tokenizer(text.as_bytes(), 9, false, 1 << 20, 1 << 20);
    assert_eq!(seen.lines[0].3.as_deref(), Some(&b"d"[..]));
    assert_eq!(seen.fast_copies, 0);
}
