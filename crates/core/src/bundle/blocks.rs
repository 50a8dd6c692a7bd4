//! Block classification of JSON text for the Bundle unpacker's fast copy: 64 bytes at a time,
//! the bitmasks of what to copy and where the structure is (as simdjson's stage 1).
//!
//! [`classify`] turns one 64-byte block into masks (bit `i` is byte `i`): the bytes to keep
//! when compacting (everything but whitespace outside strings), the brackets outside strings,
//! the commas outside strings with the opening quote of each string, the line feeds, and the
//! bytes this scan does not vouch for (`odd`: a backslash outside a string, a line feed inside
//! one), after which the caller falls back to the byte-at-a-time tokenizer. Whether a byte is
//! inside a string is found for the whole block at once: quotes preceded by an odd run of
//! backslashes are escaped, and the in-string mask is the prefix XOR of the other quotes (it
//! holds the opening quote and not the closing one), carried across blocks by [`Carry`].
//!
//! The raw byte comparisons ([`Lanes`]) use AVX2 where the processor has it, else SSE2 on
//! x86_64 (part of the architecture), and a portable loop elsewhere; `tests` checks them
//! against each other and the whole classification against a byte-by-byte reference.

/// What a block says, as bitmasks (bit `i` is byte `i`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Block {
    /// Bytes kept by compaction: all but whitespace (` `, `\t`, `\r`, `\n`) outside strings.
    pub keep: u64,
    /// `{` `}` `[` `]` outside strings.
    pub brackets: u64,
    /// `,` outside strings, and the opening quote of every string.
    pub members: u64,
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
pub(super) struct Raw {
    quote: u64,
    backslash: u64,
    whitespace: u64,
    newline: u64,
    /// `{` `}` `[` `]`
    brackets: u64,
    comma: u64,
}

/// A way to make the byte comparisons of a block.
pub(super) trait Lanes {
    fn raw(block: &[u8; 64]) -> Raw;

    /// Appends the bytes of `src[..64]` whose bits are set in `keep` to `out` (`src` has
    /// [`super::fastcopy::SLACK`] bytes more to read).
    #[inline(always)]
    fn compact(src: &[u8], keep: u64, out: &mut Vec<u8>) {
        super::fastcopy::copy_runs(src, keep, out);
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
}

/// Which [`Lanes`] to use: the best the processor has (AVX-512 with VBMI2, else AVX2, where
/// they are detected, else SSE2 on x86_64), or (for tests) AVX2, SSE2 or the portable loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Simd {
    #[default]
    Best,
    #[cfg_attr(not(test), allow(dead_code))]
    Avx2,
    #[cfg_attr(not(test), allow(dead_code))]
    Sse2,
    Portable,
}

/// Classifies `block`, given the carry of the block before (updated for the next).
#[inline(always)]
pub(super) fn classify<L: Lanes>(block: &[u8; 64], carry: &mut Carry) -> Block {
    let raw = L::raw(block);
    // Most blocks of FHIR hold no backslash.
    let escaped = if raw.backslash | carry.escaped == 0 {
        0
    } else {
        escaped(raw.backslash, &mut carry.escaped)
    };
    let quote = raw.quote & !escaped;
    let in_string = L::prefix_xor(quote) ^ carry.in_string;
    carry.in_string = ((in_string as i64) >> 63) as u64;
    let outside = !in_string;
    Block {
        keep: !(raw.whitespace & outside),
        brackets: raw.brackets & outside,
        members: (raw.comma & outside) | (quote & in_string),
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

/// Sixteen bytes at a time (SSE2 is part of x86_64, so it needs no detection).
#[cfg(target_arch = "x86_64")]
pub(super) struct Sse2;

#[cfg(target_arch = "x86_64")]
impl Lanes for Sse2 {
    #[inline(always)]
    #[allow(unsafe_code)]
    fn raw(block: &[u8; 64]) -> Raw {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of x86_64; the four loads read the 64 bytes of `block`.
        unsafe {
            let eq = |v: __m128i, b: u8| _mm_cmpeq_epi8(v, _mm_set1_epi8(b as i8));
            let bits = |v: __m128i| _mm_movemask_epi8(v) as u16 as u64;
            let mut r = Raw::default();
            for i in 0..4 {
                let v = _mm_loadu_si128(block.as_ptr().add(16 * i).cast::<__m128i>());
                let nl = eq(v, b'\n');
                // `\t` (0x09) and `\r` (0x0D) are the bytes that are 0x0D with bit 2 set.
                let tab_cr = eq(_mm_or_si128(v, _mm_set1_epi8(0x04)), 0x0D);
                let ws = _mm_or_si128(_mm_or_si128(eq(v, b' '), nl), tab_cr);
                // `{`/`[` and `}`/`]` differ only in bit 5.
                let lower = _mm_or_si128(v, _mm_set1_epi8(0x20));
                let brackets = _mm_or_si128(eq(lower, b'{'), eq(lower, b'}'));
                let s = 16 * i;
                r.quote |= bits(eq(v, b'"')) << s;
                r.backslash |= bits(eq(v, b'\\')) << s;
                r.whitespace |= bits(ws) << s;
                r.newline |= bits(nl) << s;
                r.brackets |= bits(brackets) << s;
                r.comma |= bits(eq(v, b',')) << s;
            }
            r
        }
    }
}

/// Thirty-two bytes at a time; only for code compiled with AVX2 enabled (see
/// `fastcopy::copy_value`, which detects it).
#[cfg(target_arch = "x86_64")]
pub(super) struct Avx2;

#[cfg(target_arch = "x86_64")]
impl Lanes for Avx2 {
    #[inline(always)]
    #[allow(unsafe_code)]
    fn raw(block: &[u8; 64]) -> Raw {
        // SAFETY: called only from code compiled with AVX2 enabled, after detecting it.
        unsafe { raw_avx2(block) }
    }

    #[inline(always)]
    #[allow(unsafe_code)]
    fn prefix_xor(x: u64) -> u64 {
        // SAFETY: as `raw` (PCLMULQDQ is detected with AVX2).
        unsafe { prefix_xor_clmul(x) }
    }
}

/// The prefix XOR as a carry-less multiplication by all ones.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "pclmulqdq")]
#[inline]
fn prefix_xor_clmul(x: u64) -> u64 {
    use std::arch::x86_64::*;
    let v = _mm_set_epi64x(0, x as i64);
    _mm_cvtsi128_si64(_mm_clmulepi64_si128(v, _mm_set1_epi8(-1), 0)) as u64
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
#[allow(unsafe_code)]
fn raw_avx2(block: &[u8; 64]) -> Raw {
    use std::arch::x86_64::*;
    let eq = |v: __m256i, b: u8| _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b as i8));
    let bits = |v: __m256i| _mm256_movemask_epi8(v) as u32 as u64;
    let mut r = Raw::default();
    for i in 0..2 {
        // SAFETY: the two loads read the 64 bytes of `block`.
        let v = unsafe { _mm256_loadu_si256(block.as_ptr().add(32 * i).cast::<__m256i>()) };
        let nl = eq(v, b'\n');
        let tab_cr = eq(_mm256_or_si256(v, _mm256_set1_epi8(0x04)), 0x0D);
        let ws = _mm256_or_si256(_mm256_or_si256(eq(v, b' '), nl), tab_cr);
        let lower = _mm256_or_si256(v, _mm256_set1_epi8(0x20));
        let brackets = _mm256_or_si256(eq(lower, b'{'), eq(lower, b'}'));
        let s = 32 * i;
        r.quote |= bits(eq(v, b'"')) << s;
        r.backslash |= bits(eq(v, b'\\')) << s;
        r.whitespace |= bits(ws) << s;
        r.newline |= bits(nl) << s;
        r.brackets |= bits(brackets) << s;
        r.comma |= bits(eq(v, b',')) << s;
    }
    r
}

/// Sixty-four bytes at a time, the comparisons straight into bitmasks, and the kept bytes
/// gathered by one `vpcompressb` (into a register, then stored: the form that is fast on
/// both Intel and AMD); only for code compiled with AVX-512 F, BW and VBMI2 enabled (see
/// `fastcopy::copy_value`, which detects them).
#[cfg(target_arch = "x86_64")]
pub(super) struct Avx512;

#[cfg(target_arch = "x86_64")]
impl Lanes for Avx512 {
    #[inline(always)]
    #[allow(unsafe_code)]
    fn raw(block: &[u8; 64]) -> Raw {
        // SAFETY: called only from code compiled with AVX-512 BW enabled, after detecting it.
        unsafe { raw_avx512(block) }
    }

    #[inline(always)]
    #[allow(unsafe_code)]
    fn prefix_xor(x: u64) -> u64 {
        // SAFETY: as `raw` (PCLMULQDQ is detected with it).
        unsafe { prefix_xor_clmul(x) }
    }

    #[inline(always)]
    #[allow(unsafe_code)]
    fn compact(src: &[u8], keep: u64, out: &mut Vec<u8>) {
        // SAFETY: as `raw` (VBMI2 is detected with it).
        unsafe { compact_avx512(src, keep, out) }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
#[allow(unsafe_code)]
pub(super) fn raw_avx512(block: &[u8; 64]) -> Raw {
    use std::arch::x86_64::*;
    // SAFETY: the load reads the 64 bytes of `block`.
    let v = unsafe { _mm512_loadu_si512(block.as_ptr().cast()) };
    let eq = |v: __m512i, b: u8| _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(b as i8));
    let nl = eq(v, b'\n');
    // `\t` (0x09) and `\r` (0x0D) are the bytes that are 0x0D with bit 2 set.
    let tab_cr = eq(_mm512_or_si512(v, _mm512_set1_epi8(0x04)), 0x0D);
    // `{`/`[` and `}`/`]` differ only in bit 5.
    let lower = _mm512_or_si512(v, _mm512_set1_epi8(0x20));
    Raw {
        quote: eq(v, b'"'),
        backslash: eq(v, b'\\'),
        whitespace: eq(v, b' ') | nl | tab_cr,
        newline: nl,
        brackets: eq(lower, b'{') | eq(lower, b'}'),
        comma: eq(v, b','),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi2,popcnt")]
#[inline]
#[allow(unsafe_code)]
fn compact_avx512(src: &[u8], keep: u64, out: &mut Vec<u8>) {
    use std::arch::x86_64::*;
    assert!(src.len() >= 64);
    out.reserve(64);
    let len = out.len();
    // SAFETY: the load reads the first 64 bytes of `src`; the store writes 64 bytes into the
    // spare capacity just reserved, of which only the kept ones are counted in.
    unsafe {
        let v = _mm512_loadu_si512(src.as_ptr().cast());
        let packed = _mm512_maskz_compress_epi8(keep, v);
        _mm512_storeu_si512(out.as_mut_ptr().add(len).cast(), packed);
        out.set_len(len + keep.count_ones() as usize);
    }
}

/// One byte at a time: the fallback on other architectures (and the reference the SIMD
/// versions are tested against).
pub(super) struct Portable;

impl Lanes for Portable {
    fn raw(block: &[u8; 64]) -> Raw {
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
            set(&mut r.brackets, matches!(b, b'{' | b'}' | b'[' | b']'));
            set(&mut r.comma, b == b',');
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The classification of `text` block by block (the tail padded with spaces, its bits
    /// dropped).
    fn blocks<L: Lanes>(text: &[u8]) -> Vec<Block> {
        let mut carry = Carry::default();
        text.chunks(64)
            .map(|c| {
                let mut b = [b' '; 64];
                b[..c.len()].copy_from_slice(c);
                let mut k = classify::<L>(&b, &mut carry);
                if c.len() < 64 {
                    let m = (1u64 << c.len()) - 1;
                    k.keep &= m;
                    k.brackets &= m;
                    k.members &= m;
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
                brackets: 0,
                members: 0,
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
                if matches!(b, b'{' | b'}' | b'[' | b']') {
                    k.brackets |= bit;
                }
                if b == b',' {
                    k.members |= bit;
                }
                if b == b'\\' {
                    k.odd |= bit;
                }
                if b == b'"' {
                    k.members |= bit;
                    in_string = true;
                }
            }
            out.push(k);
        }
        out
    }

    /// Where the two disagree only after a backslash outside a string (which the block scan
    /// flags as odd and the caller does not go past), the blocks up to that one must agree.
    #[allow(unsafe_code)]
    fn agree_until_odd(text: &[u8]) {
        agree_until_odd_with(text, &blocks::<Portable>(text));
        #[cfg(target_arch = "x86_64")]
        agree_until_odd_with(text, &blocks::<Sse2>(text));
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("pclmulqdq") {
            // SAFETY: the features were just detected.
            agree_until_odd_with(text, &unsafe { blocks_avx2(text) });
        }
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512bw") && std::is_x86_feature_detected!("pclmulqdq") {
            // SAFETY: the features were just detected.
            agree_until_odd_with(text, &unsafe { blocks_avx512(text) });
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,pclmulqdq")]
    fn blocks_avx512(text: &[u8]) -> Vec<Block> {
        blocks::<Avx512>(text)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,pclmulqdq")]
    fn blocks_avx2(text: &[u8]) -> Vec<Block> {
        blocks::<Avx2>(text)
    }

    fn agree_until_odd_with(text: &[u8], got: &[Block]) {
        let want = reference(text);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            if w.odd != 0 {
                // Up to the first odd byte, the masks agree; the odd byte is flagged.
                let first = w.odd.trailing_zeros();
                let below = (1u64 << first) - 1;
                assert_eq!(g.keep & below, w.keep & below, "block {i} of {text:?}");
                assert_eq!(
                    g.brackets & below,
                    w.brackets & below,
                    "block {i} of {text:?}"
                );
                assert_eq!(
                    g.members & below,
                    w.members & below,
                    "block {i} of {text:?}"
                );
                assert_eq!(g.odd & below, 0, "block {i} of {text:?}");
                assert_ne!(g.odd & (1 << first), 0, "block {i} of {text:?}");
                return;
            }
            assert_eq!(g, w, "block {i} of {:?}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    fn simd_comparisons_equal_the_portable_ones() {
        let mut block = [0u8; 64];
        for start in (0..256).step_by(64) {
            for (i, b) in block.iter_mut().enumerate() {
                *b = (start + i) as u8;
            }
            assert_eq!(Sse2::raw(&block), Portable::raw(&block));
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 was just detected.
                assert_eq!(unsafe { raw_avx2(&block) }, Portable::raw(&block));
            }
            if std::is_x86_feature_detected!("avx512bw") {
                // SAFETY: AVX-512 BW was just detected.
                assert_eq!(unsafe { raw_avx512(&block) }, Portable::raw(&block));
            }
        }
    }

    /// `vpcompressb` keeps exactly the bytes the run-by-run copy keeps, for masks of every
    /// shape (none, all, single bytes, runs longer than 16).
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn compress_equals_the_run_copy() {
        if !(std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vbmi2"))
        {
            eprintln!("skipped: no AVX-512 VBMI2 on this processor");
            return;
        }
        let src: Vec<u8> = (0..80u8).map(|i| i.wrapping_mul(37)).collect();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut masks = vec![
            0,
            u64::MAX,
            1,
            1 << 63,
            0xFFFF_0000_FFFF_0000,
            0x0FFF_FFFF_FFFF_FFF0,
        ];
        for _ in 0..2000 {
            x = x.rotate_left(7).wrapping_mul(0x2545_F491_4F6C_DD1D);
            masks.push(x);
            masks.push(x & x.rotate_left(3) & x.rotate_left(11));
        }
        for keep in masks {
            let (mut a, mut b) = (b"prefix".to_vec(), b"prefix".to_vec());
            super::super::fastcopy::copy_runs(&src, keep, &mut a);
            Avx512::compact(&src, keep, &mut b);
            assert_eq!(a, b, "{keep:#x}");
        }
    }

    /// Runs of backslashes of every length ending at every offset around a block boundary,
    /// before a quote: escaped exactly when the run is odd.
    #[test]
    #[allow(unsafe_code)]
    fn prefix_xor_by_multiplication_equals_shifts() {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("pclmulqdq") {
            let mut x = 0x9E37_79B9_7F4A_7C15u64;
            for _ in 0..1000 {
                x = x.rotate_left(7).wrapping_mul(0x2545_F491_4F6C_DD1D);
                // SAFETY: PCLMULQDQ was just detected.
                assert_eq!(unsafe { prefix_xor_clmul(x) }, Portable::prefix_xor(x));
            }
        }
    }

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
