//! Real processes: Python loading libssl late (`import ssl`), a process in
//! its own mount namespace and root (a container made with unshare and
//! pivot_root) mapping its own copy of libssl, a library
//! deleted while mapped (a package upgrade), and the attach plan over
//! several processes sharing one libssl. Run as root (CI is): opening
//! another process's `/proc/PID/map_files` needs CAP_SYS_ADMIN.
mod common;

use std::{
    fs::File,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use common::*;
use masdeepflow_tls::{
    AttachPlan, Change, Discovery, FileId, TlsFunction, TlsLibrary, analyze_path,
    maps::NameHint,
    procfs::{open_mapped_file, process_files},
};

fn proc_root() -> &'static Path {
    Path::new("/proc")
}

fn file_id(path: &Path) -> FileId {
    let meta = std::fs::metadata(path).unwrap();
    FileId::from_stat(meta.dev(), meta.ino())
}

/// A Python process that prints `ready` and then, for each line it reads,
/// runs the next statement and prints `done`.
struct Python {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Python {
    fn start(statements: &[&str]) -> Self {
        let mut script = String::from("import sys\nprint('ready', flush=True)\n");
        for s in statements {
            script.push_str(&format!("sys.stdin.readline()\n{s}\nprint('done', flush=True)\n"));
        }
        script.push_str("sys.stdin.readline()\n");
        let mut child =
            Command::new("python3").arg("-c").arg(script).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("python3");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line, "ready\n");
        Self { child, stdin, stdout }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn step(&mut self) {
        self.stdin.write_all(b"\n").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert_eq!(line, "done\n");
    }

    fn finish(mut self) {
        self.stdin.write_all(b"\n").unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status}");
    }
}

fn host_libssl() -> PathBuf {
    host_lib("libssl.so.3")
}

#[test]
fn libssl_loaded_late_by_python_is_found_with_its_identity_and_probes() {
    let mut python = Python::start(&["import ssl"]);
    let before = process_files(proc_root(), python.pid()).unwrap();
    assert!(before.iter().all(|f| f.hint != NameHint::OpenSsl), "{before:?}");
    assert!(before.iter().any(|f| f.path.to_string_lossy().contains("python3")), "the interpreter itself is listed");

    python.step();
    let after = process_files(proc_root(), python.pid()).unwrap();
    let libssl = after.iter().find(|f| f.hint == NameHint::OpenSsl).expect("libssl after import ssl");
    assert_eq!(libssl.id, file_id(&host_libssl()));
    assert!(!libssl.deleted);

    let opened = open_mapped_file(proc_root(), python.pid(), libssl).unwrap();
    assert_eq!(opened.path, proc_root().join(format!("{}/map_files/{:x}-{:x}", python.pid(), libssl.start, libssl.end)));
    assert_eq!(analyze_path(&opened.path).unwrap(), analyze_path(&host_libssl()).unwrap());

    let mut discovery = Discovery::new(proc_root());
    let scan = discovery.scan_process(python.pid()).unwrap();
    assert_eq!(scan.ids().collect::<Vec<_>>(), [libssl.id], "only libssl has TLS functions: {:?}", scan.tls_files);
    assert!(scan.skipped.is_empty(), "{:?}", scan.skipped);
    let tls = &scan.tls_files[0];
    assert_eq!(tls.analysis.libraries(), [TlsLibrary::OpenSsl]);
    assert!(tls.analysis.probe(TlsFunction::SslReadEx).is_some());
    let read = discovery.files_read;
    assert_eq!(read, after.len() as u64, "every executable file read once");
    discovery.scan_process(python.pid()).unwrap();
    assert_eq!(discovery.files_read, read, "a rescan reads nothing again");
    python.finish();
}

#[test]
fn attach_plan_over_processes_sharing_libssl() {
    let mut discovery = Discovery::new(proc_root());
    let mut plan = AttachPlan::new();
    let mut pythons: Vec<Python> = (0..3).map(|_| Python::start(&["import ssl"])).collect();
    let libssl = file_id(&host_libssl());
    let mut changes = Vec::new();
    for p in &mut pythons {
        // Before the import: nothing to attach.
        let scan = discovery.scan_process(p.pid()).unwrap();
        assert_eq!(plan.set_process_files(p.pid(), scan.ids()), []);
        p.step();
        let scan = discovery.scan_process(p.pid()).unwrap();
        changes.extend(plan.add_process_files(p.pid(), scan.ids()));
    }
    assert_eq!(changes, [Change::Attach(libssl)], "one attachment for three processes");
    assert_eq!(plan.users(libssl), 3);
    let last = pythons.pop().unwrap();
    for p in pythons {
        let pid = p.pid();
        p.finish();
        assert_eq!(plan.process_exited(pid), []);
    }
    let pid = last.pid();
    last.finish();
    assert_eq!(plan.process_exited(pid), [Change::Detach(libssl)]);
    discovery.forget(libssl);
    assert_eq!(plan.attached().count(), 0);
}

/// Copies a file into `root` at the same absolute path.
fn copy_into(root: &Path, path: &str) {
    let target = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::copy(path, &target).unwrap();
}

/// Waits (bounded) until `pid` maps a file whose name hints OpenSSL.
fn wait_for_libssl(pid: u32) -> Vec<masdeepflow_tls::MappedFile> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let files = process_files(proc_root(), pid).unwrap();
        if files.iter().any(|f| f.hint == NameHint::OpenSsl) {
            return files;
        }
        assert!(Instant::now() < deadline, "pid {pid} never mapped libssl: {files:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_process_in_a_container_is_read_through_proc_pid_root() {
    let root = temp_dir("container");
    for path in [
        "/usr/bin/openssl",
        "/lib/x86_64-linux-gnu/libssl.so.3",
        "/lib/x86_64-linux-gnu/libcrypto.so.3",
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/lib64/ld-linux-x86-64.so.2",
    ] {
        copy_into(&root, path);
    }
    let busybox =
        ["/bin/busybox", "/usr/bin/busybox"].into_iter().find(|p| Path::new(p).exists()).expect("busybox (apt-get install busybox-static)");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    // A new mount namespace whose root is `root`, the host's tree unmounted
    // from it (as a container runtime does); every step execs, so the pid
    // stays that of the final `openssl enc`, which blocks reading stdin.
    let script = format!(
        "mount --bind {r} {r} && cd {r} && mkdir -p old && pivot_root . old && exec /bin/busybox chroot . /bin/busybox sh -c \
         '/bin/busybox umount -l /old && exec /usr/bin/openssl enc -aes-128-cbc -pbkdf2 -pass pass:x'",
        r = root.display()
    );
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("unshare (util-linux)");
    let pid = child.id();
    let files = wait_for_libssl(pid);
    let libssl = files.iter().find(|f| f.hint == NameHint::OpenSsl).unwrap();
    // Maps shows the path inside the container; on the host it names another file.
    assert_eq!(libssl.path, Path::new("/lib/x86_64-linux-gnu/libssl.so.3"));
    let copy = root.join("lib/x86_64-linux-gnu/libssl.so.3");
    assert_eq!(libssl.id, file_id(&copy));
    assert_ne!(libssl.id, file_id(&host_libssl()));
    let candidates = libssl.open_candidates(proc_root(), pid);
    assert_eq!(candidates[1], proc_root().join(format!("{pid}/root/lib/x86_64-linux-gnu/libssl.so.3")));
    for path in &candidates {
        assert_eq!(file_id(path), libssl.id, "{} opens the container's copy", path.display());
    }
    let scan = Discovery::new(proc_root()).scan_process(pid).unwrap();
    assert_eq!(scan.ids().collect::<Vec<_>>(), [libssl.id]);
    assert_eq!(*scan.tls_files[0].analysis, analyze_path(&host_libssl()).unwrap());

    drop(child.stdin.take());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn a_library_deleted_while_mapped_opens_only_through_map_files() {
    let dir = temp_dir("deleted");
    let copy = dir.join("libssl.so.3");
    std::fs::copy(host_libssl(), &copy).unwrap();
    let id = file_id(&copy);
    let mut python = Python::start(&[&format!("import ctypes; ctypes.CDLL({:?})", copy.to_str().unwrap())]);
    python.step();
    // An upgrade replaces the file: the process keeps the old inode.
    std::fs::remove_file(&copy).unwrap();
    File::create(&copy).unwrap().write_all(b"not the mapped file").unwrap();

    let files = process_files(proc_root(), python.pid()).unwrap();
    let mapped = files.iter().find(|f| f.id == id).expect("the copy is still mapped");
    assert!(mapped.deleted);
    assert_eq!(mapped.path, copy);
    assert_eq!(mapped.open_candidates(proc_root(), python.pid()).len(), 1, "no root path for a deleted file");
    let opened = open_mapped_file(proc_root(), python.pid(), mapped).unwrap();
    assert!(opened.path.to_string_lossy().contains("/map_files/"));
    assert_eq!(analyze_path(&opened.path).unwrap(), analyze_path(&host_libssl()).unwrap());

    // A mapping whose path now names another file is not opened by path.
    let mut by_path = mapped.clone();
    by_path.deleted = false;
    by_path.start = 1; // no such map_files entry
    let err = open_mapped_file(proc_root(), python.pid(), &by_path).unwrap_err().to_string();
    assert!(err.contains("another file"), "{err}");
    python.finish();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_process_that_is_gone_is_a_clear_error() {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let err = Discovery::new(proc_root()).scan_process(pid).unwrap_err().to_string();
    assert_eq!(err, format!("/proc/{pid}/maps: No such file or directory (os error 2)"));
}
