# Sourced by scripts/test: the viewer's screen is tested in tmux, the HTML report in
# headless Chromium (Debian's packages).  As root, install whichever is missing and say so
# on stderr; with MEMSTREAM_NO_INSTALL=1, or when that cannot be, the tests that need
# them are skipped, and this says that instead.
missing=()
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
  || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  if [ -n "${MEMSTREAM_NO_INSTALL:-}" ] || [ "$(id -u)" != 0 ] \
    || ! command -v apt-get >/dev/null 2>&1; then
    echo "test: no ${missing[*]}: the tests that need them are skipped" >&2
  else
    echo "test: installing ${missing[*]} with apt-get for the tests that need them" \
      "(MEMSTREAM_NO_INSTALL=1 skips those tests instead)" >&2
    (apt-get update -qq && apt-get install -y -qq "${missing[@]}") >/dev/null 2>&1 \
      || echo "test: could not install ${missing[*]}; the tests that need them are skipped" >&2
  fi
fi
