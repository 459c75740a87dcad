# Sourced by scripts/test: the viewer's screen is tested in tmux, the HTML report in
# headless Chromium, workers on other hosts through Debian's sshd in a network namespace
# (openssh-server: the tests start an sshd of their own, with their own keys and config;
# Debian starts its service as it installs it unless a policy-rc.d says no, as the one on
# these machines does).  As root,
# install whichever is missing and say so on stderr; with MEMSTREAM_NO_INSTALL=1, or when
# that cannot be, the tests that need them are skipped, and this says that instead.
missing=()
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
  || missing+=(chromium)
# sbin is not on every user's PATH; MEMSTREAM_SSHD says where to look instead (the tests
# of this script use it).
[ -x "${MEMSTREAM_SSHD:-/usr/sbin/sshd}" ] || missing+=(openssh-server)
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
