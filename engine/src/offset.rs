//! Offset kinds as distinct types, so mixing them does not compile.
//!
//! - [`Offset`]: a record's absolute position in a partition (Kafka's `long offset`).
//! - [`RelativeOffset`]: an offset minus its segment's base offset, as stored in `.index`
//!   and `.timeindex` entries (4 bytes on disk).
//! - [`FilePosition`]: a byte position inside one segment file (Kafka limits segments to
//!   `Int.MAX` bytes, so 4 bytes suffice).
//!
//! Example: segment `00000000000000001000.log` holds offsets 1000..; offset 1234 is
//! `RelativeOffset(234)` in it, and its batch may start at `FilePosition(81920)`.

use std::fmt;

/// Absolute offset of a record in a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset(pub i64);

/// Offset relative to a segment's base offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct RelativeOffset(pub u32);

/// Byte position inside a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct FilePosition(pub u32);

impl Offset {
    /// The offset `delta` records after this one.
    pub fn plus(self, delta: i64) -> Offset {
        Offset(self.0 + delta)
    }

    /// This offset relative to `base`, if it fits in a [`RelativeOffset`].
    pub fn relative_to(self, base: Offset) -> Option<RelativeOffset> {
        let delta = self.0.checked_sub(base.0)?;
        u32::try_from(delta).ok().map(RelativeOffset)
    }
}

impl RelativeOffset {
    /// The absolute offset in a segment based at `base`.
    pub fn absolute(self, base: Offset) -> Offset {
        Offset(base.0 + i64::from(self.0))
    }
}

impl FilePosition {
    /// As a file offset for positioned I/O.
    pub fn as_u64(self) -> u64 {
        u64::from(self.0)
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for FilePosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_offsets_round_trip_and_reject_overflow() {
        let base = Offset(1000);
        assert_eq!(Offset(1234).relative_to(base), Some(RelativeOffset(234)));
        assert_eq!(RelativeOffset(234).absolute(base), Offset(1234));
        assert_eq!(Offset(999).relative_to(base), None);
        assert_eq!(Offset(1000 + (1i64 << 32)).relative_to(base), None);
    }
}
