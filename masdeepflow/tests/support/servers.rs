//! Real HTTP servers for the tests: nginx (Debian package) and a Python
//! http.server that answers after a known delay.
use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until something accepts connections on `port` (bounded).
fn wait_listening(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening: {status}");
        }
        assert!(Instant::now() < deadline, "{what} did not listen on {port} within 15 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("masdeepflow-{name}-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(dir.join("www")).unwrap();
    dir
}

pub struct Nginx {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

/// Size of `/big.bin`, large enough that nginx sends it with sendfile.
pub const BIG: usize = 1 << 20;
/// Content of `/small.txt`.
pub const SMALL: &[u8] = b"small file served by nginx\n";

impl Nginx {
    pub fn start() -> Nginx {
        Nginx::start_as(Path::new("nginx"))
    }

    /// Started through `program` (a symlink to nginx gives its processes
    /// that command name).
    pub fn start_as(program: &Path) -> Nginx {
        Nginx::start_with(program, &[])
    }

    /// Serving these files too (paths under the document root).
    pub fn start_with(program: &Path, files: &[(&str, &[u8])]) -> Nginx {
        let dir = scratch_dir("nginx");
        let www = dir.join("www");
        for (path, content) in files {
            let file = www.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, content).unwrap();
        }
        std::fs::write(www.join("small.txt"), SMALL).unwrap();
        std::fs::write(www.join("big.bin"), vec![b'b'; BIG]).unwrap();
        let port = free_port();
        let conf = format!(
            "daemon off;\nworker_processes 1;\nerror_log {d}/error.log;\npid {d}/nginx.pid;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n access_log off;\n sendfile on;\n keepalive_requests 100000;\n\
             client_body_temp_path {d};\n proxy_temp_path {d};\n fastcgi_temp_path {d};\n uwsgi_temp_path {d};\n scgi_temp_path {d};\n\
             server {{ listen 127.0.0.1:{port}; root {d}/www; }}\n}}\n",
            d = dir.display()
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let mut child = Command::new(program)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdout(Stdio::null())
            .spawn()
            .expect("nginx (apt-get install nginx)");
        wait_listening(port, &mut child, "nginx");
        Nginx { child, port, dir }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT: graceful stop of master and workers.
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGQUIT) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Python http.server (HTTP/1.1, keep-alive) whose GETs answer after
/// `delay_ms` and whose POSTs read the body and answer 201.
pub struct SlowPython {
    child: Child,
    pub port: u16,
}

impl SlowPython {
    pub fn start(delay_ms: u64) -> SlowPython {
        let port = free_port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/helpers/slow_http.py");
        let mut child = Command::new("/usr/bin/python3")
            .args([script, &port.to_string(), &delay_ms.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3");
        wait_listening(port, &mut child, "python http.server");
        SlowPython { child, port }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for SlowPython {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
