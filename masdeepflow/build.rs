//! Builds the kernel programs (`masdeepflow-ebpf`) for the bpf target and
//! leaves the objects in OUT_DIR, where `loader.rs` and `gateway/kernel.rs`
//! embed them, without their DWARF sections: the loader needs the programs,
//! maps, BTF and BTF.ext, and DWARF was about two thirds of the bytes;
//! then deflated, as `embedded.rs` takes them.
use std::path::Path;

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    // `-Z build-std=core` is needed for the bpf target; stable rustc accepts
    // it with RUSTC_BOOTSTRAP=1, which aya-build passes to its cargo.
    // SAFETY: the build script is single-threaded here.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../masdeepflow-ebpf");
    aya_build::build_ebpf(
        [aya_build::Package { name: "masdeepflow-ebpf", root_dir: root, ..Default::default() }],
        aya_build::Toolchain::Custom("stable"),
    )?;
    let out = std::env::var_os("OUT_DIR").context("OUT_DIR not set")?;
    // The agent's object and the gateway's (`loader.rs`, `gateway/kernel.rs`).
    for name in ["masdeepflow-ebpf", "masdeepflow-gateway-ebpf"] {
        let object = Path::new(&out).join(name);
        strip_dwarf(&object).with_context(|| format!("stripping DWARF from {}", object.display()))?;
        // Embedded deflated (`embedded.rs`): a quarter of the bytes.
        let bytes = std::fs::read(&object)?;
        std::fs::write(object.with_extension("deflate"), miniz_oxide::deflate::compress_to_vec(&bytes, 9))?;
    }
    Ok(())
}

/// Rewrites the ELF object at `path` without `.debug_*` sections and their
/// relocations (`.BTF` and `.BTF.ext` stay).
fn strip_dwarf(path: &Path) -> anyhow::Result<()> {
    let data = std::fs::read(path)?;
    let mut builder = object::build::elf::Builder::read(&*data)?;
    for section in builder.sections.iter_mut() {
        let name = section.name.to_string();
        let target = name.strip_prefix(".rela").or_else(|| name.strip_prefix(".rel")).unwrap_or(&name);
        if target.starts_with(".debug_") {
            section.delete = true;
        }
    }
    // LLVM's BPF objects name their sections in `.strtab`; the writer wants
    // a section-name table of its own.
    let shstrtab = builder.sections.add();
    shstrtab.name = b".shstrtab"[..].into();
    shstrtab.sh_type = object::elf::SHT_STRTAB;
    shstrtab.sh_addralign = 1;
    shstrtab.data = object::build::elf::SectionData::SectionString;
    let mut out = Vec::with_capacity(data.len());
    builder.write(&mut out)?;
    std::fs::write(path, out)?;
    Ok(())
}
