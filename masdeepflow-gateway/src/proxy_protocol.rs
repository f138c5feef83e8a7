//! The PROXY protocol version 2 header (HAProxy's specification, section
//! 2.2): what a proxy sends a backend first so that it learns the client's
//! address. A 16-byte fixed part, then the addresses: 12 bytes for IPv4,
//! 36 for IPv6. The command is PROXY, the transport STREAM (TCP).
use std::net::{IpAddr, SocketAddr};

/// The 12-byte signature every v2 header starts with.
pub const SIGNATURE: [u8; 12] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A];

/// The header for a connection from `client` to `destination` (the address
/// the client connected to). Addresses of different families are both
/// written as IPv6 (v4-mapped).
pub fn header_v2(client: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut h = Vec::with_capacity(52);
    h.extend_from_slice(&SIGNATURE);
    // Version 2, command PROXY.
    h.push(0x21);
    match (client.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            // AF_INET, STREAM.
            h.push(0x11);
            h.extend_from_slice(&12u16.to_be_bytes());
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
        }
        (s, d) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            // AF_INET6, STREAM.
            h.push(0x21);
            h.extend_from_slice(&36u16.to_be_bytes());
            h.extend_from_slice(&v6(s).octets());
            h.extend_from_slice(&v6(d).octets());
        }
    }
    h.extend_from_slice(&client.port().to_be_bytes());
    h.extend_from_slice(&destination.port().to_be_bytes());
    h
}

/// Reads a v2 PROXY/STREAM header at the start of `bytes`: the source and
/// destination addresses and the header's length. None when `bytes` does
/// not start with a complete header of that kind.
pub fn parse_v2(bytes: &[u8]) -> Option<(SocketAddr, SocketAddr, usize)> {
    if bytes.len() < 16 || bytes[..12] != SIGNATURE || bytes[12] != 0x21 {
        return None;
    }
    let len = u16::from_be_bytes([bytes[14], bytes[15]]) as usize;
    let body = bytes.get(16..16 + len)?;
    let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
    match bytes[13] {
        0x11 if len >= 12 => {
            let s: [u8; 4] = body[0..4].try_into().ok()?;
            let d: [u8; 4] = body[4..8].try_into().ok()?;
            Some((SocketAddr::from((s, port(8))), SocketAddr::from((d, port(10))), 16 + len))
        }
        0x21 if len >= 36 => {
            let s: [u8; 16] = body[0..16].try_into().ok()?;
            let d: [u8; 16] = body[16..32].try_into().ok()?;
            Some((SocketAddr::from((s, port(32))), SocketAddr::from((d, port(34))), 16 + len))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_bytes() {
        let h = header_v2("127.0.0.1:40000".parse().unwrap(), "127.0.0.101:3306".parse().unwrap());
        let want: Vec<u8> = [
            &SIGNATURE[..],
            &[0x21, 0x11, 0x00, 0x0C],
            &[127, 0, 0, 1],
            &[127, 0, 0, 101],
            &40000u16.to_be_bytes(),
            &3306u16.to_be_bytes(),
        ]
        .concat();
        assert_eq!(h, want);
        assert_eq!(h.len(), 28);
        assert_eq!(parse_v2(&h), Some(("127.0.0.1:40000".parse().unwrap(), "127.0.0.101:3306".parse().unwrap(), 28)));
    }

    #[test]
    fn ipv6_and_mixed_headers() {
        let h = header_v2("[fd00::1]:5000".parse().unwrap(), "[fd00::2]:443".parse().unwrap());
        assert_eq!((h.len(), h[13], u16::from_be_bytes([h[14], h[15]])), (52, 0x21, 36));
        assert_eq!(parse_v2(&h), Some(("[fd00::1]:5000".parse().unwrap(), "[fd00::2]:443".parse().unwrap(), 52)));
        let mixed = header_v2("127.0.0.1:1".parse().unwrap(), "[::1]:2".parse().unwrap());
        assert_eq!(parse_v2(&mixed).unwrap().0, "[::ffff:127.0.0.1]:1".parse().unwrap());
    }

    #[test]
    fn parse_refuses_what_is_not_a_whole_header() {
        let h = header_v2("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap());
        for n in 0..h.len() {
            assert_eq!(parse_v2(&h[..n]), None, "{n} bytes");
        }
        assert_eq!(parse_v2(b"GET / HTTP/1.1\r\n\r\n"), None);
        let mut local = h.clone();
        local[12] = 0x20;
        assert_eq!(parse_v2(&local), None);
    }
}
