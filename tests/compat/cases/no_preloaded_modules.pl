# The host preloads nothing: a script using POSIX::floor or IO::Select without `use` fails as
# under plain perl, and %INC holds only what the script loaded.
use strict;
use warnings;

my @inc_at_load = sort keys %INC;
sub OMBackSync {
    my ($op, $id) = @_;
    open(my $fh, '>>', "$ENV{OvDataDir}/tmp/modules.txt") or die $!;
    if ($op eq 'Init') {
        print {$fh} "%INC at load: @inc_at_load\n";
        for my $sub (qw(POSIX::floor IO::Select::new File::Spec::catfile IO::Handle::autoflush Data::Dumper::Dumper)) {
            print {$fh} "$sub: ", (defined &{\&{$sub}} ? 'defined' : 'undefined'), "\n";
        }
    }
    my $floor = eval { no strict 'refs'; &{'POSIX::floor'}(2.5) };
    print {$fh} "$op: POSIX::floor without use POSIX: ", (defined $floor ? $floor : $@);
    close $fh;
    return 1;
}
1;
