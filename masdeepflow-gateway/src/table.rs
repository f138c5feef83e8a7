//! The service table as the kernel holds it, and the plan that takes it
//! from one set of services (and backend health) to the next.
//!
//! A plan never edits what a running program may be reading: a changed
//! rotation goes to a free range of slots, then the service's value is
//! replaced in one map update that points at it, and the old range is
//! reused only after [`GRACE_MS`] (BPF programs run for microseconds).
//! Apply a plan in field order: `zero_*`, `slot_writes`, `puts`, `deletes`.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
};

use masdeepflow_common::gateway::{
    ALG_MAGLEV, ALG_RANDOM, ALG_ROUND_ROBIN, BackendSlot, FAMILY_V4, FAMILY_V6, KEY_CGROUP, KEY_NETNS, KEY_PROCESS, MAX_BACKENDS,
    MAX_SERVICES, MAX_SLOTS, ServiceKey, ServiceValue,
};

use crate::{
    rotation::{hash64, rotation},
    spec::{Algorithm, HashKey, Protocol, ServiceSpec},
};

/// Time a replaced rotation's slots stay untouched.
pub const GRACE_MS: u64 = 1000;

/// One service to install, with its backends' health and its scope as
/// resolved on this host (cgroup id and level, or none).
#[derive(Clone, Debug)]
pub struct Desired<'a> {
    pub spec: &'a ServiceSpec,
    /// Per backend of `spec`: in rotation or not. Missing entries are up.
    pub up: Vec<bool>,
    pub scope: Option<(u64, u32)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Added { name: String, vip: SocketAddr, protocol: Protocol, backends: Vec<SocketAddr> },
    Updated { name: String, vip: SocketAddr, protocol: Protocol, added: Vec<SocketAddr>, removed: Vec<SocketAddr>, in_rotation: usize },
    Removed { name: String, vip: SocketAddr, protocol: Protocol, backends: Vec<SocketAddr> },
}

/// What to write to the kernel maps, in field order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Ids new in this plan: zero their per-CPU counters first.
    pub zero_services: Vec<u32>,
    pub zero_backends: Vec<u32>,
    pub slot_writes: Vec<(u32, BackendSlot)>,
    pub puts: Vec<(ServiceKey, ServiceValue)>,
    pub deletes: Vec<ServiceKey>,
    pub changes: Vec<Change>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.slot_writes.is_empty() && self.puts.is_empty() && self.deletes.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("the gateway's {what} table is full ({limit})")]
    Full { what: &'static str, limit: u32 },
}

#[derive(Clone, Debug)]
struct Installed {
    name: String,
    vip: SocketAddr,
    protocol: Protocol,
    value: ServiceValue,
    /// Backends of the service and their ids, in configuration order.
    backends: Vec<(SocketAddr, u32)>,
    slots: Vec<BackendSlot>,
}

/// An installed backend, for stats and drains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendEntry {
    pub address: SocketAddr,
    pub backend_id: u32,
}

/// An installed service, for stats.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceEntry {
    pub name: String,
    pub vip: SocketAddr,
    pub protocol: Protocol,
    pub service_id: u32,
    pub slots: u32,
    pub backends: Vec<BackendEntry>,
}

#[derive(Clone, Debug)]
pub struct Table {
    installed: BTreeMap<ServiceKey, Installed>,
    service_ids: IdPool,
    backend_ids: IdPool,
    slots: Slots,
}

impl Default for Table {
    fn default() -> Self {
        Table::with_limits(MAX_SERVICES, MAX_BACKENDS, MAX_SLOTS)
    }
}

impl Table {
    pub fn with_limits(services: u32, backends: u32, slots: u32) -> Table {
        Table {
            installed: BTreeMap::new(),
            service_ids: IdPool::new(services),
            backend_ids: IdPool::new(backends),
            slots: Slots::new(slots),
        }
    }

    /// Installed services, in key order.
    pub fn services(&self) -> Vec<ServiceEntry> {
        self.installed
            .values()
            .map(|i| ServiceEntry {
                name: i.name.clone(),
                vip: i.vip,
                protocol: i.protocol,
                service_id: i.value.service_id,
                slots: i.value.slot_count,
                backends: i.backends.iter().map(|&(address, backend_id)| BackendEntry { address, backend_id }).collect(),
            })
            .collect()
    }

    /// Slots in use (live and waiting for their grace to end).
    pub fn slots_in_use(&self) -> u32 {
        self.slots.in_use()
    }

    /// The plan from the installed services to `desired`, committed to this
    /// table when it fits (else the table is unchanged).
    pub fn plan(&mut self, desired: &[Desired], now_ms: u64) -> Result<Plan, TableError> {
        let mut next = self.clone();
        let plan = next.plan_into(desired, now_ms)?;
        *self = next;
        Ok(plan)
    }

    fn plan_into(&mut self, desired: &[Desired], now_ms: u64) -> Result<Plan, TableError> {
        self.slots.reclaim(now_ms);
        self.service_ids.release_pending();
        self.backend_ids.release_pending();
        let mut plan = Plan::default();
        let mut wanted: BTreeSet<ServiceKey> = BTreeSet::new();
        for d in desired {
            let key = service_key(d.spec.vip, d.spec.protocol);
            wanted.insert(key);
            let old = self.installed.remove(&key);
            // Backend ids: kept for backends that stay.
            let mut backends = Vec::with_capacity(d.spec.backends.len());
            for b in &d.spec.backends {
                let kept = old.as_ref().and_then(|o| o.backends.iter().find(|(a, _)| *a == b.address)).map(|&(_, id)| id);
                let id = match kept {
                    Some(id) => id,
                    None => {
                        let id = self.backend_ids.take().ok_or(TableError::Full { what: "backend", limit: self.backend_ids.limit })?;
                        plan.zero_backends.push(id);
                        id
                    }
                };
                backends.push((b.address, id));
            }
            if let Some(o) = &old {
                for (addr, id) in &o.backends {
                    if !backends.iter().any(|(a, _)| a == addr) {
                        self.backend_ids.give_back(*id);
                    }
                }
            }
            let slots: Vec<BackendSlot> = rotation(d.spec, &d.up).into_iter().map(|i| slot(backends[i as usize])).collect();
            let service_id = match &old {
                Some(o) => o.value.service_id,
                None => {
                    let id = self.service_ids.take().ok_or(TableError::Full { what: "service", limit: self.service_ids.limit })?;
                    plan.zero_services.push(id);
                    id
                }
            };
            let (slot_base, generation) = match &old {
                Some(o) if o.slots == slots => (o.value.slot_base, o.value.generation),
                _ => {
                    if let Some(o) = &old {
                        self.slots.retire(o.value.slot_base, o.value.slot_count, now_ms);
                    }
                    let base = self.slots.take(slots.len() as u32).ok_or(TableError::Full { what: "slot", limit: self.slots.limit })?;
                    plan.slot_writes.extend(slots.iter().enumerate().map(|(i, s)| (base + i as u32, *s)));
                    (base, old.as_ref().map_or(1, |o| o.value.generation.wrapping_add(1)))
                }
            };
            let (scope_cgroup_id, scope_level) = d.scope.unwrap_or((0, 0));
            let value = ServiceValue {
                service_id,
                slot_base,
                slot_count: slots.len() as u32,
                algorithm: match d.spec.algorithm {
                    Algorithm::RoundRobin | Algorithm::Weighted => ALG_ROUND_ROBIN,
                    Algorithm::Random => ALG_RANDOM,
                    Algorithm::Maglev => ALG_MAGLEV,
                },
                hash_key: match d.spec.hash_key {
                    HashKey::Cgroup => KEY_CGROUP,
                    HashKey::Process => KEY_PROCESS,
                    HashKey::Netns => KEY_NETNS,
                },
                generation,
                scope_cgroup_id,
                scope_level,
                _pad: 0,
                hash_seed: hash64(format!("{}/{}", d.spec.vip, d.spec.protocol.name()).as_bytes(), 0),
            };
            let addrs = |v: &[(SocketAddr, u32)]| v.iter().map(|(a, _)| *a).collect::<Vec<_>>();
            match &old {
                None => plan.changes.push(Change::Added {
                    name: d.spec.name.clone(),
                    vip: d.spec.vip,
                    protocol: d.spec.protocol,
                    backends: addrs(&backends),
                }),
                Some(o) if o.value != value || o.name != d.spec.name || addrs(&o.backends) != addrs(&backends) => {
                    let (new, before) = (addrs(&backends), addrs(&o.backends));
                    plan.changes.push(Change::Updated {
                        name: d.spec.name.clone(),
                        vip: d.spec.vip,
                        protocol: d.spec.protocol,
                        added: new.iter().filter(|a| !before.contains(a)).copied().collect(),
                        removed: before.iter().filter(|a| !new.contains(a)).copied().collect(),
                        in_rotation: d.up.iter().filter(|u| **u).count() + d.spec.backends.len().saturating_sub(d.up.len()),
                    });
                }
                Some(_) => {}
            }
            if old.as_ref().is_none_or(|o| o.value != value) {
                plan.puts.push((key, value));
            }
            self.installed
                .insert(key, Installed { name: d.spec.name.clone(), vip: d.spec.vip, protocol: d.spec.protocol, value, backends, slots });
        }
        let gone: Vec<ServiceKey> = self.installed.keys().filter(|k| !wanted.contains(k)).copied().collect();
        for key in gone {
            let o = self.installed.remove(&key).expect("listed");
            self.slots.retire(o.value.slot_base, o.value.slot_count, now_ms);
            self.service_ids.give_back(o.value.service_id);
            for (_, id) in &o.backends {
                self.backend_ids.give_back(*id);
            }
            plan.deletes.push(key);
            plan.changes.push(Change::Removed {
                name: o.name,
                vip: o.vip,
                protocol: o.protocol,
                backends: o.backends.iter().map(|(a, _)| *a).collect(),
            });
        }
        Ok(plan)
    }
}

/// The kernel key of a VIP.
pub fn service_key(vip: SocketAddr, protocol: Protocol) -> ServiceKey {
    let (addr, family) = words(vip.ip());
    ServiceKey { addr, port: vip.port(), proto: protocol.number(), family }
}

/// An address as the kernel's four network-order words, and its family.
pub fn words(ip: IpAddr) -> ([u32; 4], u8) {
    match ip {
        IpAddr::V4(v4) => ([u32::from_ne_bytes(v4.octets()), 0, 0, 0], FAMILY_V4),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            ([w(0), w(4), w(8), w(12)], FAMILY_V6)
        }
    }
}

/// The inverse of [`words`].
pub fn ip_of(addr: [u32; 4], family: u8) -> IpAddr {
    if family == FAMILY_V4 {
        IpAddr::from(addr[0].to_ne_bytes())
    } else {
        let mut o = [0u8; 16];
        for (i, w) in addr.iter().enumerate() {
            o[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        IpAddr::from(o)
    }
}

fn slot((address, backend_id): (SocketAddr, u32)) -> BackendSlot {
    let (addr, family) = words(address.ip());
    BackendSlot { addr, port: address.port(), family, _pad: 0, backend_id }
}

/// Small integer ids; a freed id is reused only from the next plan on.
#[derive(Clone, Debug)]
struct IdPool {
    limit: u32,
    next: u32,
    free: Vec<u32>,
    pending: Vec<u32>,
}

impl IdPool {
    fn new(limit: u32) -> IdPool {
        IdPool { limit, next: 0, free: Vec::new(), pending: Vec::new() }
    }

    fn take(&mut self) -> Option<u32> {
        if let Some(id) = self.free.pop() {
            return Some(id);
        }
        (self.next < self.limit).then(|| {
            self.next += 1;
            self.next - 1
        })
    }

    fn give_back(&mut self, id: u32) {
        self.pending.push(id);
    }

    fn release_pending(&mut self) {
        self.free.append(&mut self.pending);
    }
}

/// Ranges of the slot array: free, and retired (waiting for the grace).
#[derive(Clone, Debug)]
struct Slots {
    limit: u32,
    /// Free ranges, by start: start -> length.
    free: BTreeMap<u32, u32>,
    retired: Vec<(u32, u32, u64)>,
}

impl Slots {
    fn new(limit: u32) -> Slots {
        Slots { limit, free: BTreeMap::from([(0, limit)]), retired: Vec::new() }
    }

    fn in_use(&self) -> u32 {
        self.limit - self.free.values().sum::<u32>()
    }

    /// First fit; an empty rotation takes nothing.
    fn take(&mut self, n: u32) -> Option<u32> {
        if n == 0 {
            return Some(0);
        }
        let (&start, &len) = self.free.iter().find(|&(_, &len)| len >= n)?;
        self.free.remove(&start);
        if len > n {
            self.free.insert(start + n, len - n);
        }
        Some(start)
    }

    fn retire(&mut self, start: u32, n: u32, now_ms: u64) {
        if n > 0 {
            self.retired.push((start, n, now_ms));
        }
    }

    fn reclaim(&mut self, now_ms: u64) {
        let (done, wait): (Vec<_>, Vec<_>) = self.retired.drain(..).partition(|r| now_ms.saturating_sub(r.2) >= GRACE_MS);
        self.retired = wait;
        for (start, n, _) in done {
            self.give(start, n);
        }
    }

    /// Frees a range, merging it with its neighbours.
    fn give(&mut self, mut start: u32, mut n: u32) {
        if let Some((&s, &l)) = self.free.range(..start).next_back()
            && s + l == start
        {
            self.free.remove(&s);
            start = s;
            n += l;
        }
        if let Some(&l) = self.free.get(&(start + n)) {
            self.free.remove(&(start + n));
            n += l;
        }
        self.free.insert(start, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::BackendSpec;

    fn spec(name: &str, vip: &str, backends: &[u16]) -> ServiceSpec {
        ServiceSpec::new(
            name,
            vip.parse().unwrap(),
            Protocol::Tcp,
            backends.iter().map(|p| BackendSpec { address: format!("127.0.0.1:{p}").parse().unwrap(), weight: 1 }).collect(),
        )
    }

    fn all_up(s: &ServiceSpec) -> Desired<'_> {
        Desired { spec: s, up: vec![true; s.backends.len()], scope: None }
    }

    #[test]
    fn a_new_service_writes_its_slots_then_its_value() {
        let mut t = Table::default();
        let web = spec("web", "127.0.0.100:80", &[18081, 18082]);
        let p = t.plan(&[all_up(&web)], 0).unwrap();
        assert_eq!(p.zero_services, vec![0]);
        assert_eq!(p.zero_backends, vec![0, 1]);
        assert_eq!(p.slot_writes.len(), 2);
        assert_eq!(p.slot_writes[0].0, 0);
        assert_eq!(p.slot_writes[1].1.port, 18082);
        assert_eq!(p.slot_writes[1].1.backend_id, 1);
        assert_eq!(p.slot_writes[1].1.addr, [u32::from_ne_bytes([127, 0, 0, 1]), 0, 0, 0]);
        let (key, value) = p.puts[0];
        assert_eq!(key, ServiceKey { addr: [u32::from_ne_bytes([127, 0, 0, 100]), 0, 0, 0], port: 80, proto: 6, family: 4 });
        assert_eq!((value.slot_base, value.slot_count, value.algorithm, value.generation), (0, 2, ALG_ROUND_ROBIN, 1));
        assert!(matches!(&p.changes[0], Change::Added { name, .. } if name == "web"));
        // The same again: nothing to do.
        assert!(t.plan(&[all_up(&web)], 10).unwrap().is_empty());
        assert_eq!(t.plan(&[all_up(&web)], 10).unwrap().changes, vec![]);
    }

    #[test]
    fn a_changed_rotation_goes_to_a_new_range_and_the_old_one_waits() {
        let mut t = Table::default();
        let web = spec("web", "127.0.0.100:80", &[1, 2]);
        t.plan(&[all_up(&web)], 0).unwrap();
        // Backend 2 goes down.
        let p = t.plan(&[Desired { spec: &web, up: vec![true, false], scope: None }], 100).unwrap();
        assert_eq!(p.slot_writes.len(), 1);
        assert_eq!(p.slot_writes[0].0, 2, "not over the live range 0..2");
        assert_eq!((p.puts[0].1.slot_base, p.puts[0].1.slot_count, p.puts[0].1.generation), (2, 1, 2));
        assert!(p.zero_backends.is_empty(), "ids are kept");
        assert_eq!(t.slots_in_use(), 3);
        // All down: an empty rotation.
        let p = t.plan(&[Desired { spec: &web, up: vec![false, false], scope: None }], 200).unwrap();
        assert_eq!((p.puts[0].1.slot_count, p.slot_writes.len()), (0, 0));
        // After the grace, the first ranges are reused.
        let p = t.plan(&[all_up(&web)], 1150).unwrap();
        assert_eq!(p.slot_writes[0].0, 0);
        assert_eq!(t.slots_in_use(), 3, "range 2..3 retired at 200 still waits");
        t.plan(&[all_up(&web)], 2300).unwrap();
        assert_eq!(t.slots_in_use(), 2);
    }

    #[test]
    fn removal_deletes_and_frees_ids_from_the_next_plan_on() {
        let mut t = Table::default();
        let a = spec("a", "127.0.0.100:80", &[1]);
        let b = spec("b", "127.0.0.101:80", &[2, 3]);
        t.plan(&[all_up(&a), all_up(&b)], 0).unwrap();
        let p = t.plan(&[all_up(&a)], 10).unwrap();
        assert_eq!(p.deletes, vec![service_key(b.vip, Protocol::Tcp)]);
        assert_eq!(
            p.changes,
            vec![Change::Removed {
                name: "b".into(),
                vip: b.vip,
                protocol: Protocol::Tcp,
                backends: vec!["127.0.0.1:2".parse().unwrap(), "127.0.0.1:3".parse().unwrap()]
            }]
        );
        let c = spec("c", "127.0.0.102:80", &[4]);
        let p = t.plan(&[all_up(&a), all_up(&c)], 20).unwrap();
        assert_eq!(p.zero_services, vec![1], "b's id, freed one plan ago");
        assert!(p.zero_backends.contains(&2) || p.zero_backends.contains(&1));
    }

    #[test]
    fn backend_changes_are_reported() {
        let mut t = Table::default();
        t.plan(&[all_up(&spec("web", "127.0.0.100:80", &[1, 2]))], 0).unwrap();
        let web = spec("web", "127.0.0.100:80", &[2, 3]);
        let p = t.plan(&[all_up(&web)], 10).unwrap();
        assert_eq!(
            p.changes,
            vec![Change::Updated {
                name: "web".into(),
                vip: web.vip,
                protocol: Protocol::Tcp,
                added: vec!["127.0.0.1:3".parse().unwrap()],
                removed: vec!["127.0.0.1:1".parse().unwrap()],
                in_rotation: 2
            }]
        );
        let s = t.services();
        assert_eq!(
            s[0].backends,
            vec![
                BackendEntry { address: "127.0.0.1:2".parse().unwrap(), backend_id: 1 },
                BackendEntry { address: "127.0.0.1:3".parse().unwrap(), backend_id: 2 }
            ]
        );
    }

    #[test]
    fn full_tables_leave_the_table_unchanged() {
        let mut t = Table::with_limits(1, 8, 8);
        let a = spec("a", "127.0.0.100:80", &[1]);
        let b = spec("b", "127.0.0.101:80", &[2]);
        t.plan(&[all_up(&a)], 0).unwrap();
        assert_eq!(t.plan(&[all_up(&a), all_up(&b)], 10), Err(TableError::Full { what: "service", limit: 1 }));
        assert_eq!(t.services().len(), 1);
        let big = spec("a", "127.0.0.100:80", &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(t.plan(&[all_up(&big)], 20), Err(TableError::Full { what: "slot", limit: 8 }));
        assert_eq!(t.services()[0].slots, 1);
    }

    #[test]
    fn many_reloads_never_overwrite_live_slots() {
        // Alternate between two backend sets every 10 ms for 100 reloads:
        // every write lands outside every range a program may still read.
        let mut t = Table::with_limits(4, 64, 4096);
        let sets = [spec("web", "127.0.0.100:80", &[1, 2, 3]), spec("web", "127.0.0.100:80", &[2, 3, 4, 5])];
        let mut live: Vec<(u32, u32, u64)> = Vec::new(); // (base, count, retired at)
        for i in 0..100u64 {
            let now = i * 10;
            let p = t.plan(&[all_up(&sets[i as usize % 2])], now).unwrap();
            let readable: Vec<_> = live.iter().filter(|r| r.2 == u64::MAX || now - r.2 < GRACE_MS).collect();
            for (index, _) in &p.slot_writes {
                assert!(!readable.iter().any(|r| *index >= r.0 && *index < r.0 + r.1), "reload {i} overwrote a live slot {index}");
            }
            if let Some((_, v)) = p.puts.first() {
                for r in live.iter_mut().filter(|r| r.2 == u64::MAX) {
                    r.2 = now;
                }
                live.push((v.slot_base, v.slot_count, u64::MAX));
            }
        }
        assert!(t.slots_in_use() <= 4 * 101, "bounded: {}", t.slots_in_use());
    }

    #[test]
    fn addresses_round_trip() {
        for ip in ["127.0.0.100", "::1", "fd00::53", "::ffff:127.0.0.1"] {
            let ip: IpAddr = ip.parse().unwrap();
            let (w, f) = words(ip);
            assert_eq!(ip_of(w, f), ip);
        }
    }
}
