//! A real MariaDB server for the tests (Debian's `mariadb-server`): a data
//! directory made by `mariadb-install-db` in a temporary directory,
//! `mariadbd` on a free 127.0.0.1 port with its own Unix socket and a
//! self-signed certificate made with openssl, the `shop` schema the tests
//! query, stopped and removed when dropped. The tests' own bookkeeping
//! (schema set-up, `SHOW GLOBAL STATUS`) goes through the Unix socket, which
//! the agent does not trace (TCP only), so it never mixes with what is
//! measured.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use super::servers::free_port;

pub struct MariaDb {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

/// The schema every test starts from: 3 items, 5,000 numbered rows, an
/// auto-increment table, a procedure returning two result sets.
const SCHEMA: &str = "
CREATE DATABASE shop;
CREATE DATABASE other;
CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY 'secret';
GRANT ALL ON *.* TO 'app'@'127.0.0.1';
USE shop;
CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(32), price INT);
INSERT INTO items VALUES (1,'apple',3),(2,'pear',4),(3,'plum',5);
CREATE TABLE seq5000 (n INT PRIMARY KEY, pad VARCHAR(40));
INSERT INTO seq5000 SELECT seq, CONCAT('row-', seq) FROM seq_1_to_5000;
CREATE TABLE orders (id INT AUTO_INCREMENT PRIMARY KEY, item INT, qty INT);
DELIMITER //
CREATE PROCEDURE two_sets() BEGIN SELECT id FROM items WHERE id < 3; SELECT name FROM items WHERE id = 3; END//
DELIMITER ;
";

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

impl MariaDb {
    /// Starts a server with the `shop` schema.
    pub fn start() -> MariaDb {
        MariaDb::start_as(Path::new("/usr/sbin/mariadbd"))
    }

    /// Started through `program` (a symlink to mariadbd gives the server
    /// that command name).
    pub fn start_as(program: &Path) -> MariaDb {
        super::require_root();
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("mdf-mariadb-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        run(Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1", "-keyout"])
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("cert.pem"))
            .stderr(Stdio::null()));
        // Temporary files of its own: servers of tests running at once
        // must not share /tmp's names.
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        run(Command::new("chown").args(["-R", "mysql:mysql"]).arg(&dir));
        run(Command::new("mariadb-install-db")
            .env("TMPDIR", &tmp)
            .args(["--user=mysql", "--skip-test-db"])
            .arg(format!("--datadir={}", dir.join("data").display()))
            .stdout(Stdio::null()));
        let child = Command::new(program)
            .args(["--no-defaults", "--user=mysql", "--bind-address=127.0.0.1", "--local-infile=1", "--max-allowed-packet=64M"])
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--socket={}", dir.join("sock").display()))
            .arg(format!("--pid-file={}", dir.join("pid").display()))
            .arg(format!("--port={port}"))
            .arg(format!("--ssl-cert={}", dir.join("cert.pem").display()))
            .arg(format!("--ssl-key={}", dir.join("key.pem").display()))
            .arg(format!("--log-error={}", dir.join("log").display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd (apt-get install mariadb-server)");
        let mut db = MariaDb { child, port, dir };
        db.wait_ready();
        db.root(SCHEMA);
        db
    }

    /// Waits (bounded) until the server answers on its socket.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new("mariadb")
                .arg(format!("--socket={}", self.socket().display()))
                .args(["-uroot", "-e", "SELECT 1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
                panic!("mariadbd exited ({status}) before answering: {log}");
            }
            assert!(Instant::now() < deadline, "mariadbd did not answer within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("sock")
    }

    /// Runs SQL as root over the Unix socket (not traced); returns the
    /// output, tab separated, without column names.
    pub fn root(&self, sql: &str) -> String {
        let out = run(Command::new("mariadb").arg(format!("--socket={}", self.socket().display())).args(["-uroot", "-N", "-B", "-e", sql]));
        String::from_utf8(out.stdout).unwrap()
    }

    /// `SHOW GLOBAL STATUS` counters.
    pub fn status(&self) -> HashMap<String, u64> {
        self.root("SHOW GLOBAL STATUS")
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
            .collect()
    }

    /// The `mariadb` CLI as user `app` over TCP to this server, schema `shop`.
    pub fn cli(&self) -> Command {
        let mut c = Command::new("mariadb");
        c.args(["-h127.0.0.1", "-uapp", "-psecret", "--ssl=0", "--local-infile=1", "--max-allowed-packet=64M"])
            .arg(format!("-P{}", self.port))
            .arg("shop");
        c
    }

    /// The next value `orders.id` will take.
    pub fn next_order_id(&self) -> u64 {
        self.root("SELECT AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA='shop' AND TABLE_NAME='orders'")
            .trim()
            .parse()
            .unwrap()
    }
}

/// Counter changes between two `status()` readings.
pub fn delta(before: &HashMap<String, u64>, after: &HashMap<String, u64>, name: &str) -> u64 {
    after[name] - before[name]
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        // SIGTERM: a clean shutdown; bounded, then SIGKILL.
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
