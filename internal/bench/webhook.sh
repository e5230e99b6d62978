#!/usr/bin/env bash
# Webhook load test against a real `blockwire serve` process (make bench-webhook).
#
# Starts bin/blockwire serve on free loopback ports (never the defaults
# 8080/4222, which a `make run` may hold) with a throwaway --data-dir and a
# random webhook token, waits for /readyz, runs bin/blockwire-load against it
# (which also measures its reference: decode + JetStream publish in a separate
# process on the same NATS server), then stops serve with SIGTERM. serve keeps
# its default log level (info): the figure that matters is the one with logging
# on; its logs go to a file in the temporary directory, not to the terminal.
#
# Usage: internal/bench/webhook.sh [extra blockwire-load flags...]
#   BENCH_CONCURRENCY (64), BENCH_N (20000), BENCH_RUNS (3): -c, -n and -runs.
#   BIN (bin): where blockwire and blockwire-load are (`make build`).
# Exit status: blockwire-load's (1 when a run had more than 1% errors), or 1
# when serve fails to start or to stop cleanly.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.." # the repository root, wherever this is called from
BIN=${BIN:-bin}
for b in blockwire blockwire-load; do
	if [[ ! -x $BIN/$b ]]; then
		echo "webhook.sh: $BIN/$b not found; run \`make build\` first" >&2
		exit 1
	fi
done

# --- the machine ------------------------------------------------------------
echo "== machine"
echo "host:    $(uname -srm)"
echo "cpus:    $(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN)"
if [[ -r /proc/cpuinfo ]]; then
	echo "model:   $(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
fi
if [[ -r /proc/meminfo ]]; then
	awk '/^MemTotal:/ {t=$2} /^MemAvailable:/ {a=$2}
		END {printf "memory:  %.1f GiB total, %.1f GiB available\n", t/1048576, a/1048576}' /proc/meminfo
fi
if [[ -r /proc/loadavg ]]; then
	echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"
fi
echo "build:   $("$BIN/blockwire" version 2>/dev/null | head -n1 || true), $(go version "$BIN/blockwire" 2>/dev/null | awk "{print \$2}" || true)"
echo

# --- cleanup, whatever happens ----------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/blockwire-bench.XXXXXX")
serve_pid=
load_pid=
interrupted=
phase=startup # startup, load, stop

# stop_serve sends SIGTERM and waits (serve's own shutdown is bounded at 15s);
# SIGKILL after 30s. Returns serve's exit status.
stop_serve() {
	local pid=$serve_pid status=0 i
	[[ -n $pid ]] || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 300; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "webhook.sh: serve (pid $pid) still running 30s after SIGTERM; killing it" >&2
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || status=$?
	serve_pid= # only now: a signal meanwhile must not leave serve behind
	return "$status"
}

cleanup() {
	local status=$?
	trap - EXIT INT TERM
	if [[ -n $load_pid ]] && kill -0 "$load_pid" 2>/dev/null; then
		kill -TERM "$load_pid" 2>/dev/null || true
		wait "$load_pid" 2>/dev/null || true
	fi
	stop_serve || true
	if ((status != 0)) && [[ -z $interrupted && -s $tmp/serve.log ]]; then
		echo "--- last lines of serve's log ($tmp/serve.log, removed now):" >&2
		tail -n 20 "$tmp/serve.log" >&2 || true
	fi
	rm -rf "$tmp"
	exit "$status"
}
trap cleanup EXIT

# INT/TERM: before the load, clean up and leave; during the load, pass the
# signal on to blockwire-load (it stops, reports what it finished and deletes
# its reference stream) and carry on with stopping serve; while serve stops,
# just finish stopping it.
on_signal() {
	interrupted=$1
	case $phase in
	startup) exit 130 ;;
	load) kill -"$1" "$load_pid" 2>/dev/null || true ;;
	esac
}
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM

# --- free ports ---------------------------------------------------------------
# free_port prints a loopback TCP port nobody listens on and that is not in
# the arguments. python3 lets the kernel pick one; without it, random high
# ports are probed with bash's /dev/tcp (a refused connect means free).
free_port() {
	local p i taken
	for ((i = 0; i < 50; i++)); do
		if command -v python3 >/dev/null 2>&1; then
			p=$(python3 -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
		else
			p=$((20000 + RANDOM % 40000))
			if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
				continue # something listens there
			fi
		fi
		taken=
		for q in "$@"; do
			if [[ $p == "$q" ]]; then taken=1; fi
		done
		if [[ -z $taken ]]; then
			echo "$p"
			return 0
		fi
	done
	echo "webhook.sh: found no free port" >&2
	return 1
}
http_port=$(free_port 8080 4222)
nats_port=$(free_port 8080 4222 "$http_port")
base=http://127.0.0.1:$http_port
nats_url=nats://127.0.0.1:$nats_port

# --- serve ----------------------------------------------------------------------
# A fresh token per run, 32 hex characters; in the environment only, so it
# shows neither in `ps` nor in blockwire-load's report.
BLOCKWIRE_WEBHOOK_TOKEN=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
export BLOCKWIRE_WEBHOOK_TOKEN

# --ingest-only: this measures ingest (authentication, validation, metrics,
# logging, the awaited store), as the reference does; applying the incidents
# is the consumer's benchmark (go test -bench ./consumer), and running it
# here would make the webhook pay for work the reference never does.
# In its own session (setsid) so a Ctrl-C in the terminal does not reach serve
# while blockwire-load still needs its NATS server to delete the reference
# stream; this script stops serve itself, last.
setsid=()
command -v setsid >/dev/null 2>&1 && setsid=(setsid)
"${setsid[@]}" "$BIN/blockwire" serve \
	--http-addr "127.0.0.1:$http_port" \
	--nats-listen "127.0.0.1:$nats_port" \
	--data-dir "$tmp/data" \
	--ingest-only \
	>"$tmp/serve.log" 2>&1 &
serve_pid=$!
echo "== serve: pid $serve_pid, $base, embedded NATS $nats_url, data in $tmp/data, log level info to $tmp/serve.log"

# Wait for /readyz (HTTP up and NATS connected), at most 30s.
ready() {
	if command -v curl >/dev/null 2>&1; then
		curl -fsS -o /dev/null --max-time 2 "$base/readyz" 2>/dev/null
	else
		(
			exec 3<>"/dev/tcp/127.0.0.1/$http_port"
			printf 'GET /readyz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
			read -r -t 2 line <&3
			[[ $line == *" 200"* ]]
		) 2>/dev/null
	fi
}
for ((i = 0; ; i++)); do
	if ! kill -0 "$serve_pid" 2>/dev/null; then
		echo "webhook.sh: serve exited during startup" >&2
		exit 1
	fi
	ready && break
	if ((i >= 300)); then
		echo "webhook.sh: serve not ready after 30s ($base/readyz)" >&2
		exit 1
	fi
	sleep 0.1
done
echo "== serve ready after $(awk -v n="$i" 'BEGIN {printf "%.1f", n/10}')s"
echo

# --- load -----------------------------------------------------------------------
load_cmd=("$BIN/blockwire-load" -url "$base" -nats-url "$nats_url"
	-c "${BENCH_CONCURRENCY:-64}" -n "${BENCH_N:-20000}" -runs "${BENCH_RUNS:-3}" "$@")
echo "== ${load_cmd[*]}"
# In the background with `wait`, so a signal to this script is handled at once
# (on_signal passes it on) instead of after the whole load.
"${load_cmd[@]}" &
load_pid=$!
phase=load
while :; do
	load_status=0
	wait "$load_pid" || load_status=$?
	kill -0 "$load_pid" 2>/dev/null || break # not just a signal interrupting wait
done
phase=stop
load_pid=

# --- stop serve -------------------------------------------------------------------
echo
log_lines=$(wc -l <"$tmp/serve.log")
serve_status=0
stop_serve || serve_status=$?
echo "== serve stopped (exit status $serve_status); it logged $log_lines lines ($(du -h "$tmp/serve.log" | cut -f1)) at level info"
if [[ -r /proc/loadavg ]]; then
	echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min) at the end"
fi
if [[ -n $interrupted ]]; then
	exit 130
fi
if ((load_status == 0 && serve_status != 0)); then
	exit 1
fi
exit "$load_status"
