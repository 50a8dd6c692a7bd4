//! The block-scan copy of one JSON value: the unpacker's fast path for a resource (and any
//! other object or array of a Bundle), at a few instructions per byte of pretty-printed input.
//!
//! [`copy_value`] reads the value from a slice that should hold all of it, 64 bytes at a
//! time ([`super::blocks`]): the runs of bytes that compaction keeps are copied whole, and only
//! the structural events (brackets, commas, the opening quote of each string) are stepped
//! through, to match brackets, find the value's end and note what the tokenizer notes (the
//! root `resourceType` and `id`, and `reference`s to rewrite). It mirrors the tokenizer's
//! `value_from` exactly for input it accepts; for anything else (a mismatched bracket, a line
//! feed inside a string, a backslash outside one, a value longer than `max`) it answers
//! [`Scanned::Odd`] having changed nothing the caller keeps, and the tokenizer reads the same
//! value from the same place, so errors are found and named by one piece of code only.

use std::collections::HashMap;
use std::ops::Range;

use super::Key;
use super::blocks::{self, Carry, Lanes, Simd};

/// How to read the value.
pub(super) struct Scan<'m> {
    /// A resource: note its root `resourceType` and `id` (and `reference`s, with
    /// `full_urls`).
    pub resource: bool,
    /// `fullUrl` → `Type/id`, to rewrite `reference`s of a resource.
    pub full_urls: Option<&'m HashMap<Vec<u8>, Vec<u8>>>,
    /// The longest copy (`out` included) the tokenizer accepts.
    pub max: usize,
    /// Which byte comparisons to use.
    pub simd: Simd,
}

/// What [`copy_value`] found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Scanned {
    /// The value, copied; `out` holds it.
    Done(Copied),
    /// The input ended inside the value (`out` is as it was).
    More,
    /// Input the tokenizer must read (`out` is as it was).
    Odd,
}

/// A value copied by [`copy_value`].
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Copied {
    /// Input bytes the value took.
    pub len: usize,
    /// Line feeds among them.
    pub lines: u64,
    /// The last root `resourceType` and `id` string values (in the input, quotes excluded).
    pub rtype: Option<Range<usize>>,
    pub id: Option<Range<usize>>,
    /// `urn:uuid:` references rewritten, and those that named no `fullUrl`.
    pub resolved: u64,
    pub unresolved: u64,
}

/// Bytes a block's copy may read past its 64 (runs are copied 16 bytes at a time).
pub(super) const SLACK: usize = 16;

/// Copies the JSON value at the start of `input` compacted onto the end of `out`. `stack`
/// holds the containers (`{` or `[`) the value is already inside (empty: `input` starts with
/// the value's `{` or `[`), `key` the member whose value comes next (as the tokenizer's
/// `value_from`).
pub(super) fn copy_value(
    input: &[u8],
    out: &mut Vec<u8>,
    scan: &Scan<'_>,
    stack: &[u8],
    key: Key,
) -> Scanned {
    // The containers, one bit each (set: an object), innermost in bit 0. Deeper values (not
    // seen in FHIR) are left to the tokenizer.
    if stack.len() > 64 {
        return Scanned::Odd;
    }
    let nest = Nest {
        objects: stack
            .iter()
            .fold(0u64, |bits, &c| (bits << 1) | u64::from(c == b'{')),
        depth: stack.len() as u32,
    };
    let mark = out.len();
    let r = dispatch(input, out, scan, nest, key);
    if !matches!(r, Scanned::Done(_)) {
        out.truncate(mark);
    }
    r
}

/// The containers a value is inside.
#[derive(Clone, Copy)]
struct Nest {
    objects: u64,
    depth: u32,
}

#[allow(unsafe_code)]
fn dispatch(input: &[u8], out: &mut Vec<u8>, scan: &Scan<'_>, nest: Nest, key: Key) -> Scanned {
    #[cfg(target_arch = "x86_64")]
    {
        if scan.simd == Simd::Best
            && std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vbmi2")
            && std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("popcnt")
            && std::is_x86_feature_detected!("bmi1")
            && std::is_x86_feature_detected!("pclmulqdq")
        {
            // SAFETY: the features `copy_avx512` is compiled for were just detected.
            return unsafe { copy_avx512(input, out, scan, nest, key) };
        }
        if matches!(scan.simd, Simd::Best | Simd::Avx2)
            && std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("popcnt")
            && std::is_x86_feature_detected!("bmi1")
            && std::is_x86_feature_detected!("pclmulqdq")
        {
            // SAFETY: the features `copy_avx2` is compiled for were just detected.
            return unsafe { copy_avx2(input, out, scan, nest, key) };
        }
        if scan.simd != Simd::Portable {
            return copy::<blocks::Sse2>(input, out, scan, nest, key);
        }
    }
    copy::<blocks::Portable>(input, out, scan, nest, key)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi2,avx2,popcnt,bmi1,pclmulqdq")]
fn copy_avx512(input: &[u8], out: &mut Vec<u8>, scan: &Scan<'_>, nest: Nest, key: Key) -> Scanned {
    copy::<blocks::Avx512>(input, out, scan, nest, key)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt,bmi1,pclmulqdq")]
fn copy_avx2(input: &[u8], out: &mut Vec<u8>, scan: &Scan<'_>, nest: Nest, key: Key) -> Scanned {
    copy::<blocks::Avx2>(input, out, scan, nest, key)
}

#[inline(always)]
fn copy<L: Lanes>(
    input: &[u8],
    out: &mut Vec<u8>,
    scan: &Scan<'_>,
    nest: Nest,
    mut key: Key,
) -> Scanned {
    let refs = scan.resource && scan.full_urls.is_some();
    let Nest {
        mut objects,
        mut depth,
    } = nest;
    let mut carry = Carry::default();
    let mut expect_key = false;
    // The last event was a closing bracket back into the root object.
    let mut fresh_close = false;
    // Where the pending member's key ended (a key before `input` ended at its start).
    let mut key_end = 0;
    let mut lines = 0u64;
    let (mut rtype, mut id) = (None, None);
    // References to rewrite: (where in `out` the string starts, its length, the target).
    let mut edits: Vec<(usize, usize, &[u8])> = Vec::new();
    let mut unresolved = 0;
    let mut pad = [b' '; 64 + SLACK];
    let mut base = 0;
    while base < input.len() {
        let avail = input.len() - base;
        let src: &[u8] = if avail >= 64 + SLACK {
            &input[base..base + 64 + SLACK]
        } else {
            let n = avail.min(64);
            pad[..n].copy_from_slice(&input[base..base + n]);
            pad[n..].fill(b' ');
            &pad
        };
        let block = blocks::classify::<L>(src[..64].try_into().expect("64 bytes"), &mut carry);
        let mut upto = if avail >= 64 {
            u64::MAX
        } else {
            (1u64 << avail) - 1
        };
        let mut end = None;
        let mut brackets = block.brackets & upto;
        // Commas and strings matter only where keys are looked at: in a resource, its root
        // object (all of it, to rewrite references).
        let mut members = if scan.resource {
            block.members & upto
        } else {
            0
        };
        loop {
            let next = if brackets == 0 {
                64
            } else {
                brackets.trailing_zeros() as usize
            };
            if members != 0 && (depth == 1 || refs) {
                let mut here = members & below(next);
                members &= !here;
                while here != 0 {
                    let i = here.trailing_zeros() as usize;
                    here &= here - 1;
                    let p = base + i;
                    let in_object = objects & 1 == 1;
                    if input[p] == b',' {
                        expect_key = in_object;
                        key = Key::Other;
                    } else if fresh_close {
                        // A string right after a closing bracket: the key state the tokenizer
                        // has here depends on strings inside the closed value, not followed.
                        return Scanned::Odd;
                    } else if expect_key && in_object {
                        // A member's key.
                        expect_key = false;
                        let at = &input[p..];
                        let (k, len) = if depth == 1 && at.starts_with(b"\"resourceType\"") {
                            (Key::ResourceType, 14)
                        } else if depth == 1 && at.starts_with(b"\"id\"") {
                            (Key::Id, 4)
                        } else if refs && at.starts_with(b"\"reference\"") {
                            (Key::Reference, 11)
                        } else {
                            (Key::Other, 0)
                        };
                        key = k;
                        key_end = p + len;
                    } else if key != Key::Other {
                        // The tokenizer takes the next string as the member's value unless a
                        // literal came first (only whitespace and colons are not tokens that
                        // reset the key).
                        let direct = input[key_end..p]
                            .iter()
                            .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b':'));
                        if direct {
                            let Some(close) = string_end(input, p) else {
                                return Scanned::More;
                            };
                            let text = p + 1..close;
                            match key {
                                Key::ResourceType => rtype = Some(text),
                                Key::Id => id = Some(text),
                                Key::Reference => {
                                    let t = &input[text];
                                    if let Some(map) = scan.full_urls
                                        && t.starts_with(b"urn:uuid:")
                                    {
                                        match map.get(t) {
                                            Some(target) => {
                                                let at = out.len()
                                                    + (block.keep & below(i)).count_ones() as usize;
                                                edits.push((at, close + 1 - p, target));
                                            }
                                            None => unresolved += 1,
                                        }
                                    }
                                }
                                Key::Other => {}
                            }
                        }
                        key = Key::Other;
                    }
                    fresh_close = false;
                }
            }
            if brackets == 0 {
                break;
            }
            members &= !below(next + 1);
            brackets &= brackets - 1;
            let i = next;
            let c = input[base + i];
            fresh_close = false;
            key = Key::Other;
            if c == b'{' || c == b'[' {
                if depth == 64 {
                    return Scanned::Odd;
                }
                objects = (objects << 1) | u64::from(c == b'{');
                depth += 1;
                expect_key = c == b'{';
            } else {
                if depth == 0 || (objects & 1 == 1) != (c == b'}') {
                    return Scanned::Odd;
                }
                objects >>= 1;
                depth -= 1;
                fresh_close = depth == 1;
                if depth == 0 {
                    end = Some(base + i + 1);
                    upto = below(i + 1);
                    break;
                }
            }
        }
        if block.odd & upto != 0 {
            return Scanned::Odd;
        }
        L::compact(src, block.keep & upto, out);
        lines += u64::from((block.newlines & upto).count_ones());
        if let Some(len) = end {
            let resolved = edits.len() as u64;
            if !edits.is_empty() && !rewrite(out, &edits, scan.max) {
                return Scanned::Odd;
            }
            if out.len() > scan.max {
                return Scanned::Odd;
            }
            return Scanned::Done(Copied {
                len,
                lines,
                rtype,
                id,
                resolved,
                unresolved,
            });
        }
        if !refs && out.len() > scan.max {
            return Scanned::Odd;
        }
        base += 64;
    }
    Scanned::More
}

/// The bits below bit `n` (all for 64).
#[inline(always)]
fn below(n: usize) -> u64 {
    if n >= 64 { u64::MAX } else { (1u64 << n) - 1 }
}

/// Copies the runs of `keep` (bits of the first 64 bytes of `src`, which has [`SLACK`] bytes
/// more to read) onto the end of `out`, 16 bytes at a time.
#[inline(always)]
#[allow(unsafe_code)]
pub(super) fn copy_runs(src: &[u8], keep: u64, out: &mut Vec<u8>) {
    assert!(src.len() >= 64 + SLACK);
    if keep == 0 {
        return;
    }
    out.reserve(64 + SLACK);
    let len = out.len();
    let mut o = 0;
    // SAFETY: every read is within `src` (a run ends by byte 64 and is read in at most
    // SLACK bytes more) and every write within the reserved spare capacity of `out` (at most
    // 64 bytes kept, written in at most SLACK more); only the kept bytes are counted in.
    unsafe {
        let from = src.as_ptr();
        let to = out.as_mut_ptr().add(len);
        // The first and the last byte of each run.
        let mut starts = keep & !(keep << 1);
        let mut ends = keep & !(keep >> 1);
        while starts != 0 {
            let s = starts.trailing_zeros() as usize;
            let n = ends.trailing_zeros() as usize + 1 - s;
            starts &= starts - 1;
            ends &= ends - 1;
            // Most runs (a key, a value) fit in one copy.
            let v = std::ptr::read_unaligned(from.add(s).cast::<[u8; 16]>());
            std::ptr::write_unaligned(to.add(o).cast::<[u8; 16]>(), v);
            let mut c = 16;
            while c < n {
                let v = std::ptr::read_unaligned(from.add(s + c).cast::<[u8; 16]>());
                std::ptr::write_unaligned(to.add(o + c).cast::<[u8; 16]>(), v);
                c += 16;
            }
            o += n;
        }
        out.set_len(len + o);
    }
}

/// The closing quote of the string that opens at `open`.
fn string_end(input: &[u8], open: usize) -> Option<usize> {
    let mut j = open + 1;
    loop {
        j += memchr::memchr2(b'"', b'\\', input.get(j..)?)?;
        if input[j] == b'"' {
            return Some(j);
        }
        j += 2;
    }
}

/// Applies the reference rewrites to `out`; `false` when the tokenizer's copy (which rewrites
/// each string after copying it) would have been longer than `max` at some point.
fn rewrite(out: &mut Vec<u8>, edits: &[(usize, usize, &[u8])], max: usize) -> bool {
    let mut new = Vec::with_capacity(out.len() + 64);
    let mut from = 0;
    for &(at, len, target) in edits {
        new.extend_from_slice(&out[from..at]);
        if new.len() + len > max {
            return false;
        }
        new.push(b'"');
        new.extend_from_slice(target);
        new.push(b'"');
        from = at + len;
    }
    new.extend_from_slice(&out[from..]);
    *out = new;
    true
}
