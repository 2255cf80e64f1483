# Sourced by the scripts: one cargo target dir outside the clone (reused across runs on the same
# machine, never required to exist), cargo on PATH, and the pinned toolchain resolvable offline.
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/openova-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# rust-toolchain.toml pins 1.95.0, the machine's installed stable. rustup cannot download here, so
# if the pin is not known by that name, link it to the installed stable when that is 1.95.0.
if command -v rustup >/dev/null 2>&1 && ! rustup toolchain list | grep -q '^1\.95\.0'; then
  stable_dir="$HOME/.rustup/toolchains/stable-x86_64-unknown-linux-gnu"
  if [ -x "$stable_dir/bin/rustc" ] && "$stable_dir/bin/rustc" --version | grep -q '^rustc 1\.95\.0'; then
    rustup toolchain link 1.95.0 "$stable_dir"
  fi
fi
