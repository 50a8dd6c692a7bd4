//! Block classification of JSON text for the Bundle unpacker's fast copy: 64 bytes at a time,
//! the bitmasks of what to copy and where the structure is (as simdjson's stage 1).
//!
//! [`classify`] turns one 64-byte block into masks (bit `i` is byte `i`): the bytes to keep
//! when compacting (everything but whitespace outside strings), the structural events (`{`
//! `}` `[` `]` `,` outside strings and each string's opening quote), the line feeds, and the
//! bytes this scan does not vouch for (`odd`: a backslash outside a string, a line feed inside
//! one), after which the caller falls back to the byte-at-a-time tokenizer. Whether a byte is inside a string is found for the whole
//! block at once: quotes preceded by an odd run of backslashes are escaped, and the in-string
//! mask is the prefix XOR of the other quotes (it holds the opening quote and not the closing
//! one), carried across blocks by [`Carry`].
//!
//! The raw byte comparisons use SSE2 on x86_64 (part of the architecture, so no detection is
//! needed) and a portable loop elsewhere; `tests` checks the two against each other and the
//! whole classification against a byte-by-byte reference.

/// What a block says, as bitmasks (bit `i` is byte `i`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Block {
    /// Bytes kept by compaction: all but whitespace (` `, `\t`, `\r`, `\n`) outside strings.
    pub keep: u64,
    /// `{` `}` `[` `]` `,` outside strings, and the opening quote of every string.
    pub events: u64,
    /// Line feeds.
    pub newlines: u64,
    /// Bytes the block scan does not handle: a backslash outside a string (where the
    /// tokenizer takes it for part of a literal, not an escape) and a line feed inside one.
    pub odd: u64,
}

/// The state one block hands to the next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Carry {
    /// All ones when the previous block ended inside a string.
    in_string: u64,
    /// 1 when the first byte of the next block is escaped (the previous block ended in an
    /// odd run of backslashes).
    escaped: u64,
}

/// The byte comparisons of one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Raw {
    quote: u64,
    backslash: u64,
    whitespace: u64,
    newline: u64,
    /// `{` `}` `[` `]` `,`
    structural: u64,
}

/// Classifies `block`, given the carry of the block before (updated for the next).
#[inline(always)]
pub(super) fn classify(block: &[u8; 64], carry: &mut Carry) -> Block {
    let raw = raw(block);
    let escaped = escaped(raw.backslash, &mut carry.escaped);
    let quote = raw.quote & !escaped;
    let in_string = prefix_xor(quote) ^ carry.in_string;
    carry.in_string = ((in_string as i64) >> 63) as u64;
    let outside = !in_string;
    Block {
        keep: !(raw.whitespace & outside),
        events: (raw.structural & outside) | (quote & in_string),
        newlines: raw.newline,
        odd: (raw.backslash & outside) | (raw.newline & in_string),
    }
}

/// The bytes escaped by a backslash (the byte after an odd run of backslashes), given
/// whether the block's first byte is escaped (updated for the next block). simdjson's
/// `find_escaped`: runs of backslashes that start on an odd bit are told from those that
/// start on an even bit by adding the run starts to the runs (the carry of the addition
/// marks the end of each run).
#[inline(always)]
fn escaped(backslash: u64, prev_escaped: &mut u64) -> u64 {
    const EVEN: u64 = 0x5555_5555_5555_5555;
    // A backslash that is itself escaped starts nothing.
    let backslash = backslash & !*prev_escaped;
    let follows_escape = (backslash << 1) | *prev_escaped;
    let odd_starts = backslash & !EVEN & !follows_escape;
    let (even_runs, overflow) = odd_starts.overflowing_add(backslash);
    *prev_escaped = u64::from(overflow);
    let invert = even_runs << 1;
    (EVEN ^ invert) & follows_escape
}

/// Bit `i` of the result is the XOR of bits `0..=i` of `x`.
#[inline(always)]
fn prefix_xor(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(unsafe_code)]
fn raw(block: &[u8; 64]) -> Raw {
    use std::arch::x86_64::*;
    // SAFETY: SSE2 is part of x86_64; the four loads read the 64 bytes of `block`.
    unsafe {
        let at = |i: usize| _mm_loadu_si128(block.as_ptr().add(16 * i).cast::<__m128i>());
        let eq = |v: __m128i, b: u8| _mm_cmpeq_epi8(v, _mm_set1_epi8(b as i8));
        let bits = |v: __m128i| _mm_movemask_epi8(v) as u16 as u64;
        let mut r = Raw::default();
        for i in 0..4 {
            let v = at(i);
            let nl = eq(v, b'\n');
            // `\t` (0x09) and `\r` (0x0D) are the bytes that are 0x0D with bit 2 set.
            let tab_cr = eq(_mm_or_si128(v, _mm_set1_epi8(0x04)), 0x0D);
            let ws = _mm_or_si128(_mm_or_si128(eq(v, b' '), nl), tab_cr);
            // `{`/`[` and `}`/`]` differ only in bit 5.
            let lower = _mm_or_si128(v, _mm_set1_epi8(0x20));
            let structural =
                _mm_or_si128(_mm_or_si128(eq(lower, b'{'), eq(lower, b'}')), eq(v, b','));
            let s = 16 * i;
            r.quote |= bits(eq(v, b'"')) << s;
            r.backslash |= bits(eq(v, b'\\')) << s;
            r.whitespace |= bits(ws) << s;
            r.newline |= bits(nl) << s;
            r.structural |= bits(structural) << s;
        }
        r
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn raw(block: &[u8; 64]) -> Raw {
    raw_portable(block)
}

/// The byte comparisons one byte at a time (the fallback on other architectures, and the
/// reference the SIMD version is tested against).
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn raw_portable(block: &[u8; 64]) -> Raw {
    let mut r = Raw::default();
    for (i, &b) in block.iter().enumerate() {
        let bit = 1u64 << i;
        let set = |m: &mut u64, on: bool| {
            if on {
                *m |= bit
            }
        };
        set(&mut r.quote, b == b'"');
        set(&mut r.backslash, b == b'\\');
        set(&mut r.whitespace, matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
        set(&mut r.newline, b == b'\n');
        set(
            &mut r.structural,
            matches!(b, b'{' | b'}' | b'[' | b']' | b','),
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The classification of `text` block by block (the tail padded with spaces, its bits
    /// dropped).
    fn blocks(text: &[u8]) -> Vec<Block> {
        let mut carry = Carry::default();
        text.chunks(64)
            .map(|c| {
                let mut b = [b' '; 64];
                b[..c.len()].copy_from_slice(c);
                let mut k = classify(&b, &mut carry);
                if c.len() < 64 {
                    let m = (1u64 << c.len()) - 1;
                    k.keep &= m;
                    k.events &= m;
                    k.newlines &= m;
                    k.odd &= m;
                }
                k
            })
            .collect()
    }

    /// The same masks, found one byte at a time as the tokenizer reads: a string opens at a
    /// quote outside one and closes at the next quote that no backslash escapes (a backslash
    /// escaping exactly the byte after it).
    fn reference(text: &[u8]) -> Vec<Block> {
        let mut out = Vec::new();
        let (mut in_string, mut escape) = (false, false);
        for c in text.chunks(64) {
            let mut k = Block {
                keep: 0,
                events: 0,
                newlines: 0,
                odd: 0,
            };
            for (i, &b) in c.iter().enumerate() {
                let bit = 1u64 << i;
                if b == b'\n' {
                    k.newlines |= bit;
                }
                if in_string {
                    k.keep |= bit;
                    if b == b'\n' {
                        k.odd |= bit;
                    }
                    if escape {
                        escape = false;
                    } else if b == b'\\' {
                        escape = true;
                    } else if b == b'"' {
                        in_string = false;
                    }
                    continue;
                }
                if !matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
                    k.keep |= bit;
                }
                if matches!(b, b'{' | b'}' | b'[' | b']' | b',') {
                    k.events |= bit;
                }
                if b == b'\\' {
                    k.odd |= bit;
                }
                if b == b'"' {
                    k.events |= bit;
                    in_string = true;
                }
            }
            out.push(k);
        }
        out
    }

    /// Where the two disagree only after a backslash outside a string (which the block scan
    /// flags as odd and the caller does not go past), the blocks up to that one must agree.
    fn agree_until_odd(text: &[u8]) {
        let got = blocks(text);
        let want = reference(text);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            if w.odd != 0 {
                // Up to the first odd byte, the masks agree; the odd byte is flagged.
                let first = w.odd.trailing_zeros();
                let below = (1u64 << first) - 1;
                assert_eq!(g.keep & below, w.keep & below, "block {i} of {text:?}");
                assert_eq!(g.events & below, w.events & below, "block {i} of {text:?}");
                assert_eq!(g.odd & below, 0, "block {i} of {text:?}");
                assert_ne!(g.odd & (1 << first), 0, "block {i} of {text:?}");
                return;
            }
            assert_eq!(g, w, "block {i} of {:?}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn simd_comparisons_equal_the_portable_ones() {
        let mut block = [0u8; 64];
        for start in (0..256).step_by(64) {
            for (i, b) in block.iter_mut().enumerate() {
                *b = (start + i) as u8;
            }
            assert_eq!(raw(&block), raw_portable(&block));
        }
    }

    /// Runs of backslashes of every length ending at every offset around a block boundary,
    /// before a quote: escaped exactly when the run is odd.
    #[test]
    fn backslash_runs_across_block_boundaries() {
        for run in 0..=70 {
            for end in 40..=140 {
                if run > end {
                    continue;
                }
                let mut text = vec![b'a'; 150];
                text[0] = b'"';
                for b in &mut text[end - run..end] {
                    *b = b'\\';
                }
                text[end] = b'"';
                text[end + 1] = b' ';
                text[end + 2] = b'{';
                agree_until_odd(&text);
            }
        }
    }

    proptest! {
        #[test]
        fn masks_equal_a_byte_by_byte_reading(
            text in proptest::collection::vec(
                prop_oneof![
                    Just(b'"'), Just(b'\\'), Just(b' '), Just(b'\n'), Just(b'\t'), Just(b'\r'),
                    Just(b'{'), Just(b'}'), Just(b'['), Just(b']'), Just(b','), Just(b':'),
                    Just(b'a'), Just(b'0'), Just(0xC3u8), Just(0x0Cu8), Just(0x09u8),
                ],
                0..400,
            ),
        ) {
            agree_until_odd(&text);
        }
    }
}
