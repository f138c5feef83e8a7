//! Debian packages of any suite and architecture through a private apt
//! configuration: a sources list, package lists and cache in a folder of
//! our own, passed to apt with `-o` options. The host's apt sources, lists
//! and caches are never read for these packages nor changed.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result, bail};

use crate::setup::{output, run};

const MIRROR: &str = "http://deb.debian.org/debian";
const SECURITY: &str = "http://deb.debian.org/debian-security";
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// Package lists older than this are fetched again.
const LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

pub struct Apt {
    dir: PathBuf,
    /// Debian's architecture name (`amd64`, `arm64`).
    arch: &'static str,
}

impl Apt {
    /// The configuration for `suite` (with its security updates) and
    /// `arch`, kept in `dir`; package lists fetched when missing or a day old.
    pub fn new(dir: &Path, suite: &str, arch: &'static str) -> Result<Apt> {
        for d in ["lists/partial", "cache/archives/partial"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        let sources = format!(
            "deb [arch={arch} signed-by={KEYRING}] {MIRROR} {suite} main\n\
             deb [arch={arch} signed-by={KEYRING}] {SECURITY} {suite}-security main\n"
        );
        let list = dir.join("sources.list");
        let changed = std::fs::read_to_string(&list).ok().as_deref() != Some(sources.as_str());
        std::fs::write(&list, &sources)?;
        let apt = Apt { dir: dir.to_path_buf(), arch };
        let stamp = dir.join("lists/updated");
        let fresh = std::fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .is_ok_and(|t| SystemTime::now().duration_since(t).is_ok_and(|age| age < LISTS_MAX_AGE));
        if changed || !fresh {
            eprintln!("xtask: apt-get update for Debian {suite} {arch} (private configuration in {})", dir.display());
            run(apt.command("apt-get").args(["update", "-qq"])).context("apt-get update (private configuration)")?;
            std::fs::write(&stamp, "")?;
        }
        Ok(apt)
    }

    /// `program` (apt-get, apt-cache) with this configuration.
    fn command(&self, program: &str) -> Command {
        let d = self.dir.display();
        let mut cmd = Command::new(program);
        for opt in [
            format!("Dir::Etc::sourcelist={d}/sources.list"),
            "Dir::Etc::sourceparts=-".to_string(),
            format!("Dir::State::Lists={d}/lists"),
            format!("Dir::Cache={d}/cache"),
            format!("APT::Architecture={}", self.arch),
            format!("APT::Architectures::={}", self.arch),
            // Downloads land in folders the _apt user cannot write.
            "APT::Sandbox::User=root".to_string(),
        ] {
            cmd.arg("-o").arg(opt);
        }
        cmd
    }

    /// Names of the packages matching `regex`, newest first (compared by
    /// the numbers in their names, as kernel package names carry their
    /// version).
    pub fn search(&self, regex: &str) -> Result<Vec<String>> {
        let out = output(self.command("apt-cache").args(["search", "--names-only", regex]))?;
        let mut names: Vec<String> = out.lines().filter_map(|l| l.split(' ').next()).map(str::to_string).collect();
        let numbers = |n: &str| -> Vec<u64> { n.split(|c: char| !c.is_ascii_digit()).filter_map(|d| d.parse().ok()).collect() };
        names.sort_by_key(|n| std::cmp::Reverse(numbers(n)));
        Ok(names)
    }

    /// Downloads `package` and unpacks it into `into` (replaced).
    pub fn unpack(&self, package: &str, into: &Path) -> Result<()> {
        let work = self.dir.join("download");
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)?;
        eprintln!("xtask: fetching {package} ({})", self.arch);
        run(self.command("apt-get").args(["download", "-qq", package]).current_dir(&work))?;
        let deb = std::fs::read_dir(&work)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .with_context(|| format!("apt-get download {package} left no .deb"))?;
        let _ = std::fs::remove_dir_all(into);
        let status = Command::new("dpkg").arg("-x").arg(&deb).arg(into).status()?;
        if !status.success() {
            bail!("dpkg -x {} failed", deb.display());
        }
        std::fs::remove_dir_all(&work)?;
        Ok(())
    }
}
