#!/bin/sh
# In the guest (scripts/guest/run.sh, from scripts/bench-guest.ts): the guest-level bench rows on
# the virtio-fs share. fio writes one JSON report per job and a perl loop times the metadata rows;
# everything lands in $OUT/bench/ for the host to read.
#   BENCH_RUNTIME  seconds per fio job (default 10)      BENCH_SIZE   fio file size (default 128m)
#   BENCH_FILES    files created, stat'ed, unlinked (2000) BENCH_DIR_ENTRIES  readdir size (1500)
#   BENCH_READDIR_S seconds of readdir loop (default 5)
set -eu
R="$OUT/bench"
mkdir -p "$R"
RUNTIME="${BENCH_RUNTIME:-10}"
SIZE="${BENCH_SIZE:-128m}"
F="$SHARE/bench-fio.dat"

drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
fio_job() {
  name="$1"; shift
  drop
  fio --name="$name" --filename="$F" --size="$SIZE" --ioengine=psync --numjobs=1 --time_based \
      --runtime="$RUNTIME" --output-format=json --output="$R/$name.json" "$@"
  echo "bench: $name done"
}
# The sequential write lays the file out for the jobs after it.
fio_job seqwrite-1m-direct --rw=write --bs=1m --direct=1
fio_job seqread-1m --rw=read --bs=1m
fio_job randread-4k --rw=randread --bs=4k
fio_job randwrite-4k --rw=randwrite --bs=4k
rm -f "$F"

drop
perl - "$SHARE" "${BENCH_DIR_ENTRIES:-1500}" "${BENCH_READDIR_S:-5}" "${BENCH_FILES:-2000}" > "$R/meta.json" <<'PERL'
use strict;
use warnings;
use Fcntl qw(O_CREAT O_EXCL O_WRONLY);
use Time::HiRes qw(time);
my ($share, $entries, $readdir_s, $files) = @ARGV;

# readdir: a directory of $entries files with names as long as the posix suite's, listed over
# and over (opendir, readdir to the end, closedir); every listing must see every file.
my $rd = "$share/bench-readdir";
mkdir $rd or die "mkdir $rd: $!";
for my $i (1 .. $entries) {
  my $p = sprintf("%s/entry-with-a-rather-long-name-to-fill-the-buffers-%05d", $rd, $i);
  sysopen(my $fh, $p, O_CREAT | O_EXCL | O_WRONLY) or die "create $p: $!";
  close $fh;
}
system("sync; echo 3 > /proc/sys/vm/drop_caches");
my ($listings, $t0) = (0, time);
while (time - $t0 < $readdir_s) {
  opendir(my $dh, $rd) or die "opendir: $!";
  my $n = grep { $_ ne '.' && $_ ne '..' } readdir $dh;
  closedir $dh;
  die "a listing saw $n of $entries entries" unless $n == $entries;
  $listings++;
}
my $readdir_rate = $listings / (time - $t0);

# create, stat, unlink: $files empty files in a fresh directory, each pass timed on its own.
my $md = "$share/bench-meta";
mkdir $md or die "mkdir $md: $!";
my @names = map { sprintf("%s/f%06d", $md, $_) } 1 .. $files;
my $t = time;
for my $p (@names) { sysopen(my $fh, $p, O_CREAT | O_EXCL | O_WRONLY) or die "create $p: $!"; close $fh; }
my $create_rate = $files / (time - $t);
system("sync; echo 3 > /proc/sys/vm/drop_caches");
$t = time;
for my $p (@names) { my @s = lstat($p) or die "stat $p: $!"; }
my $stat_rate = $files / (time - $t);
$t = time;
for my $p (@names) { unlink($p) or die "unlink $p: $!"; }
my $unlink_rate = $files / (time - $t);
rmdir $md or die "rmdir $md: $!";
unlink(glob("$rd/*")) == $entries or die "cleaning $rd";
rmdir $rd or die "rmdir $rd: $!";
printf('{"readdirListingsPerS":%.3f,"readdirEntries":%d,"createPerS":%.1f,"statPerS":%.1f,"unlinkPerS":%.1f,"files":%d}' . "\n",
  $readdir_rate, $entries, $create_rate, $stat_rate, $unlink_rate, $files);
PERL
echo "bench: meta done"
