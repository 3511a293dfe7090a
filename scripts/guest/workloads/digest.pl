#!/usr/bin/perl
# digest.pl DIR — a deterministic description of the tree under DIR, one line per entry, sorted
# bytewise by path (DIR itself is ".").  Fields, tab-separated:
#   path  type  mode(octal, perm+suid/sgid/sticky)  uid:gid  nlink  size  content  xattrs
#   type:    f d l p s c b
#   size:    file size for f, "-" otherwise (directory sizes depend on the host fs's history)
#   content: sha256 for f, link target for l, major:minor for c/b, "-" otherwise
#   xattrs:  name=hexvalue,... sorted ("-" when none)
# Times and inode numbers are left out on purpose, so two runs (C virtiofsd vs ours) diff clean.
# The last line is "total <entries> <sha256 of all lines above>".
# Runs on the host too (same perl), so the host's view of the shared dir can be compared.
use strict;
use warnings;
use Digest::SHA;
use Fcntl ':mode';

my $root = shift @ARGV or die "usage: digest.pl DIR\n";
$root =~ s{/+$}{} unless $root eq '/';

# x86_64 syscall numbers: lgetxattr 192, llistxattr 195
sub xattrs {
    my ($p) = @_;
    my $buf = "\0" x 65536;
    my $n = syscall(195, $p, $buf, length $buf);
    return '-' if $n <= 0;
    my @names = sort grep { length } split /\0/, substr($buf, 0, $n);
    my @out;
    for my $name (@names) {
        my $v = "\0" x 65536;
        my $m = syscall(192, $p, $name, $v, length $v);
        push @out, $m < 0 ? "$name=?" : "$name=" . unpack('H*', substr($v, 0, $m));
    }
    return @out ? join(',', @out) : '-';
}

my @lines;
sub walk {
    my ($rel) = @_;
    my $p = $rel eq '.' ? $root : "$root/$rel";
    my @st = lstat($p) or die "lstat $p: $!\n";
    my ($mode, $nlink, $uid, $gid, $rdev, $size) = @st[2, 3, 4, 5, 6, 7];
    my ($type, $sz, $content) = ('?', '-', '-');
    if (S_ISREG($mode)) {
        $type = 'f'; $sz = $size;
        my $sha = Digest::SHA->new(256);
        open(my $fh, '<:raw', $p) or die "open $p: $!\n";
        $sha->addfile($fh);
        close $fh;
        $content = $sha->hexdigest;
    } elsif (S_ISDIR($mode))  { $type = 'd';
    } elsif (S_ISLNK($mode))  { $type = 'l'; $content = readlink($p) // die "readlink $p: $!\n";
    } elsif (S_ISFIFO($mode)) { $type = 'p';
    } elsif (S_ISSOCK($mode)) { $type = 's';
    } elsif (S_ISCHR($mode))  { $type = 'c'; $content = (($rdev >> 8) & 0xfff) . ':' . (($rdev & 0xff) | (($rdev >> 12) & 0xfff00));
    } elsif (S_ISBLK($mode))  { $type = 'b'; $content = (($rdev >> 8) & 0xfff) . ':' . (($rdev & 0xff) | (($rdev >> 12) & 0xfff00));
    }
    push @lines, join("\t", $rel, $type, sprintf('%04o', S_IMODE($mode)), "$uid:$gid", $nlink, $sz,
                      $content, xattrs($p));
    if ($type eq 'd') {
        opendir(my $dh, $p) or die "opendir $p: $!\n";
        my @ents = sort grep { $_ ne '.' && $_ ne '..' } readdir($dh);
        closedir $dh;
        walk($rel eq '.' ? $_ : "$rel/$_") for @ents;
    }
}
walk('.');
# walk() is depth-first with sorted siblings; sort the full list bytewise for a flat order.
@lines = sort { (split /\t/, $a)[0] cmp (split /\t/, $b)[0] } @lines;
my $all = join("\n", @lines) . "\n";
print $all;
printf "total %d %s\n", scalar(@lines), Digest::SHA::sha256_hex($all);
