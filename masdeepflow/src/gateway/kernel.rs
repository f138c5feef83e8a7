//! The gateway's kernel side: loading its object, attaching its programs to
//! cgroups by bpf_link (so a dead gateway detaches), writing plans to the
//! maps and reading their counters.
use std::{
    collections::BTreeMap,
    fs::File,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuValues, RingBuf},
    programs::{CgroupAttachMode, CgroupSock, CgroupSockAddr, cgroup_sock::CgroupSockLinkId, cgroup_sock_addr::CgroupSockAddrLinkId},
};
use masdeepflow_common::gateway::{BackendSlot, COUNTERS_LEN, GatewayConfig, Reverse, ServiceKey, ServiceStats, ServiceValue};
use masdeepflow_gateway::table::Plan;
use tokio::io::unix::AsyncFd;

/// The socket-address programs (connect, sendmsg, recvmsg, getpeername).
pub const SOCK_ADDR_PROGRAMS: [&str; 8] =
    ["gw_connect4", "gw_connect6", "gw_sendmsg4", "gw_sendmsg6", "gw_recvmsg4", "gw_recvmsg6", "gw_getpeername4", "gw_getpeername6"];
/// Deletes a closed socket's reverse translation.
pub const RELEASE_PROGRAM: &str = "gw_sock_release";

/// What the running kernel allowed.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Features {
    /// Refused connects fail with ECONNREFUSED (`bpf_set_retval`, 5.18+),
    /// else with EPERM.
    pub econnrefused: bool,
    /// Connection events carry pid, uid and comm.
    pub process_info: bool,
    /// Round robin is exact under concurrent connects (atomic fetch-add, 5.12+).
    pub exact_round_robin: bool,
}

enum Link {
    SockAddr(&'static str, CgroupSockAddrLinkId),
    Sock(CgroupSockLinkId),
}

pub struct Kernel {
    ebpf: Ebpf,
    pub features: Features,
    services: BpfHashMap<MapData, ServiceKey, ServiceValue>,
    slots: Array<MapData, BackendSlot>,
    rotation: Array<MapData, u64>,
    reverse: BpfHashMap<MapData, u64, Reverse>,
    service_stats: PerCpuArray<MapData, ServiceStats>,
    backend_stats: PerCpuArray<MapData, u64>,
    counters: PerCpuArray<MapData, u64>,
    /// Connection records, when asked for.
    pub ring: Option<AsyncFd<RingBuf<MapData>>>,
    links: BTreeMap<PathBuf, Vec<Link>>,
    cpus: usize,
}

impl Kernel {
    /// Loads the object and its programs (nothing attached yet). The
    /// kernel's optional helpers are tried first, then done without.
    pub fn load(events: bool, ring_buffer_size: u32) -> Result<Kernel> {
        raise_memlock_limit();
        let mut last = None;
        // Newest first: each optional helper or instruction is given up in
        // turn until the verifier accepts the programs. Tests turn features
        // off with MASDEEPFLOW_GATEWAY_DISABLE (set_retval, process_info,
        // fetch_add) to run the fallbacks on a kernel that has them all.
        let disabled = std::env::var("MASDEEPFLOW_GATEWAY_DISABLE").unwrap_or_default();
        let allowed = [("set_retval", 4u32), ("process_info", 2), ("fetch_add", 1)]
            .iter()
            .filter(|(name, _)| disabled.split(',').any(|d| d.trim() == *name))
            .fold(7u32, |m, (_, bit)| m & !bit);
        for mask in (0..8u32).rev().filter(|m| m & !allowed == 0) {
            let (set_retval, process_info, fetch_add) = (mask & 4 != 0, mask & 2 != 0, mask & 1 != 0);
            let config = GatewayConfig {
                events: events as u32,
                set_retval: set_retval as u32,
                process_info: process_info as u32,
                fetch_add: fetch_add as u32,
            };
            match load_with(&config, if events { ring_buffer_size } else { 4096 }) {
                Ok(ebpf) => {
                    let features = Features { econnrefused: set_retval, process_info, exact_round_robin: fetch_add };
                    if mask != allowed {
                        log::warn!("gateway: this kernel lacks some optional BPF features: {features:?}");
                    }
                    return Kernel::new(ebpf, features, events);
                }
                Err(e) => {
                    log::debug!("gateway programs with {config:?}: {e:?}");
                    last = Some(e);
                }
            }
        }
        Err(last.expect("tried"))
    }

    fn new(mut ebpf: Ebpf, features: Features, events: bool) -> Result<Kernel> {
        let mut take = |name: &str| ebpf.take_map(name).with_context(|| format!("map {name} missing from the gateway object"));
        let services = BpfHashMap::try_from(take("GW_SERVICES")?)?;
        let slots = Array::try_from(take("GW_SLOTS")?)?;
        let rotation = Array::try_from(take("GW_ROTATION")?)?;
        let reverse = BpfHashMap::try_from(take("GW_REVERSE")?)?;
        let service_stats = PerCpuArray::try_from(take("GW_SERVICE_STATS")?)?;
        let backend_stats = PerCpuArray::try_from(take("GW_BACKEND_STATS")?)?;
        let counters = PerCpuArray::try_from(take("GW_COUNTERS")?)?;
        let ring = take("GW_EVENTS")?;
        let ring = if events {
            let ring = RingBuf::try_from(ring)?;
            // SAFETY: the ring buffer owns its map fd for as long as the AsyncFd lives.
            Some(unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }?)
        } else {
            None
        };
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
        Ok(Kernel {
            ebpf,
            features,
            services,
            slots,
            rotation,
            reverse,
            service_stats,
            backend_stats,
            counters,
            ring,
            links: BTreeMap::new(),
            cpus,
        })
    }

    /// Attaches every program to `dir` (a cgroup2 directory), alongside
    /// programs others attached there: a bpf_link (5.7+) takes no flags and
    /// always runs with the other programs of the cgroup.
    pub fn attach(&mut self, dir: &Path) -> Result<()> {
        if self.links.contains_key(dir) {
            return Ok(());
        }
        let file = File::open(dir).with_context(|| format!("opening cgroup {}", dir.display()))?;
        let mut links = Vec::new();
        let result = (|| -> Result<()> {
            for name in SOCK_ADDR_PROGRAMS {
                let p: &mut CgroupSockAddr = self.ebpf.program_mut(name).context("program missing")?.try_into()?;
                let id = p.attach(&file, CgroupAttachMode::Single).with_context(|| format!("attaching {name} to {}", dir.display()))?;
                links.push(Link::SockAddr(name, id));
            }
            let p: &mut CgroupSock = self.ebpf.program_mut(RELEASE_PROGRAM).context("program missing")?.try_into()?;
            let id =
                p.attach(&file, CgroupAttachMode::Single).with_context(|| format!("attaching {RELEASE_PROGRAM} to {}", dir.display()))?;
            links.push(Link::Sock(id));
            Ok(())
        })();
        if let Err(e) = result {
            self.detach_links(links);
            return Err(e);
        }
        self.links.insert(dir.to_path_buf(), links);
        Ok(())
    }

    pub fn detach(&mut self, dir: &Path) {
        if let Some(links) = self.links.remove(dir) {
            self.detach_links(links);
        }
    }

    fn detach_links(&mut self, links: Vec<Link>) {
        for link in links {
            let result = match link {
                Link::SockAddr(name, id) => self
                    .ebpf
                    .program_mut(name)
                    .and_then(|p| <&mut CgroupSockAddr>::try_from(p).ok())
                    .map(|p| p.detach(id).map_err(anyhow::Error::from)),
                Link::Sock(id) => self
                    .ebpf
                    .program_mut(RELEASE_PROGRAM)
                    .and_then(|p| <&mut CgroupSock>::try_from(p).ok())
                    .map(|p| p.detach(id).map_err(anyhow::Error::from)),
            };
            if let Some(Err(e)) = result {
                log::warn!("detaching a gateway program: {e:#}");
            }
        }
    }

    /// Cgroup directories the programs are attached to.
    pub fn attached(&self) -> Vec<PathBuf> {
        self.links.keys().cloned().collect()
    }

    /// Writes a plan in its order: counters of new ids, new slots, service
    /// values (each one atomic update), deletions.
    pub fn apply(&mut self, plan: &Plan) -> Result<()> {
        for id in &plan.zero_services {
            let zero = PerCpuValues::try_from(vec![ServiceStats::default(); self.cpus])?;
            self.service_stats.set(*id, zero, 0).context("zeroing service counters")?;
            self.rotation.set(*id, 0, 0).context("zeroing a rotation counter")?;
        }
        for id in &plan.zero_backends {
            let zero = PerCpuValues::try_from(vec![0u64; self.cpus])?;
            self.backend_stats.set(*id, zero, 0).context("zeroing backend counters")?;
        }
        for (index, slot) in &plan.slot_writes {
            self.slots.set(*index, slot, 0).context("writing a rotation slot")?;
        }
        for (key, value) in &plan.puts {
            self.services.insert(key, value, 0).context("writing a service")?;
        }
        for key in &plan.deletes {
            if let Err(e) = self.services.remove(key) {
                log::warn!("removing a service from the kernel: {e}");
            }
        }
        Ok(())
    }

    pub fn service_stats(&self, id: u32) -> ServiceStats {
        self.service_stats
            .get(&id, 0)
            .map(|v| {
                v.iter().fold(ServiceStats::default(), |a, s| ServiceStats {
                    translated: a.translated + s.translated,
                    no_backend: a.no_backend + s.no_backend,
                })
            })
            .unwrap_or_default()
    }

    pub fn backend_connections(&self, id: u32) -> u64 {
        self.backend_stats.get(&id, 0).map(|v| v.iter().sum()).unwrap_or(0)
    }

    pub fn counters(&self) -> [u64; COUNTERS_LEN as usize] {
        let mut out = [0; COUNTERS_LEN as usize];
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.counters.get(&(i as u32), 0).map(|v| v.iter().sum()).unwrap_or(0);
        }
        out
    }

    /// Entries of the reverse-translation table (live translated sockets).
    pub fn reverse_entries(&self) -> u64 {
        self.reverse.keys().filter(|k| k.is_ok()).count() as u64
    }

    /// Sockets translated to `backend` through `vip` (by cookie), from the
    /// reverse table: the ones a drain resets.
    pub fn cookies_to(&self, vip: ([u32; 4], u16), backend: ([u32; 4], u16)) -> Vec<u64> {
        self.reverse
            .iter()
            .filter_map(|r| r.ok())
            .filter(|(_, rev)| {
                rev.pairs.iter().any(|p| p.family != 0 && (p.vip, p.vip_port) == vip && (p.backend, p.backend_port) == backend)
            })
            .map(|(cookie, _)| cookie)
            .collect()
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        for dir in self.attached() {
            self.detach(&dir);
        }
    }
}

fn load_with(config: &GatewayConfig, ring_buffer_size: u32) -> Result<Ebpf> {
    let mut ebpf = EbpfLoader::new()
        .override_global("GW_CONFIG", config, true)
        .map_max_entries("GW_EVENTS", ring_buffer_size)
        .load(crate::embedded::gateway()?)
        .context("loading the gateway's eBPF object")?;
    for name in SOCK_ADDR_PROGRAMS {
        let p: &mut CgroupSockAddr = ebpf.program_mut(name).with_context(|| format!("program {name} missing"))?.try_into()?;
        p.load().with_context(|| format!("loading program {name}"))?;
    }
    let p: &mut CgroupSock = ebpf.program_mut(RELEASE_PROGRAM).context("program gw_sock_release missing")?.try_into()?;
    p.load().context("loading program gw_sock_release (Linux 5.9+)")?;
    Ok(ebpf)
}

/// As the agent: kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: a valid rlimit pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        log::debug!("cannot raise RLIMIT_MEMLOCK: {}", std::io::Error::last_os_error());
    }
}
