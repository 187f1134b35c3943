#!/bin/bash
# Output compatibility check: run one -c script through qemu-io and rig io on two fresh 4M raw
# files and diff the outputs with the timing normalised. Prints nothing when they match.
# stdout and stderr are compared separately (qemu-io buffers stdout, so merged order differs).
# Usage: bench/compat.sh [extra rig/qemu-io options, e.g. -t none]
set -u
cd "$(dirname "$0")/.." || exit 2
RIG=${RIG:-.venv/bin/rig}
DIR=${DIR:-/var/tmp}
a=$(mktemp "$DIR/compat-qemu.XXXXXX") b=$(mktemp "$DIR/compat-rig.XXXXXX")
trap 'rm -f "$a" "$b" "$a".out "$b".out "$a".err "$b".err' EXIT
truncate -s 4M "$a" "$b"
set -- "$@" \
  -c "write -P 0x5a 0 64k" -c "read -P 0x5a 0 64k" -c "read -P 0x5b 0 4k" \
  -c "read -P 0x5a -s 512 -l 1k 0 4k" -c "read -v 0 32" -c "read -C 0 4k" \
  -c "readv -P 0x5a 0 4k 8k 512" -c "writev -P 0x11 8k 4k 4k" -c "readv -v 8k 16 16" \
  -c "write -z 4k 4k" -c "read -P 0 4k 4k" -c "write -z -u 12k 4k" -c "discard 64k 64k" \
  -c "read -P 0 64k 64k" -c "flush" -c "write -P 0x33 1M 1M" -c "read -P 0x33 1M 1M" \
  -c "write 2M 4k" -c "read -P 0xcd 2M 4k" -c "write -q -P 7 3M 4k" -c "read -q -P 8 3M 4k" \
  -c "aio_write -P 0x44 128k 4k" -c "aio_write -q 132k 4k 4k" -c "aio_flush" \
  -c "read -P 0x44 128k 4k" -c "read -P 0xcd 132k 8k" \
  -c "write -C 0 512" -c "writev -C 512 512" -c "discard -C 0 512" \
  -c "read 4M 512" -c "read 4095k 2k" -c "write 4M 1" -c "read -P 256 0 1" \
  -c "read -P x 0 1" -c "read -x 0 1" -c "read 0" -c "read 0 1 2" -c "read 1k" \
  -c "read abc 1" -c "read 0 1q" -c "read 0x 1" -c "read 0 1.5" -c "read 0 1.5k" \
  -c "write -z -P 1 0 1" -c "write -u 0 1" -c "write -n 0 1" -c "readv 0" \
  -c "read -s 1 0 4" -c "read -P 1 -l 8 0 4" -c "nosuchcmd" -c "length" -c "info" \
  -c "read 0 3G" -c "write -P 0x99 7 9" -c "read -P 0x99 7 9" -c "read -v 0 20" -c "read -C 0 0" \
  -c "write 0 0" -c "alloc 0 4k" -c "quit" -c "read 0 1"
qemu-io -f raw "$@" "$a" >"$a.out" 2>"$a.err"; echo "exit $?" >>"$a.out"
$RIG io -f raw "$@" "$b" >"$b.out" 2>"$b.err"; echo "exit $?" >>"$b.out"
norm='s/[0-9]* ops; [0-9/:. sec]* \([0-9/.inf]* [EPTGMKiBbytes]*\/sec and [0-9/.inf]* ops\/sec\)/X ops; TIME/'
csv='s/^([0-9]+),([0-9]+),[0-9:.]+,[0-9.inf]+,[0-9.inf]+$/\1,\2,CSVTIME/'
rc=0
diff <(sed -E "$norm; $csv" "$a.out") <(sed -E "$norm; $csv" "$b.out") || rc=1
diff <(sed -E "s/^qemu-io: //" "$a.err") <(sed -E "s/^rig io: //" "$b.err") || rc=1
exit $rc
