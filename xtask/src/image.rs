//! `cargo xtask image`: the container image, `FROM scratch` with only the
//! static binary of `cargo xtask dist` (deploy/Dockerfile), built with
//! buildah for amd64 and arm64 and gathered in a manifest list:
//! `localhost/masdeepflow:<version>` (the list) and
//! `localhost/masdeepflow:<version>-<amd64|arm64>` (each image). Needs
//! Debian's buildah (`.ci/run` installs it); pulls nothing.
use std::process::Command;

use anyhow::{Context as _, Result, ensure};

use crate::{
    dist::{self, ARCHES},
    setup::{run, workspace_root},
};

pub const NAME: &str = "localhost/masdeepflow";

pub fn tag() -> String {
    format!("{NAME}:{}", env!("CARGO_PKG_VERSION"))
}

fn buildah() -> Command {
    Command::new("buildah")
}

/// Builds both architectures' images from the binaries already in
/// target/dist/, and the manifest list.
pub fn build() -> Result<()> {
    let root = workspace_root();
    let list = tag();
    // Replaced, not amended: a list keeps every image ever added to it.
    let _ = buildah().args(["manifest", "rm", &list]).output();
    run(buildah().args(["manifest", "create", &list])).context("buildah manifest create (apt-get install buildah)")?;
    for arch in &ARCHES {
        let binary = dist::binary(arch);
        ensure!(binary.exists(), "{} is missing: run `cargo xtask dist`", binary.display());
        let image = format!("{list}-{}", arch.oci);
        run(buildah().current_dir(&root).args([
            "build",
            "--quiet",
            "--pull=never",
            "--platform",
            &format!("linux/{}", arch.oci),
            "-f",
            "deploy/Dockerfile",
            "-t",
            &image,
            ".",
        ]))?;
        run(buildah().args(["manifest", "add", &list, &format!("containers-storage:{image}")]))?;
        println!("image: {image}");
    }
    println!("image: {list} (manifest list of both)");
    Ok(())
}

/// `cargo xtask image`: the static binaries, then the images.
pub fn image() -> Result<()> {
    dist::dist()?;
    build()
}
