//! Builds the kernel programs (`masdeepflow-ebpf`) for the bpf target and
//! leaves the object in OUT_DIR, where `loader.rs` embeds it.
fn main() -> anyhow::Result<()> {
    // `-Z build-std=core` is needed for the bpf target; stable rustc accepts
    // it with RUSTC_BOOTSTRAP=1, which aya-build passes to its cargo.
    // SAFETY: the build script is single-threaded here.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../masdeepflow-ebpf");
    aya_build::build_ebpf(
        [aya_build::Package { name: "masdeepflow-ebpf", root_dir: root, ..Default::default() }],
        aya_build::Toolchain::Custom("stable"),
    )
}
