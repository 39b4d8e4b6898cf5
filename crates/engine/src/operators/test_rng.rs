//! A tiny deterministic generator for the operators' randomized tests.

pub(crate) struct XorShift(pub(crate) u64);

impl XorShift {
    /// A seeded generator (any seed; 0 is moved off the fixed point).
    pub(crate) fn new(seed: u64) -> Self {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A number in `0..n`.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}
