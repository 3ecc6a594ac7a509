//! Bakes the build's identity into `heartrule_build_info`: the git commit
//! (`HEARTRULE_GIT_SHA` when the build sets it, e.g. a container build
//! without `.git`, else `git rev-parse`) and the compiler version.
use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=HEARTRULE_GIT_SHA");
    let git_sha = std::env::var("HEARTRULE_GIT_SHA")
        .ok()
        .filter(|sha| !sha.trim().is_empty())
        .or_else(git_head_sha);
    if let Some(sha) = git_sha {
        println!("cargo:rustc-env=HEARTRULE_GIT_SHA={}", sha.trim());
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    if let Some(version) = command_output(&rustc, &["--version"]) {
        println!("cargo:rustc-env=HEARTRULE_RUSTC_VERSION={version}");
    }
}

/// The short commit id, and rebuild triggers for when HEAD moves.
fn git_head_sha() -> Option<String> {
    let git_dir = command_output("git", &["rev-parse", "--absolute-git-dir"])?;
    let git_dir = Path::new(&git_dir);
    let mut watched = vec![git_dir.join("HEAD"), git_dir.join("packed-refs")];
    if let Some(head_ref) = command_output("git", &["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git_dir.join(head_ref));
    }
    // A watched path that does not exist would rerun this script on every build.
    for path in watched.iter().filter(|path| path.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    command_output("git", &["rev-parse", "--short=12", "HEAD"])
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}
