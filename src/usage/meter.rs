//! The only accounting on the forwarding path: plain integer adds on a per-connection struct the
//! engine already owns (no atomics, no locks, no channel per packet). Once a second the engine
//! calls [`ByteMeter::take`] and sends the totals in a `UsageEvent::Sample`.

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByteMeter {
    bytes_in: u64,
    bytes_out: u64,
}

impl ByteMeter {
    /// A media packet of `len` bytes arrived from this classroom.
    #[inline]
    pub fn add_in(&mut self, len: usize) {
        self.bytes_in = self.bytes_in.wrapping_add(len as u64);
    }

    /// A media packet of `len` bytes was sent to this classroom.
    #[inline]
    pub fn add_out(&mut self, len: usize) {
        self.bytes_out = self.bytes_out.wrapping_add(len as u64);
    }

    /// `(bytes_in, bytes_out)` since the previous call; resets the meter.
    #[inline]
    pub fn take(&mut self) -> (u64, u64) {
        let out = (self.bytes_in, self.bytes_out);
        *self = ByteMeter::default();
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn take_returns_deltas() {
        let mut m = super::ByteMeter::default();
        m.add_in(100);
        m.add_out(1200);
        m.add_out(800);
        assert_eq!(m.take(), (100, 2000));
        assert_eq!(m.take(), (0, 0));
    }
}
