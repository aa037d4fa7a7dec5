//! Forward searches for the next byte of a small class (digits, URL starts), for the skip
//! loops of the text scanners.
//!
//! The scanners in [`crate::dlp`] and [`crate::mime`] look at most bytes of a text only to
//! find that nothing can start there. [`find_from`] skips such stretches a block at a time:
//! the test over a whole block has no early exit, so the compiler turns it into vector
//! compares and the first match falls out of the block's mask. The result
//! is exactly the first matching position, so a scanner that jumps to it visits the same
//! candidates, in the same order, as one that steps one byte at a time.

/// Bytes tested per block.
const BLOCK: usize = 32;

/// The position of the first byte at or after `from` for which `class` holds, or `None`
/// (also when `from` is past the end).
#[inline]
pub(crate) fn find_from(
    hay: &[u8],
    from: usize,
    class: impl Fn(u8) -> bool + Copy,
) -> Option<usize> {
    let rest = hay.get(from..)?;
    let mut blocks = rest.chunks_exact(BLOCK);
    let mut base = from;
    for block in &mut blocks {
        // One mask byte per input byte, read as two little-endian words: the first set
        // byte is the first match. Written this way the compiler keeps the whole block in
        // vector registers.
        let block: &[u8; BLOCK] = block.try_into().unwrap_or(&[0; BLOCK]);
        let mask = block.map(|b| if class(b) { 0xff } else { 0 });
        let (lo, hi) = mask.split_at(BLOCK / 2);
        let lo = u128::from_le_bytes(lo.try_into().unwrap_or([0; 16]));
        let hi = u128::from_le_bytes(hi.try_into().unwrap_or([0; 16]));
        if lo | hi != 0 {
            let at = if lo != 0 {
                lo.trailing_zeros() / 8
            } else {
                16 + hi.trailing_zeros() / 8
            };
            return Some(base + at as usize);
        }
        base += BLOCK;
    }
    blocks
        .remainder()
        .iter()
        .position(|&b| class(b))
        .map(|p| base + p)
}

/// An ASCII digit.
#[inline]
pub(crate) fn is_digit(b: u8) -> bool {
    b.wrapping_sub(b'0') < 10
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_match_at_or_after_from() {
        let mut hay = vec![b'x'; 200];
        for at in [0usize, 1, 31, 32, 33, 63, 64, 150, 199] {
            hay.fill(b'x');
            hay[at] = b'7';
            for from in 0..=hay.len() + 2 {
                let want = (from <= at).then_some(at);
                assert_eq!(find_from(&hay, from, is_digit), want, "at {at} from {from}");
            }
        }
        assert_eq!(find_from(b"", 0, is_digit), None);
        assert_eq!(find_from(b"a1b2", 2, is_digit), Some(3));
        let all: Vec<u8> = (0..=255).collect();
        for b in 0..=255u8 {
            assert_eq!(is_digit(b), b.is_ascii_digit());
            assert_eq!(find_from(&all, 0, |c| c == b), Some(b as usize));
        }
    }
}
