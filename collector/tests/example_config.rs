//! The example config the README points people to loads: `sluice-collector --check` accepts it.

use std::process::Command;

#[test]
fn the_standalone_example_passes_check() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/standalone.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_sluice-collector"))
        .args(["--config", example, "--check"])
        .output()
        .expect("run sluice-collector");
    assert!(
        out.status.success(),
        "--check refused examples/standalone.yaml: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
