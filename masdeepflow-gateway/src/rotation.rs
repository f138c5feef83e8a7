//! What each rotation slot of a service holds. The kernel only indexes the
//! rotation (`counter % len` for round robin and weights, a random index,
//! or the client's hash for Maglev): every algorithm is decided here.
use crate::spec::{Algorithm, ServiceSpec};

/// Maglev table sizes (primes); the smallest that is at least 100 times the
/// number of backends is used, as the Maglev paper advises.
pub const MAGLEV_SIZES: [u32; 9] = [251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521];

/// The rotation of `spec` with the backends for which `up` holds: indexes
/// into `spec.backends`, one per slot. Empty when no backend is up.
pub fn rotation(spec: &ServiceSpec, up: &[bool]) -> Vec<u32> {
    let live: Vec<u32> = (0..spec.backends.len() as u32).filter(|&i| up.get(i as usize).copied().unwrap_or(true)).collect();
    if live.is_empty() {
        return Vec::new();
    }
    match spec.algorithm {
        Algorithm::RoundRobin => live,
        Algorithm::Weighted | Algorithm::Random => {
            let weights: Vec<u32> = live.iter().map(|&i| spec.backends[i as usize].weight).collect();
            smooth_weighted(&weights).into_iter().map(|k| live[k as usize]).collect()
        }
        Algorithm::Maglev => {
            // The table size follows the configured backends, not the live
            // ones, so that a backend going down changes only its entries.
            let size = maglev_size(spec.backends.len());
            let names: Vec<String> = live.iter().map(|&i| spec.backends[i as usize].address.to_string()).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            maglev_table(&refs, size).into_iter().map(|k| live[k as usize]).collect()
        }
    }
}

/// Slots that `weights` expand to: their sum once divided by their greatest
/// common divisor.
pub fn weight_slots(weights: &[u32]) -> u32 {
    let g = weights.iter().fold(0, |g, &w| gcd(g, w)).max(1);
    weights.iter().map(|w| w / g).sum()
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Smooth weighted round robin (as nginx spreads weights): each backend
/// appears `weight / gcd` times per cycle, interleaved rather than in runs,
/// so that any window of the cycle is close to the weights.
pub fn smooth_weighted(weights: &[u32]) -> Vec<u32> {
    let g = weights.iter().fold(0, |g, &w| gcd(g, w)).max(1);
    let w: Vec<i64> = weights.iter().map(|&x| (x / g) as i64).collect();
    let total: i64 = w.iter().sum();
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, wi) in current.iter_mut().zip(&w) {
            *c += wi;
        }
        // Highest current weight; the first on ties, so the order is stable.
        let best = (0..w.len()).fold(0, |b, i| if current[i] > current[b] { i } else { b });
        current[best] -= total;
        out.push(best as u32);
    }
    out
}

/// The Maglev table size for `backends` configured backends.
pub fn maglev_size(backends: usize) -> u32 {
    let want = (backends as u64).saturating_mul(100);
    MAGLEV_SIZES.iter().copied().find(|&m| m as u64 >= want).unwrap_or(MAGLEV_SIZES[MAGLEV_SIZES.len() - 1])
}

/// A Maglev lookup table of `size` (a prime) entries over `names`, each
/// entry an index into `names` (Eisenbud et al., NSDI 2016, section 3.4).
/// A backend's preference list depends only on its own name, so removing
/// one of N backends moves about 1/N of the entries and keeps the rest.
pub fn maglev_table(names: &[&str], size: u32) -> Vec<u32> {
    if names.is_empty() || size == 0 {
        return Vec::new();
    }
    let m = size as u64;
    let prefs: Vec<(u64, u64)> = names
        .iter()
        .map(|n| {
            let offset = hash64(n.as_bytes(), 0x6d61_676c_6576_0001) % m;
            let skip = hash64(n.as_bytes(), 0x6d61_676c_6576_0002) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; names.len()];
    let mut entry = vec![u32::MAX; size as usize];
    let mut filled = 0u64;
    'fill: loop {
        for (i, &(offset, skip)) in prefs.iter().enumerate() {
            let mut c = (offset + next[i] * skip) % m;
            while entry[c as usize] != u32::MAX {
                next[i] += 1;
                c = (offset + next[i] * skip) % m;
            }
            entry[c as usize] = i as u32;
            next[i] += 1;
            filled += 1;
            if filled == m {
                break 'fill;
            }
        }
    }
    entry
}

/// FNV-1a over `seed` and `bytes`, then mixed: a stable 64-bit hash (the
/// same on every host and every run, so gateways agree).
pub fn hash64(bytes: &[u8], seed: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.to_le_bytes().iter().chain(bytes) {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    masdeepflow_common::gateway::mix64(h)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::spec::{BackendSpec, Protocol};

    fn service(algorithm: Algorithm, weights: &[u32]) -> ServiceSpec {
        let backends = weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| BackendSpec { address: format!("127.0.0.1:{}", 18000 + i).parse().unwrap(), weight })
            .collect();
        let mut s = ServiceSpec::new("s", "127.0.0.100:80".parse().unwrap(), Protocol::Tcp, backends);
        s.algorithm = algorithm;
        s
    }

    fn counts(slots: &[u32]) -> HashMap<u32, usize> {
        let mut c = HashMap::new();
        for s in slots {
            *c.entry(*s).or_default() += 1;
        }
        c
    }

    #[test]
    fn round_robin_is_the_live_backends() {
        let s = service(Algorithm::RoundRobin, &[1, 1, 1]);
        assert_eq!(rotation(&s, &[true, true, true]), vec![0, 1, 2]);
        assert_eq!(rotation(&s, &[true, false, true]), vec![0, 2]);
        assert_eq!(rotation(&s, &[false, false, false]), Vec::<u32>::new());
    }

    #[test]
    fn weights_are_expanded_in_proportion_and_interleaved() {
        assert_eq!(smooth_weighted(&[1, 3]), vec![1, 0, 1, 1]);
        assert_eq!(smooth_weighted(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_weighted(&[2, 4]), vec![1, 0, 1]);
        let s = service(Algorithm::Weighted, &[1, 3, 6]);
        let r = rotation(&s, &[true, true, true]);
        assert_eq!(counts(&r), HashMap::from([(0, 1), (1, 3), (2, 6)]));
        let r = rotation(&s, &[true, false, true]);
        assert_eq!(counts(&r), HashMap::from([(0, 1), (2, 6)]));
        assert_eq!(weight_slots(&[1000, 999]), 1999);
        assert_eq!(weight_slots(&[10, 20, 30]), 6);
    }

    #[test]
    fn maglev_table_is_balanced_and_stable() {
        let names: Vec<String> = (0..5).map(|i| format!("127.0.0.1:{}", 18000 + i)).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let size = maglev_size(refs.len());
        assert_eq!(size, 509);
        let table = maglev_table(&refs, size);
        assert_eq!(table.len(), size as usize);
        for (_, n) in counts(&table) {
            // Maglev's balance: every backend within one entry of M/N.
            assert!((101..=102).contains(&n), "{n}");
        }
        assert_eq!(maglev_table(&refs, size), table, "deterministic");
        // Removing backend 2 moves only its own entries.
        let without: Vec<&str> = refs.iter().copied().filter(|n| *n != refs[2]).collect();
        let t2 = maglev_table(&without, size);
        let mut moved = 0;
        for (a, b) in table.iter().zip(&t2) {
            let before = refs[*a as usize];
            let after = without[*b as usize];
            if before != refs[2] && before != after {
                moved += 1;
            }
        }
        // The paper's Figure 11: a few percent at most beyond the removed share.
        assert!(moved * 100 / size as usize <= 3, "moved {moved} of {size}");
    }

    #[test]
    fn maglev_rotation_keeps_table_size_when_backends_go_down() {
        let s = service(Algorithm::Maglev, &[1, 1, 1, 1]);
        let all = rotation(&s, &[true; 4]);
        let three = rotation(&s, &[true, true, false, true]);
        assert_eq!(all.len(), three.len());
        assert!(!three.contains(&2));
        let kept = all.iter().zip(&three).filter(|(a, b)| a == b).count();
        assert!(kept >= all.iter().filter(|&&a| a != 2).count() * 97 / 100);
    }

    #[test]
    fn hashes_are_stable() {
        // Fixed values: gateways on other hosts and later versions must agree.
        assert_eq!(hash64(b"127.0.0.1:18081", 0), hash64(b"127.0.0.1:18081", 0));
        assert_ne!(hash64(b"127.0.0.1:18081", 0), hash64(b"127.0.0.1:18082", 0));
        assert_eq!(masdeepflow_common::gateway::maglev_index(42, 7, 0), 0);
        assert!(masdeepflow_common::gateway::maglev_index(42, 7, 509) < 509);
    }
}
