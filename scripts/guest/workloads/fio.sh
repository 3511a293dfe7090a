#!/bin/sh
# Workload "fio": 64 MiB sequential write with crc32c verify headers, verified in the same job,
# then verified again by a verify-only job after dropping the guest's page cache (reads come
# from the backend), then a small random-write/verify pass.  fio's verify headers carry
# timestamps, so the data file is removed afterwards (it cannot be digested deterministically).
set -eu
D="$1"
F="$D/fio.dat"
fio_run() { fio "$@" --filename="$F" --size=64m --bs=64k --ioengine=psync --numjobs=1 --verify=crc32c --group_reporting --output-format=terse --terse-version=3; }
echo "--- write+verify"
fio_run --name=seqwrite --rw=write --do_verify=1 --end_fsync=1 > /tmp/fio1.txt
cut -d';' -f1-5 /tmp/fio1.txt
sync; echo 3 > /proc/sys/vm/drop_caches
echo "--- verify-only after drop_caches"
fio_run --name=seqwrite --rw=write --verify_only > /tmp/fio2.txt
cut -d';' -f1-5 /tmp/fio2.txt
echo "--- random write 4k + verify (first 4 MiB of the file)"
fio --name=randwrite --filename="$F" --size=4m --bs=4k --rw=randwrite --ioengine=psync --numjobs=1 \
    --verify=crc32c --do_verify=1 --randrepeat=1 --random_generator=tausworthe64 \
    --output-format=terse --terse-version=3 > /tmp/fio3.txt
cut -d';' -f1-5 /tmp/fio3.txt
size="$(stat -c %s "$F")"
[ "$size" = 67108864 ] || { echo "not ok size $size"; exit 1; }
echo "ok fio size $size"
rm -f "$F" /tmp/fio[123].txt
echo "fio done" > "$D/fio.done"
