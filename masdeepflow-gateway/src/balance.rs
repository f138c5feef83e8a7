//! A proxy's backend choice, per connection, over the rotation built by
//! [`crate::rotation::rotation`] (the backends in rotation, weights already
//! expanded, or a Maglev table). A backend that refused this connection is
//! `tried` and skipped, so the next attempt goes to the next backend.
use crate::spec::Algorithm;

/// What the choice needs to know about the backends, by their index in the
/// proxy's configuration.
pub struct Backends<'a> {
    /// The rotation: indexes of backends in rotation.
    pub rotation: &'a [u32],
    pub weights: &'a [u32],
    /// Open connections per backend (least_connections).
    pub active: &'a [u64],
    /// Backends this connection already tried.
    pub tried: &'a [bool],
}

/// The backend (index) to connect to, or None when every backend in
/// rotation was tried. `counter` is the proxy's connection counter (round
/// robin, and the start of the tie-break among equally loaded backends),
/// `random` a random number, `client_hash` the client address's hash
/// (Maglev).
pub fn pick(algorithm: Algorithm, b: &Backends, counter: u64, random: u64, client_hash: u64) -> Option<u32> {
    let len = b.rotation.len() as u64;
    if len == 0 {
        return None;
    }
    let untried = |i: u32| !b.tried.get(i as usize).copied().unwrap_or(false);
    let from = |start: u64| (0..len).map(move |k| b.rotation[((start + k) % len) as usize]).find(|&i| untried(i));
    match algorithm {
        Algorithm::RoundRobin | Algorithm::Weighted => from(counter % len),
        Algorithm::Random => from(random % len),
        Algorithm::Maglev => from(client_hash % len),
        Algorithm::LeastConnections => {
            // Fewest connections per unit of weight (compared by cross
            // multiplication); among equals, the first from `counter` on.
            let start = counter % len;
            let mut best: Option<u32> = None;
            for k in 0..len {
                let i = b.rotation[((start + k) % len) as usize];
                if !untried(i) {
                    continue;
                }
                let load = |j: u32| {
                    (b.active.get(j as usize).copied().unwrap_or(0) as u128, b.weights.get(j as usize).copied().unwrap_or(1).max(1) as u128)
                };
                best = match best {
                    None => Some(i),
                    Some(c) => {
                        let ((ai, wi), (ac, wc)) = (load(i), load(c));
                        if ai * wc < ac * wi { Some(i) } else { Some(c) }
                    }
                };
            }
            best
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b<'a>(rotation: &'a [u32], weights: &'a [u32], active: &'a [u64], tried: &'a [bool]) -> Backends<'a> {
        Backends { rotation, weights, active, tried }
    }

    #[test]
    fn round_robin_follows_the_counter_and_skips_tried_backends() {
        let none = [false; 3];
        let r = [0, 1, 2];
        let picks: Vec<u32> = (0..6).map(|c| pick(Algorithm::RoundRobin, &b(&r, &[1; 3], &[0; 3], &none), c, 0, 0).unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
        let tried = [false, true, false];
        assert_eq!(pick(Algorithm::RoundRobin, &b(&r, &[1; 3], &[0; 3], &tried), 1, 0, 0), Some(2));
        assert_eq!(pick(Algorithm::RoundRobin, &b(&r, &[1; 3], &[0; 3], &[true; 3]), 1, 0, 0), None);
        assert_eq!(pick(Algorithm::RoundRobin, &b(&[], &[], &[], &[]), 1, 0, 0), None);
    }

    #[test]
    fn maglev_and_random_index_the_table() {
        let table = [2, 0, 1, 1, 0];
        assert_eq!(pick(Algorithm::Maglev, &b(&table, &[1; 3], &[0; 3], &[false; 3]), 9, 9, 7), Some(1));
        assert_eq!(pick(Algorithm::Maglev, &b(&table, &[1; 3], &[0; 3], &[false, true, false]), 9, 9, 7), Some(0));
        assert_eq!(pick(Algorithm::Random, &b(&table, &[1; 3], &[0; 3], &[false; 3]), 0, 5, 0), Some(2));
    }

    #[test]
    fn least_connections_takes_the_least_loaded_per_weight() {
        let r = [0, 1, 2];
        assert_eq!(pick(Algorithm::LeastConnections, &b(&r, &[1; 3], &[5, 2, 3], &[false; 3]), 0, 0, 0), Some(1));
        // Weight 3 with 6 connections (2 per unit) beats weight 1 with 3.
        assert_eq!(pick(Algorithm::LeastConnections, &b(&r, &[1, 3, 1], &[3, 6, 4], &[false; 3]), 0, 0, 0), Some(1));
        // Ties go round robin from the counter.
        let ties: Vec<u32> =
            (0..3).map(|c| pick(Algorithm::LeastConnections, &b(&r, &[1; 3], &[1, 1, 1], &[false; 3]), c, 0, 0).unwrap()).collect();
        assert_eq!(ties, vec![0, 1, 2]);
        // A backend that refused is not tried again.
        assert_eq!(pick(Algorithm::LeastConnections, &b(&r, &[1; 3], &[5, 2, 3], &[false, true, false]), 0, 0, 0), Some(2));
        // Only backends in rotation count.
        assert_eq!(pick(Algorithm::LeastConnections, &b(&[0, 2], &[1; 3], &[5, 0, 3], &[false; 3]), 0, 0, 0), Some(2));
    }

    #[test]
    fn least_connections_spreads_a_burst_evenly() {
        // 1,000 connections opened one after the other, none closing: each
        // of 4 backends gets 250.
        let r = [0, 1, 2, 3];
        let mut active = [0u64; 4];
        for c in 0..1000 {
            let i = pick(Algorithm::LeastConnections, &b(&r, &[1; 4], &active, &[false; 4]), c, 0, 0).unwrap();
            active[i as usize] += 1;
        }
        assert_eq!(active, [250; 4]);
    }
}
