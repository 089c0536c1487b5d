#!/usr/bin/env bash
# Run N shards of one wsstorm plan on N machines over ssh, then merge their results.
# See usage() below, and deploy/README.md.
#
# Remote command lines are built here, with every word quoted for the remote shell by q():
# expanding them on this side is the point.
# shellcheck disable=SC2029
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: run-shards.sh -H HOSTS -p PROFILE -t TARGET_URL [options]

Runs shard i of N of PROFILE on the i-th host of HOSTS (N = the number of hosts), all starting
at one wall-clock instant, copies each shard's results back and merges them:

  1. copies the wsstorm binary and the profile to every host (scp), and checks its clock;
  2. computes the common start once (now + DELAY, UTC, RFC 3339);
  3. starts `wsstorm run PROFILE --shard i/N --start-at START --target TARGET_URL` on host i;
  4. waits for every shard, copies host i's results.json (and report.html) to OUT/shard-i/;
  5. runs `wsstorm merge OUT/shard-*/results.json -o OUT/merged`.

Required:
  -H HOSTS       file with one ssh destination per line (host, user@host or an ~/.ssh/config
                 alias); blank lines and lines starting with # are skipped
  -p PROFILE     the wsstorm profile (YAML) to run
  -t TARGET_URL  the server every shard connects to (ws://... or wss://...). A sharded run
                 cannot use the embedded target: its drop-all/restart actions cannot be split

Options:
  -d DELAY       seconds from now to the common start, counted after the copies (default 30):
                 enough for ssh to start every shard
  -b BINARY      the wsstorm binary to copy to the hosts (default: `wsstorm` on the PATH); it
                 must run on the hosts (same architecture, a glibc at least as new)
  -m MERGER      the wsstorm that runs the merge here (default: BINARY)
  -o OUT         local results directory (default: results)
  -r REMOTE_DIR  working directory on the hosts (default: /tmp/wsstorm-shard)
  -h             print this help and exit

ssh runs with BatchMode=yes (keys or an agent, no password prompts); set anything else
(user, port, jump host) in ~/.ssh/config. The hosts' clocks must agree (NTP): the script
warns when one is more than a second off. Exit status: 0 when every shard ran and the merge
succeeded, 1 otherwise, 2 for bad arguments.

Example:
  deploy/ssh/run-shards.sh -H hosts.txt -p profiles/load.yaml -t ws://10.0.0.5:8080/ws -d 60
EOF
}

die() {
    echo "run-shards: $*" >&2
    exit 2
}

fail() {
    echo "run-shards: $*" >&2
    exit 1
}

# Quote a word for the remote shell (ssh joins its arguments into one command line).
q() {
    printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
}

# The UTC RFC 3339 form of a Unix time, with GNU date or BSD date.
rfc3339() {
    date -u -d "@$1" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || date -u -r "$1" +%Y-%m-%dT%H:%M:%SZ
}

hosts_file="" profile="" target="" delay=30 binary="" merger="" out="results"
remote_dir="/tmp/wsstorm-shard"
while getopts ":H:p:t:d:b:m:o:r:h" opt; do
    case "$opt" in
        H) hosts_file=$OPTARG ;;
        p) profile=$OPTARG ;;
        t) target=$OPTARG ;;
        d) delay=$OPTARG ;;
        b) binary=$OPTARG ;;
        m) merger=$OPTARG ;;
        o) out=$OPTARG ;;
        r) remote_dir=$OPTARG ;;
        h)
            usage
            exit 0
            ;;
        :) die "-$OPTARG needs a value (-h for help)" ;;
        *) die "unknown option -$OPTARG (-h for help)" ;;
    esac
done
shift $((OPTIND - 1))
[ $# -eq 0 ] || die "unexpected argument: $1 (-h for help)"

[ -n "$hosts_file" ] || die "no hosts file: -H HOSTS (-h for help)"
[ -n "$profile" ] || die "no profile: -p PROFILE (-h for help)"
[ -n "$target" ] || die "no target: -t TARGET_URL (-h for help)"
[ -r "$hosts_file" ] || die "cannot read the hosts file $hosts_file"
[ -r "$profile" ] || die "cannot read the profile $profile"
case "$target" in
    ws://* | wss://*) ;;
    *) die "the target must be a ws:// or wss:// URL, not $target" ;;
esac
case "$delay" in
    '' | *[!0-9]*) die "the delay must be whole seconds, not $delay" ;;
esac
if [ -z "$binary" ]; then
    binary=$(command -v wsstorm) || die "no wsstorm on the PATH: give the binary with -b"
fi
if [ ! -f "$binary" ] || [ ! -x "$binary" ]; then
    die "$binary is not an executable file"
fi
merger=${merger:-$binary}
command -v ssh >/dev/null || die "ssh is not installed"
command -v scp >/dev/null || die "scp is not installed"

hosts=()
while IFS= read -r line || [ -n "$line" ]; do
    line=${line%%#*}
    host=""
    read -r host _ <<<"$line" || true
    if [ -n "$host" ]; then
        hosts+=("$host")
    fi
done <"$hosts_file"
n=${#hosts[@]}
[ "$n" -gt 0 ] || die "no hosts in $hosts_file"

ssh_opts=(-o BatchMode=yes -o ConnectTimeout=10)
remote_bin="$remote_dir/wsstorm"
remote_profile="$remote_dir/profile.yaml"

# 1. Copy the binary and the profile everywhere, and compare clocks.
for i in "${!hosts[@]}"; do
    h=${hosts[$i]}
    echo "run-shards: shard $i/$n on $h: copying wsstorm and $(basename "$profile")"
    ssh "${ssh_opts[@]}" "$h" "mkdir -p $(q "$remote_dir")" ||
        fail "cannot reach $h over ssh (or make $remote_dir there)"
    scp -q "${ssh_opts[@]}" "$binary" "$h:$remote_bin" || fail "cannot copy $binary to $h"
    scp -q "${ssh_opts[@]}" "$profile" "$h:$remote_profile" || fail "cannot copy $profile to $h"
    remote_now=$(ssh "${ssh_opts[@]}" "$h" "date -u +%s") || fail "cannot read the clock of $h"
    skew=$((remote_now - $(date -u +%s)))
    if [ "${skew#-}" -gt 1 ]; then
        echo "run-shards: WARNING $h's clock is ${skew}s off this machine's: shards start apart" >&2
    fi
done

# 2. One start for all, computed once.
start=$(rfc3339 $(($(date -u +%s) + delay)))
echo "run-shards: $n shards start at $start"

# 3. Start every shard. Each remote shell records its pid (then execs wsstorm), so an
#    interrupted run can stop the shards it started.
pids=()
# shellcheck disable=SC2317,SC2329 # run by the trap below
stop_shards() {
    echo "run-shards: interrupted: stopping the shards" >&2
    for i in "${!hosts[@]}"; do
        ssh "${ssh_opts[@]}" "${hosts[$i]}" \
            "kill -TERM \$(cat $(q "$remote_dir/shard-$i.pid")) 2>/dev/null" || true
    done
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    exit 130
}
trap stop_shards INT TERM

for i in "${!hosts[@]}"; do
    h=${hosts[$i]}
    mkdir -p "$out/shard-$i"
    remote_out="$remote_dir/shard-$i"
    cmd="rm -rf $(q "$remote_out") && echo \$\$ > $(q "$remote_out.pid") && exec $(q "$remote_bin")"
    cmd+=" run $(q "$remote_profile") --shard $i/$n --start-at $(q "$start")"
    cmd+=" --target $(q "$target") --out $(q "$remote_out") --no-tui"
    ssh "${ssh_opts[@]}" "$h" "$cmd" </dev/null >"$out/shard-$i/run.log" 2>&1 &
    pids+=($!)
done

# 4. Wait for each, and bring its results back.
failed=0
for i in "${!hosts[@]}"; do
    h=${hosts[$i]}
    code=0
    wait "${pids[$i]}" || code=$?
    if [ "$code" -ne 0 ]; then
        echo "run-shards: shard $i/$n on $h exited $code (log: $out/shard-$i/run.log)" >&2
        failed=1
    fi
    if scp -q "${ssh_opts[@]}" "$h:$remote_dir/shard-$i/results.json" "$out/shard-$i/"; then
        scp -q "${ssh_opts[@]}" "$h:$remote_dir/shard-$i/report.html" "$out/shard-$i/" 2>/dev/null || true
        echo "run-shards: shard $i/$n on $h: $out/shard-$i/results.json"
    else
        echo "run-shards: shard $i/$n on $h wrote no results.json" >&2
        failed=1
        missing=1
    fi
done
trap - INT TERM

# 5. Merge, when every shard brought results back (a merge of some shards is not the plan).
if [ -n "${missing:-}" ]; then
    fail "not merging: some shards have no results (see their run.log under $out/)"
fi
files=()
for i in "${!hosts[@]}"; do
    files+=("$out/shard-$i/results.json")
done
"$merger" merge "${files[@]}" -o "$out/merged" || fail "wsstorm merge failed"
echo "run-shards: merged results in $out/merged"
exit "$failed"
