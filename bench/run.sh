#!/bin/sh
# bench/run.sh: the benchmark of issue 8 (make bench). Builds bouncer and
# the harness, then measures SMTP intake (smtp-sink, a go-smtp discard
# server and bouncer under the same load) and, unless STORE_RECORDS=0, the
# store at scale. Arguments go to "smtpbench run" (see -h), e.g.
#   sh bench/run.sh -m 5000 -s 20
# Environment: STORE_RECORDS (default 1000000), STORE_DOMAINS (50000).
set -eu
cd "$(dirname "$0")/.."

if ! command -v smtp-source >/dev/null 2>&1 && [ ! -x /usr/sbin/smtp-source ]; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "installing postfix for smtp-sink and smtp-source" >&2
		echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
		DEBIAN_FRONTEND=noninteractive apt-get install -y postfix >&2
	else
		echo "bench: smtp-sink and smtp-source are missing: install Debian's postfix package" >&2
		exit 1
	fi
fi

bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/bouncer" ./cmd/bouncer
go build -o "$bin/smtpbench" ./bench/smtpbench
go build -o "$bin/storefill" ./bench/storefill

echo "commit: $(git describe --always --dirty 2>/dev/null || echo 'not a git checkout')"
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM; $(uptime)"
"$bin/smtpbench" run -bouncer "$bin/bouncer" -sink "$(command -v smtp-sink || echo /usr/sbin/smtp-sink)" \
	-source "$(command -v smtp-source || echo /usr/sbin/smtp-source)" "$@"

if [ "${STORE_RECORDS:-1000000}" != 0 ]; then
	echo
	"$bin/storefill" -bouncer "$bin/bouncer" -n "${STORE_RECORDS:-1000000}" -domains "${STORE_DOMAINS:-50000}"
fi
echo "load at end: $(cut -d" " -f1-3 /proc/loadavg)"
