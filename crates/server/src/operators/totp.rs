//! Time-based one-time passwords (RFC 6238 over RFC 4226's HOTP): HMAC-SHA-1, 30-second steps,
//! six digits — what authenticator apps use. A code is accepted one step either side of now,
//! and each step only once per user (the caller keeps the last step used).

use ring::hmac;

/// Seconds per step.
pub const STEP_SECONDS: i64 = 30;
/// Digits per code.
pub const DIGITS: u32 = 6;

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32 without padding, as authenticator apps take secrets.
pub fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(BASE32[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(BASE32[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// Decodes base32 (case-insensitive; spaces and padding ignored); None on any other character.
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| !matches!(c, b' ' | b'=')) {
        let c = c.to_ascii_uppercase();
        let v = BASE32.iter().position(|&x| x == c)?;
        buffer = (buffer << 5) | u32::try_from(v).ok()?;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(((buffer >> bits) & 0xff) as u8);
        }
    }
    Some(out)
}

/// HOTP value of `counter` with `digits` digits (RFC 4226 §5.3).
pub fn hotp(key: &[u8], counter: u64, digits: u32) -> u32 {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    let tag = hmac::sign(&key, &counter.to_be_bytes());
    let h = tag.as_ref();
    let offset = usize::from(h[h.len() - 1] & 0x0f);
    let code = u32::from_be_bytes([
        h[offset] & 0x7f,
        h[offset + 1],
        h[offset + 2],
        h[offset + 3],
    ]);
    code % 10u32.pow(digits)
}

/// The step that `unix_ms` falls in.
pub fn step_at(unix_ms: i64) -> u64 {
    u64::try_from(unix_ms.div_euclid(1000 * STEP_SECONDS)).unwrap_or(0)
}

/// The code for `unix_ms`, as the six digits an app shows.
pub fn code_at(key: &[u8], unix_ms: i64) -> String {
    format!("{:06}", hotp(key, step_at(unix_ms), DIGITS))
}

/// The step whose code `code` is, within one step of `unix_ms` and later than `last_used`.
pub fn check(key: &[u8], code: &str, unix_ms: i64, last_used: Option<u64>) -> Option<u64> {
    let code = code.trim();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let wanted: u32 = code.parse().ok()?;
    let now = step_at(unix_ms);
    let mut found = None;
    for step in [now.saturating_sub(1), now, now + 1] {
        // Every candidate is computed, so the time taken says nothing about which matched.
        if hotp(key, step, DIGITS) == wanted && found.is_none() {
            found = Some(step);
        }
    }
    found.filter(|s| last_used.is_none_or(|l| *s > l))
}

/// The `otpauth://` URI an authenticator app reads (usually from a QR code).
pub fn otpauth_uri(issuer: &str, account: &str, secret_base32: &str) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    format!(
        "otpauth://totp/{}:{}?secret={secret_base32}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        enc(issuer),
        enc(account),
        enc(issuer)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_KEY: &[u8] = b"12345678901234567890";

    #[test]
    fn rfc_6238_sha1_vectors() {
        // Appendix B, eight digits.
        for (t, expected) in [
            (59, 94_287_082),
            (1_111_111_109, 7_081_804),
            (1_111_111_111, 14_050_471),
            (1_234_567_890, 89_005_924),
            (2_000_000_000, 69_279_037),
            (20_000_000_000, 65_353_130),
        ] {
            assert_eq!(hotp(RFC_KEY, step_at(t * 1000), 8), expected, "T = {t}");
        }
        assert_eq!(code_at(RFC_KEY, 59_000), "287082");
    }

    #[test]
    fn rfc_4226_hotp_vectors() {
        let expected = [755_224, 287_082, 359_152, 969_429, 338_314];
        for (counter, e) in expected.iter().enumerate() {
            assert_eq!(hotp(RFC_KEY, counter as u64, 6), *e);
        }
    }

    #[test]
    fn a_window_of_one_step_and_no_replay() {
        let now = 1_700_000_000_000;
        let code = code_at(RFC_KEY, now);
        let step = check(RFC_KEY, &code, now, None).unwrap();
        assert_eq!(check(RFC_KEY, &code, now + 30_000, None), Some(step));
        assert_eq!(check(RFC_KEY, &code, now - 30_000, None), Some(step));
        assert_eq!(check(RFC_KEY, &code, now + 90_000, None), None);
        assert_eq!(check(RFC_KEY, &code, now, Some(step)), None, "replayed");
        assert_eq!(check(RFC_KEY, "12345", now, None), None);
        assert_eq!(check(RFC_KEY, "abcdef", now, None), None);
    }

    #[test]
    fn base32_round_trips() {
        assert_eq!(base32_encode(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32_decode("MZXW6YTBOI======").unwrap(), b"foobar");
        assert_eq!(base32_decode("mzxw 6ytb oi").unwrap(), b"foobar");
        assert!(base32_decode("MZ1W").is_none());
        let key = [7u8; 20];
        assert_eq!(base32_decode(&base32_encode(&key)).unwrap(), key);
        let uri = otpauth_uri("fleetmon", "ada@x", "ABC");
        assert_eq!(
            uri,
            "otpauth://totp/fleetmon:ada%40x?secret=ABC&issuer=fleetmon&algorithm=SHA1&digits=6&period=30"
        );
    }
}
