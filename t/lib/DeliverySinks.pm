# t/lib/DeliverySinks.pm: loopback SMTP and HTTP sinks for aimroute's Perl TAP tests.
#
# Starts test/servers/smtp_sink.py or http_sink.py with /usr/bin/python3 on
# 127.0.0.1, waits for its "ready <port>" line, and reads back the JSON lines
# it logs.  Every sink still running is stopped when the test ends.
#
#   use DeliverySinks;
#   my $smtp = start_smtp_sink(stall_seconds => 5);
#   # ... point aimroute at "smtp://127.0.0.1:$smtp->{port}" ...
#   my $got = wait_for_log($smtp, sub { grep { $_->{event} eq 'message' } @{ $_[0] } });
#   stop($smtp);
#
# A sink is a hashref (blessed, so $sink->stop also works) with kind, host,
# port, url, pid, log, stdout and stderr.
package DeliverySinks;

use strict;
use warnings;

use Cwd ();
use Exporter 'import';
use File::Basename qw(basename dirname);
use File::Spec;
use File::Temp qw(tempdir);
use JSON::PP ();
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep time);

our @EXPORT = qw(start_smtp_sink start_http_sink read_log wait_for_log stop);

our $PYTHON = '/usr/bin/python3';
our $SERVER_DIR =
  Cwd::abs_path(File::Spec->catdir(dirname(__FILE__), '..', '..', 'test', 'servers'));

my %running;      # pid => sink, for the END block
my $counter = 0;
my $temp_dir;

# default_timeout returns the polling limit in seconds: PostgreSQL's test default, else 180.
sub default_timeout
{
	no warnings 'once';
	return $PostgreSQL::Test::Utils::timeout_default
	  // $ENV{PG_TEST_TIMEOUT_DEFAULT} // 180;
}

# log_dir returns where sink logs go: tmp_check/log inside a PostgreSQL test, else a temp dir.
sub log_dir
{
	no warnings 'once';
	my $dir = $PostgreSQL::Test::Utils::log_path;
	return $dir if defined $dir && -d $dir;
	$temp_dir //= tempdir('delivery_sinks_XXXX', TMPDIR => 1, CLEANUP => 1);
	return $temp_dir;
}

# start_smtp_sink starts smtp_sink.py; options: port (default: any free one), log,
# stall_seconds, name, timeout.
sub start_smtp_sink
{
	my (%opts) = @_;
	return start_sink('smtp', 'smtp_sink.py', %opts);
}

# start_http_sink starts http_sink.py; options as for start_smtp_sink.
sub start_http_sink
{
	my (%opts) = @_;
	return start_sink('http', 'http_sink.py', %opts);
}

# start_sink forks the server, waits for its ready line and returns the sink.
sub start_sink
{
	my ($kind, $script, %opts) = @_;
	my $path = File::Spec->catfile($SERVER_DIR, $script);
	die "DeliverySinks: no server script at $path\n" unless -f $path;

	$counter++;
	my $test = basename($0, '.pl', '.t');
	my $name = $opts{name} // "${test}_${kind}_sink_$counter";
	my $dir = log_dir();
	my $log = $opts{log} // "$dir/$name.jsonl";
	my $stdout = "$dir/$name.stdout";
	my $stderr = "$dir/$name.stderr";
	unlink $stdout;
	unlink $log unless defined $opts{log};    # a given log is appended to

	my @cmd = ($PYTHON, $path, '--port', $opts{port} // 0, '--log', $log);
	push @cmd, '--stall-seconds', $opts{stall_seconds}
	  if defined $opts{stall_seconds};

	my $pid = fork;
	die "DeliverySinks: fork failed: $!\n" unless defined $pid;
	if ($pid == 0)
	{
		# Child: never return into the test (no END blocks, no TAP output).
		open(STDIN,  '<', '/dev/null') or POSIX::_exit(126);
		open(STDOUT, '>', $stdout)     or POSIX::_exit(126);
		open(STDERR, '>', $stderr)     or POSIX::_exit(126);
		exec { $cmd[0] } @cmd or POSIX::_exit(127);
	}

	my $sink = bless {
		kind => $kind,
		host => '127.0.0.1',
		pid => $pid,
		owner => $$,
		log => $log,
		stdout => $stdout,
		stderr => $stderr,
	}, __PACKAGE__;
	$running{$pid} = $sink;

	my $deadline = time + ($opts{timeout} // default_timeout());
	while (1)
	{
		if (open(my $fh, '<', $stdout))
		{
			my $text = do { local $/; <$fh> } // '';
			close $fh;
			if ($text =~ /^ready (\d+)$/m)
			{
				$sink->{port} = $1;
				last;
			}
		}
		if (waitpid($pid, WNOHANG) == $pid)
		{
			my $code = $? >> 8;
			delete $running{$pid};
			$sink->{pid} = undef;
			die "DeliverySinks: $script exited with code $code before it was ready: "
			  . slurp($stderr) . "\n";
		}
		if (time > $deadline)
		{
			stop($sink);
			die "DeliverySinks: $script not ready in time: " . slurp($stderr) . "\n";
		}
		sleep 0.05;
	}
	$sink->{url} = "$kind://127.0.0.1:$sink->{port}";
	return $sink;
}

# slurp returns a file's contents, or '' when it cannot be read.
sub slurp
{
	my ($file) = @_;
	open(my $fh, '<:raw', $file) or return '';
	local $/;
	my $text = <$fh>;
	close $fh;
	return $text // '';
}

# read_log returns an arrayref of the sink's logged events, optionally only those of one event type.
sub read_log
{
	my ($sink, $event) = @_;
	my @entries;
	open(my $fh, '<:raw', $sink->{log}) or return [];
	while (my $line = <$fh>)
	{
		last unless $line =~ /\n\z/;    # a line still being written
		push @entries, JSON::PP::decode_json($line);
	}
	close $fh;
	@entries = grep { $_->{event} eq $event } @entries if defined $event;
	return \@entries;
}

# wait_for_log polls until $check->(entries) is true and returns the entries, or undef on timeout.
sub wait_for_log
{
	my ($sink, $check, $timeout) = @_;
	my $deadline = time + ($timeout // default_timeout());
	while (1)
	{
		my $entries = read_log($sink);
		return $entries if $check->($entries);
		return undef if time > $deadline;
		sleep 0.1;
	}
}

# stop sends SIGTERM, waits up to 10 seconds, then SIGKILL; returns the exit status.
sub stop
{
	my ($sink) = @_;
	my $pid = $sink->{pid};
	return $sink->{exit_status} unless defined $pid && $sink->{owner} == $$;

	kill 'TERM', $pid;
	my $deadline = time + 10;
	while (waitpid($pid, WNOHANG) == 0)
	{
		if (time > $deadline)
		{
			kill 'KILL', $pid;
			waitpid($pid, 0);
			last;
		}
		sleep 0.05;
	}
	$sink->{exit_status} = $?;
	$sink->{pid} = undef;
	delete $running{$pid};
	return $sink->{exit_status};
}

# DESTROY stops a sink that goes out of scope while still running.
sub DESTROY
{
	my ($self) = @_;
	local ($?, $!, $@);
	stop($self) if defined $self->{pid};
}

END
{
	local $?;
	stop($_) for grep { $_->{owner} == $$ } values %running;
}

1;
