//! Trace and span ids: the hex text of the `spans` table parsed into numbers (the compact
//! keys of the span index), and back.

/// Value of each byte as a hex digit; 0xff for bytes that are not one.
const HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Parses at most 16 hex digits; `None` when a byte is not one.
fn hex64(bytes: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    let mut bad = 0u8;
    for &b in bytes {
        let d = HEX[b as usize];
        bad |= d;
        v = (v << 4) | u64::from(d & 0x0f);
    }
    (bad & 0xf0 == 0).then_some(v)
}

/// A trace id (up to 32 hex digits); 0 when it is not hex.
pub fn parse_u128(hex: &str) -> u128 {
    let b = hex.as_bytes();
    if b.len() > 32 {
        return 0;
    }
    let split = b.len().saturating_sub(16);
    match (hex64(&b[..split]), hex64(&b[split..])) {
        (Some(hi), Some(lo)) => (u128::from(hi) << 64) | u128::from(lo),
        _ => 0,
    }
}

/// A span id (up to 16 hex digits); 0 when it is not hex.
pub fn parse_u64(hex: &str) -> u64 {
    if hex.len() > 16 {
        return 0;
    }
    hex64(hex.as_bytes()).unwrap_or(0)
}

/// A trace id as the `spans` table writes it: 32 lowercase hex digits.
pub fn trace_hex(id: u128) -> String {
    format!("{id:032x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_bad_text_is_zero() {
        let t = "0af7651916cd43dd8448eb211c80319c";
        assert_eq!(trace_hex(parse_u128(t)), t);
        assert_eq!(parse_u64("00f067aa0ba902b7"), 0x00f0_67aa_0ba9_02b7);
        assert_eq!(parse_u64("xyz"), 0);
        assert_eq!(parse_u128(&"a".repeat(33)), 0);
    }
}
