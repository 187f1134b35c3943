#!/bin/bash
# Output compatibility check: run one -c script through qemu-io and rig io on two fresh 4M raw
# files and diff the outputs with the timing normalised. Prints nothing when they match.
# stdout and stderr are compared separately (qemu-io buffers stdout, so merged order differs).
# Usage: bench/compat.sh [--stdin] [extra rig/qemu-io options, e.g. -t none]
#   --stdin: feed the commands on standard input (one per line) instead of as -c options.
set -u
cd "$(dirname "$0")/.." || exit 2
RIG=${RIG:-.venv/bin/rig}
DIR=${DIR:-/var/tmp}
a=$(mktemp "$DIR/compat-qemu.XXXXXX") b=$(mktemp "$DIR/compat-rig.XXXXXX")
trap 'rm -f "$a" "$b" "$a".out "$b".out "$a".err "$b".err "$a".in' EXIT
truncate -s 4M "$a" "$b"
stdin=0
if [ "${1:-}" = --stdin ]; then stdin=1; shift; fi
cmds=(
  "write -P 0x5a 0 64k"
  "read -P 0x5a 0 64k"
  "read -P 0x5b 0 4k"
  "read -P 0x5a -s 512 -l 1k 0 4k"
  "read -v 0 32"
  "read -C 0 4k"
  "readv -P 0x5a 0 4k 8k 512"
  "writev -P 0x11 8k 4k 4k"
  "readv -v 8k 16 16"
  "write -z 4k 4k"
  "read -P 0 4k 4k"
  "write -z -u 12k 4k"
  "discard 64k 64k"
  "read -P 0 64k 64k"
  "flush"
  "write -P 0x33 1M 1M"
  "read -P 0x33 1M 1M"
  "write 2M 4k"
  "read -P 0xcd 2M 4k"
  "write -q -P 7 3M 4k"
  "read -q -P 8 3M 4k"
  "aio_write -P 0x44 128k 4k"
  "aio_write -q 132k 4k 4k"
  "aio_flush"
  "read -P 0x44 128k 4k"
  "read -P 0xcd 132k 8k"
  "write -C 0 512"
  "writev -C 512 512"
  "discard -C 0 512"
  "read 4M 512"
  "read 4095k 2k"
  "write 4M 1"
  "read -P 256 0 1"
  "read -P x 0 1"
  "read -x 0 1"
  "read 0"
  "read 0 1 2"
  "read 1k"
  "read abc 1"
  "read 0 1q"
  "read 0x 1"
  "read 0 1.5"
  "read 0 1.5k"
  "write -z -P 1 0 1"
  "write -u 0 1"
  "write -n 0 1"
  "readv 0"
  "read -s 1 0 4"
  "read -P 1 -l 8 0 4"
  "nosuchcmd"
  "length"
  "info"
  "read 0 3G"
  "write -P 0x99 7 9"
  "read -P 0x99 7 9"
  "read -v 0 20"
  "read -C 0 0"
  "write 0 0"
  "alloc 0 4k"
  "w -P 0x12 0 512"
  "w 512 512"
  "r -P 0xcd 512 512"
  "r -P 0x12 0 512"
  "read -q 0 512"
  "read -v 0 512"
  "w -P 0x12 0 512"
  "read  -q  0  512"
  " read -P 0x12 0 512"
  "read -- 0 512"
  "read -qv 0 16"
  "read -vP0x12 0 16"
  "write -P 1 0 1k"
  "write -P 1 1k 1k"
  "write -P 2 2k 1k"
  "readv -P 1 0 1k 1k"
  "quit"
  "read 0 1"
)
if [ $stdin = 1 ]; then
  printf '%s\n' "${cmds[@]}" >"$a.in"
else
  for c in "${cmds[@]}"; do set -- "$@" -c "$c"; done
  : >"$a.in"
fi
qemu-io -f raw "$@" "$a" <"$a.in" >"$a.out" 2>"$a.err"; echo "exit $?" >>"$a.out"
$RIG io -f raw "$@" "$b" <"$a.in" >"$b.out" 2>"$b.err"; echo "exit $?" >>"$b.out"
norm='s/[0-9]* ops; [0-9/:. sec]* \([0-9/.inf]* [EPTGMKiBbytes]*\/sec and [0-9/.inf]* ops\/sec\)/X ops; TIME/'
csv='s/^((qemu-io> )*[0-9]+,[0-9]+),[0-9:.]+,[0-9.inf]+,[0-9.inf]+$/\1,CSVTIME/'
rc=0
diff <(sed -E "$norm; $csv" "$a.out") <(sed -E "$norm; $csv" "$b.out") || rc=1
diff <(sed -E "s/^qemu-io: //" "$a.err") <(sed -E "s/^rig io: //" "$b.err") || rc=1
exit $rc
