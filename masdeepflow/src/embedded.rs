//! The kernel objects `build.rs` leaves in OUT_DIR, embedded deflated (they
//! were a twentieth of the static binary, which has a size budget) and
//! inflated once, on first use, into 8-byte-aligned memory (the ELF parser
//! reads its headers in place).
use std::sync::OnceLock;

use anyhow::{Result, anyhow};

static AGENT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/masdeepflow-ebpf.deflate"));
static GATEWAY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/masdeepflow-gateway-ebpf.deflate"));

/// Inflated objects larger than this are refused (a damaged build).
const MAX_OBJECT: usize = 32 << 20;

/// The agent's kernel object (`masdeepflow-ebpf`).
pub fn agent() -> Result<&'static [u8]> {
    static OBJECT: OnceLock<Result<Aligned, String>> = OnceLock::new();
    get(&OBJECT, AGENT)
}

/// The gateway's kernel object.
pub fn gateway() -> Result<&'static [u8]> {
    static OBJECT: OnceLock<Result<Aligned, String>> = OnceLock::new();
    get(&OBJECT, GATEWAY)
}

fn get(cell: &'static OnceLock<Result<Aligned, String>>, deflated: &[u8]) -> Result<&'static [u8]> {
    match cell.get_or_init(|| Aligned::inflate(deflated)) {
        Ok(object) => Ok(object.bytes()),
        Err(e) => Err(anyhow!("the embedded eBPF object does not inflate: {e}")),
    }
}

/// Bytes kept in `u64`s, so that they start 8-byte aligned.
struct Aligned {
    words: Vec<u64>,
    len: usize,
}

impl Aligned {
    fn inflate(deflated: &[u8]) -> Result<Aligned, String> {
        let bytes = miniz_oxide::inflate::decompress_to_vec_with_limit(deflated, MAX_OBJECT).map_err(|e| format!("{e:?}"))?;
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        for (word, chunk) in words.iter_mut().zip(bytes.chunks(8)) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            *word = u64::from_ne_bytes(b);
        }
        Ok(Aligned { words, len: bytes.len() })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` initialised bytes; u8 has no
        // alignment requirement; the slice borrows `self`.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_inflate_to_the_built_objects_aligned() {
        let built: [&[u8]; 2] = [
            include_bytes!(concat!(env!("OUT_DIR"), "/masdeepflow-ebpf")),
            include_bytes!(concat!(env!("OUT_DIR"), "/masdeepflow-gateway-ebpf")),
        ];
        for (object, built) in [agent().unwrap(), gateway().unwrap()].into_iter().zip(built) {
            assert!(object == built, "inflated {} bytes, built {}", object.len(), built.len());
            assert_eq!(object.as_ptr() as usize % 8, 0);
        }
    }

    #[test]
    fn a_damaged_object_is_an_error() {
        assert!(Aligned::inflate(b"not deflate data").is_err());
        let a = Aligned::inflate(&miniz_oxide::deflate::compress_to_vec(b"0123456789", 6)).unwrap();
        assert_eq!(a.bytes(), b"0123456789");
    }
}
