//! The connection phase: the server's greeting, the client's handshake
//! response (or an SSLRequest, after which the connection speaks TLS), and
//! the authentication exchange that follows (auth switch, `caching_sha2`'s
//! "more data" packets) up to the server's OK or ERR.

use super::wire::Reader;

/// Capability flags (`CLIENT_*`), lower 32 bits; MariaDB's extended
/// capabilities are kept in the upper 32 bits of the same `u64`.
pub mod caps {
    /// Set by MySQL servers; MariaDB leaves it clear and then sends its
    /// extended capabilities in the greeting's filler.
    pub const CLIENT_MYSQL: u64 = 1;
    pub const CONNECT_WITH_DB: u64 = 1 << 3;
    pub const COMPRESS: u64 = 1 << 5;
    pub const LOCAL_FILES: u64 = 1 << 7;
    pub const PROTOCOL_41: u64 = 1 << 9;
    pub const SSL: u64 = 1 << 11;
    pub const SECURE_CONNECTION: u64 = 1 << 15;
    pub const MULTI_STATEMENTS: u64 = 1 << 16;
    pub const MULTI_RESULTS: u64 = 1 << 17;
    pub const PS_MULTI_RESULTS: u64 = 1 << 18;
    pub const PLUGIN_AUTH: u64 = 1 << 19;
    pub const CONNECT_ATTRS: u64 = 1 << 20;
    pub const PLUGIN_AUTH_LENENC_CLIENT_DATA: u64 = 1 << 21;
    pub const SESSION_TRACK: u64 = 1 << 23;
    pub const DEPRECATE_EOF: u64 = 1 << 24;
    pub const OPTIONAL_RESULTSET_METADATA: u64 = 1 << 25;
    pub const ZSTD_COMPRESSION: u64 = 1 << 26;
    pub const QUERY_ATTRIBUTES: u64 = 1 << 27;
    /// MariaDB: progress reports (ERR packets with code 0xffff) during long commands.
    pub const MARIADB_PROGRESS: u64 = 1 << 32;
    /// MariaDB: COM_STMT_BULK_EXECUTE.
    pub const MARIADB_STMT_BULK_OPERATIONS: u64 = 1 << 34;
    /// MariaDB: result set metadata may be skipped (a flag byte after the column count).
    pub const MARIADB_CACHE_METADATA: u64 = 1 << 36;
}

/// Largest user or schema name kept, in bytes (MySQL allows 32 and 64
/// characters of up to 4 bytes).
pub const MAX_NAME_LEN: usize = 256;

/// The server's greeting (Protocol::HandshakeV10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    pub server_version: Vec<u8>,
    pub connection_id: u32,
    /// Lower 32 bits: `CLIENT_*`; upper 32: MariaDB extended capabilities.
    pub capabilities: u64,
    pub auth_plugin: Vec<u8>,
}

/// Parses a greeting payload (protocol version 10).
pub fn parse_greeting(p: &[u8]) -> Option<Greeting> {
    let mut r = Reader::new(p);
    if r.u8()? != 10 {
        return None;
    }
    let version = r.nul_str()?;
    if !version.first().is_some_and(u8::is_ascii_digit) || version.len() > 64 || !version.iter().all(|b| b.is_ascii_graphic() || *b == b' ')
    {
        return None;
    }
    let connection_id = r.u32()?;
    r.skip(8 + 1)?; // auth data part 1, filler
    let mut capabilities = u64::from(r.u16()?);
    let mut auth_plugin = Vec::new();
    if r.remaining() > 0 {
        r.skip(1 + 2)?; // charset, status
        capabilities |= u64::from(r.u16()?) << 16;
        let auth_len = r.u8()?;
        r.skip(6)?;
        let mariadb_ext = r.u32()?;
        if capabilities & caps::CLIENT_MYSQL == 0 {
            capabilities |= u64::from(mariadb_ext) << 32;
        }
        if capabilities & caps::SECURE_CONNECTION != 0 {
            r.skip(usize::from(auth_len).saturating_sub(8).max(13))?;
        }
        if capabilities & caps::PLUGIN_AUTH != 0 {
            auth_plugin = r.nul_str().unwrap_or(r.rest()).to_vec();
        }
    }
    auth_plugin.truncate(MAX_NAME_LEN);
    Some(Greeting { server_version: version.to_vec(), connection_id, capabilities, auth_plugin })
}

/// What the client's first packet is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientHello {
    /// An SSLRequest: TLS follows.
    SslRequest { capabilities: u64 },
    /// A handshake response (Protocol::HandshakeResponse41 or 320).
    Response(HandshakeResponse),
}

/// The client's handshake response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeResponse {
    /// Lower 32 bits: `CLIENT_*`; upper 32: MariaDB extended capabilities.
    pub capabilities: u64,
    pub user: Vec<u8>,
    pub database: Option<Vec<u8>>,
    pub auth_plugin: Option<Vec<u8>>,
}

fn name(b: &[u8]) -> Vec<u8> {
    b[..b.len().min(MAX_NAME_LEN)].to_vec()
}

/// Parses the client's first packet (after the greeting). `server_caps` are
/// the greeting's capabilities when it was seen, used to read MariaDB's
/// extended capabilities.
pub fn parse_client_hello(p: &[u8], server_caps: Option<u64>) -> Option<ClientHello> {
    let mut r = Reader::new(p);
    let low = r.u16()?;
    if u64::from(low) & caps::PROTOCOL_41 == 0 {
        // HandshakeResponse320: caps(2) max packet(3) user NUL auth...
        r.skip(3)?;
        if u64::from(low) & caps::SSL != 0 && r.remaining() == 0 {
            return Some(ClientHello::SslRequest { capabilities: u64::from(low) });
        }
        let user = r.nul_str()?;
        return Some(ClientHello::Response(HandshakeResponse {
            capabilities: u64::from(low),
            user: name(user),
            database: None,
            auth_plugin: None,
        }));
    }
    let mut capabilities = u64::from(low) | u64::from(r.u16()?) << 16;
    r.skip(4 + 1)?; // max packet, charset
    let filler = r.bytes(23)?;
    let mariadb = server_caps.map_or(capabilities & caps::CLIENT_MYSQL == 0, |s| s & caps::CLIENT_MYSQL == 0);
    if mariadb && capabilities & caps::CLIENT_MYSQL == 0 {
        capabilities |= u64::from(u32::from_le_bytes([filler[19], filler[20], filler[21], filler[22]])) << 32;
    }
    if r.remaining() == 0 {
        return (capabilities & caps::SSL != 0).then_some(ClientHello::SslRequest { capabilities });
    }
    let user = name(r.nul_str()?);
    if capabilities & caps::PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
        r.lenenc_str()?;
    } else if capabilities & caps::SECURE_CONNECTION != 0 {
        let n = r.u8()?;
        r.skip(usize::from(n))?;
    } else {
        r.nul_str()?;
    }
    let mut database = None;
    if capabilities & caps::CONNECT_WITH_DB != 0 && r.remaining() > 0 {
        database = r.nul_str().map(name).filter(|d| !d.is_empty());
    }
    let mut auth_plugin = None;
    if capabilities & caps::PLUGIN_AUTH != 0 && r.remaining() > 0 {
        auth_plugin = r.nul_str().map(name);
    }
    Some(ClientHello::Response(HandshakeResponse { capabilities, user, database, auth_plugin }))
}

/// Whether a client packet has the shape of a handshake response or
/// SSLRequest (used on connections seen from the middle, e.g. a TLS
/// library's plaintext after the SSLRequest): 32+ bytes, PROTOCOL_41, the
/// first 19 bytes of the 23-byte filler zero (MariaDB uses the last 4 for
/// its own capabilities).
pub(crate) fn looks_like_client_hello(p: &[u8]) -> bool {
    p.len() >= 32 && u32::from_le_bytes([p[0], p[1], p[2], p[3]]) & (caps::PROTOCOL_41 as u32) != 0 && p[9..28].iter().all(|&b| b == 0)
}

/// A server packet during authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthStep {
    /// OK: the command phase begins.
    Ok,
    /// ERR: authentication failed (the server closes the connection).
    Error,
    /// Auth switch request (0xfe) or more data (0x01, e.g. caching_sha2's
    /// fast-auth result or public key): the exchange goes on.
    Continue,
}

pub(crate) fn auth_step(first: Option<u8>) -> AuthStep {
    match first {
        Some(0x00) => AuthStep::Ok,
        Some(0xff) => AuthStep::Error,
        _ => AuthStep::Continue,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_greetings_and_hellos_are_rejected_without_panic() {
        for len in 0..80 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 10) as u8).collect();
            let _ = parse_greeting(&junk);
            let _ = parse_client_hello(&junk, None);
            let _ = parse_client_hello(&junk, Some(0));
        }
        assert_eq!(parse_greeting(b"\x09abc\0"), None);
    }
}
