//! The running agent: ring buffer -> decode -> pipeline -> bounded queue ->
//! writer thread -> stdout, plus the flow and stats timers and signals.
use std::collections::BTreeMap;

use anyhow::{Context as _, Result, anyhow, bail};
use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use masdeepflow_common::{
    EventKind,
    payload::MYSQL_CAPTURE_BYTES,
    stats::{
        CONNECTING_FULL, HTTP_REQUESTS_LOST_AT_CLOSE, MYSQL_COMMANDS_LOST_AT_CLOSE, SOCKETS_FULL, TLS_CALLS_FULL, TLS_NO_CONNECTION,
        lost_index,
    },
    tcp::{PendingConnect, SockState},
};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
    time::{MissedTickBehavior, interval_at},
};

use crate::{
    cli::{Family, Format, RunArgs},
    clock::Clock,
    decode::{Record, decode},
    event::{AgentStats, Event, Lost, Output, Time},
    kernel::{config, privileges, tracefs},
    loader,
    pipeline::Pipeline,
    protocols::Protocol,
    queue::{self, Lines, Queue},
    sink::{
        export::Taps,
        json::JsonWriter,
        metrics::Live,
        stdout::{self as writer, WriterEnd},
        text,
    },
    tls_probes::{LISTING_INTERVAL, SWEEP_INTERVAL, TlsProbes},
    wakeups::{BACKSTOP_INTERVAL, POLL_INTERVAL, Wakeups},
};

/// How the agent ended, for the exit code.
pub enum Outcome {
    /// Signal received, everything flushed.
    Stopped,
    /// stdout was closed (`| head`): quiet exit.
    StdoutClosed,
}

struct Maps {
    ring: AsyncFd<RingBuf<MapData>>,
    sockets: BpfHashMap<MapData, u64, SockState>,
    counters: PerCpuArray<MapData, u64>,
    connecting: BpfHashMap<MapData, u64, PendingConnect>,
    /// `AGENT_POLLING`: whether the kernel should wake us (see `wakeups`).
    polling: Array<MapData, u32>,
}

/// Counters of the user-space side.
#[derive(Default)]
struct QueueLoss {
    by_type: BTreeMap<&'static str, u64>,
}

pub fn run(args: RunArgs) -> Result<Outcome> {
    if let Some(missing) = privileges::check_current() {
        bail!(missing);
    }
    // The metrics port and the OTLP options, checked before anything loads.
    let export_plan = crate::sink::export::prepare(&args)?;
    let tracefs_root = tracefs::root().ok_or_else(|| anyhow!("tracefs is not mounted (mount -t tracefs nodev /sys/kernel/tracing)"))?;
    let mut kernel_config = config::for_running_kernel(&tracefs_root)?;
    kernel_config.has_task_pt_regs = u32::from(crate::kernel::features::has_task_pt_regs() && !args.record_syscall_entries);
    if args.events.contains(&Family::Http) {
        kernel_config.capture_bytes = args.capture_bytes;
    }
    if args.events.contains(&Family::Mysql) {
        kernel_config.mysql_capture_bytes = MYSQL_CAPTURE_BYTES as u32;
        if kernel_config.adopt_mysql == 0 {
            log::warn!("kernel BTF lacks struct sock_common's fields: MySQL connections opened before the agent started are not parsed");
        }
    } else {
        kernel_config.adopt_mysql = 0;
    }
    config::set_comm_filter(&mut kernel_config, &args.comm);
    let mut loaded = loader::load(&kernel_config, &args.events, args.traffic_source, args.ring_buffer_size, &tracefs_root)?;
    let take = |ebpf: &mut aya::Ebpf, name: &str| ebpf.take_map(name).with_context(|| format!("map {name} missing from the object"));
    let ring = RingBuf::try_from(take(&mut loaded.ebpf, "EVENTS")?)?;
    let sockets = BpfHashMap::try_from(take(&mut loaded.ebpf, "SOCKETS")?)?;
    let counters = PerCpuArray::try_from(take(&mut loaded.ebpf, "COUNTERS")?)?;
    let connecting = BpfHashMap::try_from(take(&mut loaded.ebpf, "CONNECTING")?)?;
    let polling = Array::try_from(take(&mut loaded.ebpf, "AGENT_POLLING")?)?;
    // Every process's exec and exit events name new and gone processes
    // for the TLS sweep, which then lists /proc only now and then.
    let process_events =
        args.events.contains(&Family::Exec) && args.events.contains(&Family::Exit) && args.pid.is_empty() && args.comm.is_empty();
    let listing = if process_events { LISTING_INTERVAL } else { SWEEP_INTERVAL };
    let mut tls = if args.events.contains(&Family::Http) && args.capture_bytes != 0 { start_tls(&mut loaded, listing) } else { None };

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // Handle SIGINT/SIGTERM from before `agent_start` is written, so that a
    // signal sent as soon as it is seen still flushes and exits cleanly.
    let signals = {
        let _in_runtime = runtime.enter();
        Signals { int: signal(SignalKind::interrupt())?, term: signal(SignalKind::terminate())? }
    };
    let clock = Clock::new();
    let containers = crate::containers::cgroup2_root().map(|root| crate::containers::Containers::from_tree(&root)).unwrap_or_default();
    // Pod metadata, when this node's name is known: watched in the
    // background; lookups never wait for the API server.
    let pods_index = args.node_name.as_ref().filter(|n| !n.is_empty()).map(|_| masdeepflow_k8s::PodIndex::new());
    let mut pipeline = Pipeline::new(&args, clock, containers, pods_index.clone());
    let (tx, rx) = queue::bounded(args.queue_size as usize);
    let (end_tx, end_rx) = tokio::sync::oneshot::channel();
    let live =
        Live { queue: Some(tx.depth()), queue_capacity: u64::from(args.queue_size), ring_buffer_size: u64::from(args.ring_buffer_size) };
    let (sinks, taps, export) = export_plan.start(live, clock.wall_ns(Clock::ktime_now()))?;
    let types = pipeline.event_types();
    let writer = std::thread::Builder::new().name("output".into()).spawn(move || {
        let end = writer::run(rx, sinks, types, std::io::stdout().lock());
        let _ = end_tx.send(());
        end
    })?;

    let start = Event::AgentStart {
        time: Time(clock.wall_ns(Clock::ktime_now())),
        version: env!("CARGO_PKG_VERSION"),
        kernel: kernel_release(),
        probes: loaded.attached.clone(),
        events: args.events.iter().map(|f| f.name()).collect(),
    };
    let mut batch = Batch::new(args.format, taps);
    let mut start_line = crate::queue::Lines::default();
    let start = [Output::plain(start)];
    batch.taps.feed(&start);
    batch.write(&mut start_line, &start[0]);
    tx.push(start_line);

    let outcome = runtime.block_on(async {
        let watcher = match (&pods_index, &args.node_name) {
            (Some(index), Some(node)) => {
                let config = masdeepflow_k8s::WatchConfig::new(node.clone(), masdeepflow_k8s::ClientSource::Infer);
                Some(masdeepflow_k8s::spawn_watcher(config, index.clone()))
            }
            _ => None,
        };
        let _stop_watcher = AbortOnDrop(watcher);
        // SAFETY: the ring buffer owns its map fd for as long as the AsyncFd lives.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| anyhow!("watching the ring buffer: {e}"))?;
        let mut maps = Maps { ring, sockets, counters, connecting, polling };
        let mut tls = tls.as_mut().map(|t| (t, &mut loaded.ebpf));
        main_loop(&args, &mut maps, &mut pipeline, &clock, &tx, end_rx, signals, batch, &mut tls).await
    })?;

    drop(tx);
    let end = writer.join().map_err(|_| anyhow!("output thread panicked"))?;
    drop(loaded);
    if let Some(export) = export {
        export.stop();
    }
    match (outcome, end) {
        (Outcome::StdoutClosed, _) | (_, WriterEnd::StdoutClosed) => Ok(Outcome::StdoutClosed),
        (_, WriterEnd::Failed(e)) => Err(anyhow::Error::new(e).context("writing to stdout")),
        (o, WriterEnd::Done) => Ok(o),
    }
}

#[expect(clippy::too_many_arguments, reason = "the main loop's state, owned by run(); grouping it is the output work's call")]
async fn main_loop(
    args: &RunArgs,
    maps: &mut Maps,
    pipeline: &mut Pipeline,
    clock: &Clock,
    tx: &Queue,
    mut writer_end: tokio::sync::oneshot::Receiver<()>,
    mut signals: Signals,
    mut batch: Batch,
    tls: &mut Option<(&mut TlsProbes, &mut aya::Ebpf)>,
) -> Result<Outcome> {
    let mut tls_timer = interval_at(tokio::time::Instant::now() + SWEEP_INTERVAL, SWEEP_INTERVAL);
    tls_timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let now = tokio::time::Instant::now();
    let mut flow_timer = interval_at(now + args.flow_interval, args.flow_interval);
    flow_timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut stats_timer = interval_at(now + args.stats_interval, args.stats_interval);
    stats_timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Woken by the kernel while asleep, polling while records flow.
    let mut wakeups = Wakeups::new(args.ring_buffer_size);
    let poll_sleep = tokio::time::sleep(POLL_INTERVAL);
    tokio::pin!(poll_sleep);
    let mut backstop_timer = interval_at(now + BACKSTOP_INTERVAL, BACKSTOP_INTERVAL);
    backstop_timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut loss = QueueLoss::default();

    let outcome = loop {
        tokio::select! {
            guard = maps.ring.readable_mut() => {
                let mut guard = guard?;
                drain_ring(guard.get_inner_mut(), pipeline, clock, tx, &mut loss, &mut batch);
                guard.clear_ready();
                if let Some(fill) = wakeups.on_woken() {
                    set_polling(&mut maps.polling, fill);
                }
                if wakeups.polling() {
                    poll_sleep.as_mut().reset(tokio::time::Instant::now() + wakeups.interval());
                }
            }
            _ = &mut poll_sleep, if wakeups.polling() => {
                let records = drain_ring(maps.ring.get_mut(), pipeline, clock, tx, &mut loss, &mut batch);
                if let Some(fill) = wakeups.on_poll(records) {
                    set_polling(&mut maps.polling, fill);
                    drain_ring(maps.ring.get_mut(), pipeline, clock, tx, &mut loss, &mut batch);
                    // Asleep from now: nothing waits for a later drain.
                    batch.send(tx);
                }
                poll_sleep.as_mut().reset(tokio::time::Instant::now() + wakeups.interval());
            }
            _ = backstop_timer.tick() => {
                drain_ring(maps.ring.get_mut(), pipeline, clock, tx, &mut loss, &mut batch);
            }
            _ = flow_timer.tick() => {
                let sockets: Vec<SockState> = maps.sockets.iter().filter_map(|r| r.ok()).map(|(_, v)| v).collect();
                pipeline.on_flow_tick(sockets, &mut batch.events);
                batch.flush(pipeline, tx, &mut loss);
            }
            _ = stats_timer.tick() => {
                batch.send(tx);
                send_stats(maps, clock, tx, &loss, pipeline, false);
            }
            _ = tls_timer.tick(), if tls.is_some() => {
                if let Some((probes, ebpf)) = tls.as_mut() {
                    for pid in batch.execs.drain(..) {
                        probes.on_exec(pid);
                    }
                    for pid in batch.exits.drain(..) {
                        probes.on_exit(ebpf, pid);
                    }
                    probes.sweep(ebpf);
                }
            }
            _ = signals.int.recv() => break Outcome::Stopped,
            _ = signals.term.recv() => break Outcome::Stopped,
            _ = &mut writer_end => break Outcome::StdoutClosed,
        }
    };
    if let Outcome::Stopped = outcome {
        // What the kernel wrote before we stopped is still reported.
        drain_ring(maps.ring.get_mut(), pipeline, clock, tx, &mut loss, &mut batch);
        batch.send(tx);
        send_stats(maps, clock, tx, &loss, pipeline, true);
    }
    Ok(outcome)
}

struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

/// Stops the pod watcher when the main loop ends.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
    }
}

/// Events on their way from the pipeline to the queue, and the line
/// formatter (lines are made here, in the thread that made the events).
struct Batch {
    events: Vec<Event>,
    lines: Vec<Output>,
    format: Format,
    json: JsonWriter,
    /// The metrics and OTLP, fed every event (whether or not the output
    /// queue has room for its line).
    taps: Taps,
    /// Lines formatted and not yet handed to the output thread, and since
    /// when: they go in chunks, so the output thread wakes per chunk, not
    /// per drain.
    pending: Lines,
    pending_since: Option<std::time::Instant>,
    /// Processes that exec'd and exited since the last TLS sweep (bounded:
    /// dropped past `PIDS_MAX`, the sweep finds them anyway).
    execs: Vec<u32>,
    exits: Vec<u32>,
}

const PIDS_MAX: usize = 65536;

/// Formatted lines wait at most this long, or until this many bytes, for
/// the output thread.
const OUTPUT_DELAY: std::time::Duration = std::time::Duration::from_millis(50);
const OUTPUT_CHUNK: usize = 64 * 1024;

impl Batch {
    fn new(format: Format, taps: Taps) -> Batch {
        Batch {
            events: Vec::with_capacity(512),
            lines: Vec::with_capacity(512),
            format,
            json: JsonWriter::default(),
            taps,
            pending: Lines::default(),
            pending_since: None,
            execs: Vec::new(),
            exits: Vec::new(),
        }
    }

    fn write(&mut self, out: &mut Lines, line: &Output) {
        match self.format {
            Format::Json => self.json.write(&mut out.text, line),
            // Writing to a Vec cannot fail.
            Format::Text => text::write(&mut out.text, line).expect("writing to memory"),
            Format::None => {}
        }
    }

    /// Enriches the events, formats as many as the queue has room for and
    /// hands them to the writer without waiting; the rest are lost and
    /// counted.
    fn flush(&mut self, pipeline: &mut Pipeline, tx: &Queue, loss: &mut QueueLoss) {
        pipeline.enrich_into(&mut self.events, &mut self.lines);
        self.taps.feed(&self.lines);
        if !self.lines.is_empty() {
            let room = tx.room().saturating_sub(self.pending.events);
            let mut out = std::mem::take(&mut self.pending);
            let mut lines = std::mem::take(&mut self.lines);
            for (i, line) in lines.drain(..).enumerate() {
                if i < room {
                    self.write(&mut out, &line);
                    out.count(line.event.type_name());
                } else {
                    *loss.by_type.entry(line.event.type_name()).or_insert(0) += 1;
                }
            }
            self.lines = lines;
            self.pending = out;
            self.pending_since.get_or_insert_with(std::time::Instant::now);
        }
        if self.pending.text.len() >= OUTPUT_CHUNK || self.pending_since.is_some_and(|t| t.elapsed() >= OUTPUT_DELAY) {
            self.send(tx);
        }
    }

    /// Hands the pending lines to the output thread now.
    fn send(&mut self, tx: &Queue) {
        self.pending_since = None;
        let out = std::mem::take(&mut self.pending);
        if !out.text.is_empty() || out.events > 0 {
            self.pending.text = Vec::with_capacity(out.text.capacity());
            tx.push(out);
        }
    }
}

/// Tells the kernel whether to wake us for each record (see `wakeups`).
/// `AGENT_POLLING`: 0 asleep, else the ring's fill level that wakes the agent.
fn set_polling(map: &mut Array<MapData, u32>, fill: u32) {
    if let Err(e) = map.set(0, fill, 0) {
        log::warn!("cannot tell the kernel how to wake the agent: {e}");
    }
}

/// Reads every waiting record; returns how many.
fn drain_ring(
    ring: &mut RingBuf<MapData>,
    pipeline: &mut Pipeline,
    clock: &Clock,
    tx: &Queue,
    loss: &mut QueueLoss,
    batch: &mut Batch,
) -> usize {
    let mut records = 0;
    while let Some(item) = ring.next() {
        records += 1;
        match decode(&item, clock) {
            Ok(record) => {
                match &record {
                    Record::Event(Event::ProcessExec { process, .. }) if batch.execs.len() < PIDS_MAX => batch.execs.push(process.pid),
                    Record::Event(Event::ProcessExit { process, .. }) if batch.exits.len() < PIDS_MAX => batch.exits.push(process.pid),
                    _ => {}
                }
                pipeline.on_record(record, &mut batch.events)
            }
            Err(e) => log::warn!("dropping a malformed ring buffer record: {e}"),
        }
        drop(item);
        if batch.events.len() >= 512 {
            batch.flush(pipeline, tx, loss);
        }
    }
    batch.flush(pipeline, tx, loss);
    records
}

fn send_stats(maps: &Maps, clock: &Clock, tx: &Queue, loss: &QueueLoss, pipeline: &mut Pipeline, last: bool) {
    // Parser state of connections the kernel no longer tracks is dropped
    // here, so user-space tables follow the kernel's.
    let live: std::collections::HashSet<u64> = maps.sockets.iter().filter_map(|r| r.ok()).map(|(_, s)| s.id).collect();
    pipeline.retain_live_connections(&live);
    pipeline.prune_cgroups();
    let mut tables = BTreeMap::new();
    tables.insert("kernel_sockets", live.len() as u64);
    tables.insert("kernel_connecting", maps.connecting.keys().filter(|k| k.is_ok()).count() as u64);
    for (name, n) in pipeline.table_sizes() {
        tables.insert(name, n);
    }
    let counter = |i: u32| maps.counters.get(&i, 0).map(|v| v.iter().sum::<u64>()).unwrap_or(0);
    let mut lost = Lost { kernel_ring_buffer: BTreeMap::new(), user_queue: pipeline.event_types(), export: BTreeMap::new() };
    for kind in EventKind::ALL {
        let name = kind.name();
        lost.kernel_ring_buffer.insert(name, counter(lost_index(kind as u32)));
    }
    // Exchanges, from their lost payload records (see `protocols`).
    lost.kernel_ring_buffer.insert("http", pipeline.exchanges_lost(Protocol::Http) + counter(HTTP_REQUESTS_LOST_AT_CLOSE));
    lost.kernel_ring_buffer.insert("mysql", pipeline.exchanges_lost(Protocol::Mysql) + counter(MYSQL_COMMANDS_LOST_AT_CLOSE));
    for (k, v) in &loss.by_type {
        lost.user_queue.insert(k, *v);
    }
    let stats = Box::new(AgentStats {
        time: Time(clock.wall_ns(Clock::ktime_now())),
        emitted: BTreeMap::new(),
        lost,
        untracked_connections: counter(SOCKETS_FULL) + counter(CONNECTING_FULL),
        http: {
            let h = pipeline.http_counters();
            BTreeMap::from([
                ("unseen_requests", h.unseen_requests),
                ("orphan_responses", h.orphan_responses),
                ("pending_overflow", h.pending_overflow),
                ("pairing_lost", h.pairing_lost),
                ("gave_up", h.gave_up),
            ])
        },
        mysql: {
            let m = pipeline.mysql_counters();
            BTreeMap::from([("statements_evicted", m.statements_evicted), ("unknown_statements", m.unknown_statements)])
        },
        tls: BTreeMap::from([("calls_untracked", counter(TLS_CALLS_FULL)), ("no_connection", counter(TLS_NO_CONNECTION))]),
        tables,
    });
    // Counts are cumulative, so a periodic line that finds the queue full
    // is skipped without losing anything; the final one is always written.
    if last || tx.room() >= 1 {
        tx.push_stats(stats);
    }
}

/// Loads the TLS uprobes and makes sure threads' open calls are dropped
/// when they exit (`sched_process_exit`); None, with a warning, when this
/// kernel cannot run them.
fn start_tls(loaded: &mut loader::Loaded, listing: std::time::Duration) -> Option<TlsProbes> {
    const EXIT: &str = "sched:sched_process_exit";
    if !loaded.attached.iter().any(|a| a == EXIT) {
        let attach = |ebpf: &mut aya::Ebpf| -> Result<()> {
            let p: &mut aya::programs::TracePoint =
                ebpf.program_mut("sched_process_exit").context("program sched_process_exit missing")?.try_into()?;
            p.load()?;
            p.attach("sched", "sched_process_exit")?;
            Ok(())
        };
        match attach(&mut loaded.ebpf) {
            Ok(()) => loaded.attached.push(EXIT.to_string()),
            Err(e) => {
                log::warn!("TLS plaintext is not captured: {e:#}");
                return None;
            }
        }
    }
    match TlsProbes::start(&mut loaded.ebpf, listing) {
        Ok(t) => {
            loaded.attached.push("uprobe:openssl".to_string());
            Some(t)
        }
        Err(e) => {
            log::warn!("TLS plaintext is not captured: {e:#}");
            None
        }
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
}
