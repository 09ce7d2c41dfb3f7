# t/005_fuzz.pl: hostile values at every function and input column.
#
# A cluster with the workers preloaded, the shipped postal codes and a small
# network, then, for a bounded time, statements built from hostile values:
# 1 MB strings, random Unicode (controls, combining marks, RTL overrides,
# noncharacters, emoji), SQL fragments, numbers and NaN/Infinity as text,
# postal codes with odd spacing and hyphens, wrong types through text
# literals.  They go to INSERT INTO leads (every input column), the staging
# table and process_staging(), normalize_country(), normalize_postal_code(),
# postal_code_is_valid(), locate_dealers(), route(), coverage(),
# coverage_geojson(), explain_lead(), reassign(), mark_viewed(),
# open_view_link(), send_lead(), record_bounce(), record_dsn(),
# record_delivery_event(), set_delivery_status_active(), adf_render(),
# lead_adf(), business_hours_valid(), business_hours_deadline(), the
# reference and delivery tables (dealers with NaN/Infinity
# locations included), settings (tie_break round_robin included, so leads
# and the locator take and read turns; Drive Distance on a road network
# around one dealer, with pgRouting in a schema of its own), re-routing,
# and load_postal_codes() on
# generated files (binary junk with NULs, shifted columns, giant lines,
# truncated gzip).  Deliveries go to loopback SMTP and HTTP sinks only:
# every endpoint the fuzzer writes is on 127.0.0.1 or refused by
# validation.
#
# Each statement runs in fuzz.run(), which records any error (SQLSTATE,
# message); invariants on results raise SQLSTATE FZ001 (FZ002: a known bug,
# reported as TODO).  After the run: the server never restarted and logged
# no crash; every lead committed has a dealer, a match type and an
# explanation; staging rows all have an outcome; loads account for every
# line; no error was XX000 or of an unclear class, and each had a message.
#
# Environment: AIMROUTE_FUZZ_SECONDS (default 20), AIMROUTE_FUZZ_SEED
# (default 1; the seed is printed).  A statement that crashed the server or
# broke an invariant is written to tmp_check/log/005_fuzz_*.sql.
#
# PostGIS placement: gis (t/lib/Placement.pm).
use strict;
use warnings;

use Encode ();
use IO::Compress::Gzip qw(gzip $GzipError);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

use DeliverySinks;
use Placement;

my $budget = $ENV{AIMROUTE_FUZZ_SECONDS} // 20;
my $seed = $ENV{AIMROUTE_FUZZ_SEED} // 1;
my $batch_size = 100;
srand($seed);
diag("fuzz: seed $seed, $budget s (AIMROUTE_FUZZ_SEED, AIMROUTE_FUZZ_SECONDS)");
$ENV{PGCLIENTENCODING} = 'UTF8';

my $smtp = start_smtp_sink();
my $http = start_http_sink();
my $http_url = "http://127.0.0.1:$http->{port}";

my $node = PostgreSQL::Test::Cluster->new('fuzz');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'aimroute'
aimroute.database = 'app'
aimroute.delivery_naptime = 1s
aimroute.reroute_naptime = 1s
restart_after_crash = off
log_line_prefix = '%m [%p] %e '
log_min_error_statement = panic
log_statement = none
});
$node->start;
$node->safe_psql('postgres',
	"CREATE DATABASE app ENCODING 'UTF8' LOCALE 'C' TEMPLATE template0");
Placement::install($node, 'app', Placement::pick('gis'));
$node->psql('app', 'SELECT aimroute.load_postal_codes(aimroute.bundled_postal_codes_path())');
$node->safe_psql(
	'app', qq{
	SET client_min_messages = warning;
	SET search_path = aimroute, public;
	INSERT INTO brands VALUES ('LKB', 'Lakeshore Boats'), ('RVX', 'RV Express');
	INSERT INTO dealers (dealer_number, name, country, postal_code, dealer_group, region) VALUES
	  ('HQ', 'Corporate', 'US', '00501', NULL, NULL),
	  ('D100', 'Island Marine', 'US', '49757', 'G1', 'Great Lakes'),
	  ('D200', 'Killarney Boats', 'CA', 'P0M 1A0', NULL, 'Canada'),
	  ('D300', 'Windy City RV', 'US', '60601', 'G1', 'Great Lakes'),
	  ('D400', 'Closed Marine', 'US', '10001', NULL, 'East'),
	  ('D500', 'Island Marine Twin', 'US', '49757', 'G1', 'Great Lakes');
	UPDATE dealers SET active_for_sales = false WHERE dealer_number = 'D400';
	-- D500 sits where D100 does: equally near, a tie for tie_break = 'round_robin'.
	INSERT INTO dealer_brands VALUES ('D100', 'LKB'), ('D200', 'LKB'), ('D300', 'RVX'),
	  ('D300', 'LKB'), ('D400', 'LKB'), ('D500', 'LKB');
	INSERT INTO territories (dealer_number, brand_code, kind, country, code) VALUES
	  ('D100', NULL, 'county', 'US', 'MI/Mackinac'), ('D200', 'LKB', 'state', 'CA', 'ON'),
	  ('D300', NULL, 'postal', 'US', '60601');
	INSERT INTO product_assignments VALUES ('D100', 'Sport 210'), ('D300', 'Sport 210');
	INSERT INTO inventory VALUES ('D300', '2027 Sport 210', 2);
	INSERT INTO dealer_contacts (dealer_number, name, email, mobile, contact_types) VALUES
	  ('D100', 'Sales', 'sales\@islandmarine.example', '+15550100', '{Leads: Emails To}'),
	  ('D200', 'Ventes', 'ventes\@killarney.example', NULL, '{Leads: Emails To,Leads: Emails CC}'),
	  ('D300', 'Desk', 'desk\@windy.example', '+15550300', '{Leads: Emails To}');
	INSERT INTO crm_integrations (dealer_number, kind, endpoint) VALUES
	  ('D100', 'adf_http', '$http_url/ok/adf'), ('D300', 'adf_email', 'crm\@windy.example');
	INSERT INTO notification_contacts (email, contact_type, region) VALUES
	  ('ops\@oem.example', 'Dealer Lead Delivery Notification (real-time)', NULL),
	  ('daily\@oem.example', 'Lead Delivery Notification Daily', 'Great Lakes');
	UPDATE settings SET default_dealer_number = 'HQ', smtp_url = 'smtp://127.0.0.1:$smtp->{port}',
	  smtp_from = 'leads\@oem.example', push_gateway_url = '$http_url/ok/push',
	  delivery_retry_schedule = '{1 second}', reroute_enabled = true, reroute_after = '1 minute',
	  inventory_routing_enabled = true, oem_name = 'Lakeshore Marine';
	INSERT INTO leads (brand_code, country, postal_code, email) VALUES
	  ('LKB', 'US', '49757', 'first\@example.com'), ('LKB', 'CA', 'P0S 1A0', 'second\@example.com');
});

# Drive Distance's road network, when pgRouting is on the server: a grid
# of streets 300 m apart around D100 (Mackinac Island), pgRouting in a
# schema of its own, so that leads and the locator measure by road when
# the settings statement switches it on.
if ($node->safe_psql('app', q{SELECT count(*) FROM pg_available_extensions WHERE name = 'pgrouting'}) ne '0')
{
	$node->safe_psql(
		'app', q{
		SET search_path = gis, public;
		CREATE SCHEMA routing;
		CREATE EXTENSION pgrouting SCHEMA routing;
		CREATE TEMP TABLE crossing AS
		SELECT r * 10 + c AS id, r, c,
		       ST_Project(ST_Project(ST_Project(d.location, 2121.3, radians(225)), 300 * r, 0), 300 * c, radians(90))::geometry AS pt
		  FROM aimroute.dealers d, generate_series(0, 9) r, generate_series(0, 9) c
		 WHERE d.dealer_number = 'D100';
		CREATE TABLE public.roads AS
		SELECT a.id AS source, b.id AS target, ST_MakeLine(a.pt, b.pt) AS the_geom,
		       ST_Length(ST_MakeLine(a.pt, b.pt)::geography) AS length_m,
		       CASE WHEN a.r = b.r AND a.r % 2 = 0 THEN -1 ELSE ST_Length(ST_MakeLine(a.pt, b.pt)::geography) END AS reverse_cost
		  FROM crossing a JOIN crossing b ON (b.r = a.r AND b.c = a.c + 1) OR (b.c = a.c AND b.r = a.r + 1);
		-- An RV dealer on the grid, 1 km east of D100: RVX leads from 49757 are measured by road.
		INSERT INTO aimroute.dealers (dealer_number, name, country, location)
		SELECT 'D600', 'Mackinac RV', 'US', ST_Project(location, 1000, radians(90)) FROM aimroute.dealers WHERE dealer_number = 'D100';
		INSERT INTO aimroute.dealer_brands VALUES ('D600', 'RVX');
		UPDATE aimroute.settings SET drive_network = 'public.roads', drive_distance_enabled = true;
		INSERT INTO aimroute.leads (brand_code, country, postal_code, email) VALUES ('RVX', 'US', '49757', 'road@example.com');
	});
	is( $node->safe_psql(
			'app', q{
		SELECT l.dealer_number || ' ' || l.match_type FROM aimroute.leads l WHERE l.email = 'road@example.com'}),
		'D600 Drive Distance',
		'Drive Distance is on for the run: an RV lead from 49757 goes to D600 by road');
}

# The harness: fuzz.run records what a statement raised; fuzz.expect and
# fuzz.expect_known raise FZ001 / FZ002 when an invariant does not hold.
$node->safe_psql(
	'app', q{
	CREATE SCHEMA fuzz;
	CREATE TABLE fuzz.errors (stmt integer, target text, sqlstate text, message text,
	                          detail text, hint text, context text);
	CREATE FUNCTION fuzz.expect(ok boolean, what text) RETURNS boolean LANGUAGE plpgsql AS $$
	BEGIN
	    IF ok IS NOT TRUE THEN
	        RAISE EXCEPTION 'invariant broken: %', what USING ERRCODE = 'FZ001';
	    END IF;
	    RETURN true;
	END $$;
	CREATE FUNCTION fuzz.expect_known(ok boolean, what text) RETURNS boolean LANGUAGE plpgsql AS $$
	BEGIN
	    IF ok IS NOT TRUE THEN
	        RAISE EXCEPTION 'known bug: %', what USING ERRCODE = 'FZ002';
	    END IF;
	    RETURN true;
	END $$;
	CREATE FUNCTION fuzz.clip(t text) RETURNS text LANGUAGE sql AS $$
	    SELECT CASE WHEN length(t) > 2000 THEN left(t, 1500) || ' [...] ' || right(t, 300) ELSE t END
	$$;
	CREATE PROCEDURE fuzz.run(n integer, target text, sql text) LANGUAGE plpgsql AS $$
	DECLARE
	    s text; m text; d text; h text; c text;
	BEGIN
	    EXECUTE sql;
	EXCEPTION WHEN OTHERS THEN
	    GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL,
	                            h = PG_EXCEPTION_HINT, c = PG_EXCEPTION_CONTEXT;
	    -- Long messages (a 1 MB value quoted in one) keep their start and end.
	    INSERT INTO fuzz.errors VALUES (n, target, s, fuzz.clip(m), fuzz.clip(d), fuzz.clip(h), fuzz.clip(c));
	END $$;
	CREATE FUNCTION fuzz.valid_utf8(t text) RETURNS boolean LANGUAGE plpgsql AS $$
	BEGIN
	    RETURN t IS NULL OR convert_from(convert_to(t, 'UTF8'), 'UTF8') IS NOT NULL;
	EXCEPTION WHEN character_not_in_repertoire OR untranslatable_character THEN
	    RETURN false;
	END $$;
});

my $started = $node->safe_psql('app', 'SELECT pg_postmaster_start_time()');
my $workers_sql =
  "SELECT string_agg(pid || ' ' || backend_start, ', ' ORDER BY backend_type) FROM pg_stat_activity"
  . " WHERE backend_type IN ('aimroute delivery worker', 'aimroute re-route worker')";
ok($node->poll_query_until('app', "SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type IN"
	  . " ('aimroute delivery worker', 'aimroute re-route worker')"),
	'both workers run');
my $workers = $node->safe_psql('app', $workers_sql);
my $log_start = -s $node->logfile;

#
# Hostile values.  Each generator returns a Perl string (characters) or
# undef for NULL; lit() makes it a SQL literal.
#
sub pick { return $_[ int(rand(@_)) ] }
sub chance { return rand() < $_[0] }

my @countries = ('US', 'us', ' USA ', 'United States', 'CA', 'can', 'Canada', 'GB', 'DE', 'MX',
	'XX', 'U S', "\tUS\n", "\x{ff35}\x{ff33}", "U\x{308}S", 'United  States', 'CAN ', 'Usa');
my @postals = ('49757', '49757-1234', '49757 1234', '497571234', '00501', '10001', '60601',
	'60601-0000', 'P0M 1A0', 'p0m1a0', 'P0S', 'P0S 1A0', 'K1A 0B1', 'k1a-0b1', 'H2X 1Y4', '1234X',
	'4 9 7 5 7', '-49757', '49757--1234', "K1A\t0B1", "\x{a0}49757", "\x{ff14}\x{ff19}757",
	"49757\n1234", '-', '--', "-\tK1A 0B1", 'SW1A 1AA', '99999', ' 0 ', "4975\x{301}7");
my @dealers = ('HQ', 'D100', 'D200', 'D300', 'D400', 'D500', ' D100 ', 'd100', 'D999', "D100\x{200b}");
my @brands = ('LKB', 'RVX', 'lkb', ' LKB', 'NOBRAND', "LK\x{301}B");
my @products = ('2027 Sport 210', 'Sport 210', 'SPORT-210_2027', '1999', '2027', '2027 ', 'P-1');
my @groups = ('G1', 'g1', 'NOGROUP');
my @instants = ('2025-01-01', '2026-06-01 12:00+02', '-infinity', 'infinity', 'now', 'epoch', undef);
my @emails = ('ann@example.com', 'sales@islandmarine.example', 'SALES@ISLANDMARINE.EXAMPLE',
	' desk@windy.example ', "ann\x{1f600}\@example.com", 'a@b', 'no-at-sign', '@', 'x@y.z',
	'hardbounce@x.example', 'full@x.example', "a\@b.c\r\nBcc: victim\@x.example");
my @numbers = ('0', '-0', '1', '-1', '1e308', '1e309', '-1e309', 'NaN', 'nan', 'Infinity',
	'-Infinity', 'inf', '9223372036854775807', '9223372036854775808', '-9223372036854775809',
	'2147483648', '0x10', '1,5', ' 42 ', '4.2e1', '.', '1.', '+1', "\x{661}\x{662}\x{663}");
my @sql = ("'; DROP TABLE aimroute.leads; --", "' OR '1'='1", '$$', '$q$', '\\', "\\'", '";',
	'/*', '*/', '--', 'NULL', 'null', '%s%s%n%x', '{}', '{"a":1}', '<script>alert(1)</script>',
	'&amp;', ']]>', '\\x00', "E'\\x41'", '${jndi:ldap://127.0.0.1/a}', "\r\n.\r\n",
	"\r\nSubject: injected", "\n\nBody", ':name', ':"name"', "\\echo x", '\\.', "%' ESCAPE '");
my @blanks = ('', ' ', "\t", "\n", "\r\n", "\f", "\x0b", "\x{a0}", "\x{2003}", "\x{3000}",
	"  \t \n ");
my @codepoint_ranges = ([ 1, 31 ], [ 32, 126 ], [ 32, 126 ], [ 127, 127 ], [ 0xa0, 0xff ],
	[ 0x300, 0x36f ], [ 0x590, 0x5ff ], [ 0x200b, 0x200f ], [ 0x202a, 0x202e ],
	[ 0x2066, 0x2069 ], [ 0xfeff, 0xfeff ], [ 0xfffd, 0xffff ], [ 0x1f300, 0x1f6ff ],
	[ 0x4e00, 0x9fff ], [ 0x10000, 0x10ffff ]);

# soup returns n random characters, valid UTF-8 once encoded, no NUL.
sub soup
{
	my $n = shift // 1 + int(rand(40));
	my $s = '';
	for (1 .. $n)
	{
		my $r = pick(@codepoint_ranges);
		my $cp = $r->[0] + int(rand($r->[1] - $r->[0] + 1));
		$cp = 0xfffd if $cp >= 0xd800 && $cp <= 0xdfff;
		$s .= chr($cp);
	}
	return $s;
}

# huge returns a 1 MB string: one character repeated, or repeated soup.
sub huge
{
	return 'A' x (1 << 20) if chance(0.5);
	my $unit = soup(64);
	return substr($unit x (1 + int((1 << 20) / length($unit))), 0, 1 << 20);
}

# hostile returns a value of any hostile kind.
sub hostile
{
	my $r = rand();
	return huge() if $r < 0.003;
	return undef if $r < 0.08;
	return soup() if $r < 0.40;
	return pick(@sql) if $r < 0.55;
	return pick(@numbers) if $r < 0.70;
	return pick(@blanks) if $r < 0.80;
	return pick(@postals) if $r < 0.85;
	return pick(@countries) if $r < 0.90;
	return pick(@sql) . soup(3) . pick(@numbers);
}

# val returns a plausible value of a domain most of the time, hostile otherwise.
sub val
{
	my @domain = @_;
	my $r = rand();
	if (@domain && $r < 0.45)
	{
		my $v = pick(@domain);
		# An undef in the domain is a NULL: nothing to decorate.
		return $v if !defined $v || chance(0.7);
		return pick(@blanks) . $v . pick(@blanks) if chance(0.4);
		return lc($v) if chance(0.3);
		return $v . soup(1);
	}
	return hostile();
}

# lit returns a SQL literal (standard_conforming_strings) or NULL.
sub lit
{
	my ($v) = @_;
	return 'NULL' unless defined $v;
	$v =~ s/'/''/g;
	return "'$v'";
}

sub lits { return join(', ', map { lit($_) } @_) }

# A random existing id of a table, or a hostile number.
sub some_id
{
	my ($table, $column) = @_;
	return "(SELECT $column FROM aimroute.$table ORDER BY random() LIMIT 1)" if chance(0.8);
	return pick('0', '-1', '9223372036854775807', '123456789');
}

my $tmp = PostgreSQL::Test::Utils::tempdir();
my %expected_lines;    # generated plain file => non-empty lines, when the loader can be held to it
my %nul_files;         # generated plain files with NUL bytes (a known bug)
my $file_counter = 0;

# line_count returns the non-empty lines of a file's text, as the loader sees lines.
sub line_count
{
	my ($bytes) = @_;
	my $n = 0;
	for my $line (split /\n/, $bytes, -1)
	{
		$line =~ s/\r\z//;
		$n++ if length $line;
	}
	return $n;
}

my $good_line = "US\t49757\tMackinac Island\tMichigan\tMI\tMackinac\t097\t\t\t45.8492\t-84.6189\t4";

# geonames_line returns a line of GeoNames layout with hostile fields.
sub geonames_line
{
	my @f = (
		val('US', 'CA', 'us', 'XX'), val(@postals), val('Town'), val('Michigan', 'Ontario'),
		val('MI', 'ON', '08', '13', '99'), val('Mackinac'), val('097'), '', '',
		val('45.8492', '46.93', '0', '-0', '90.0000001', 'nan', 'Infinity', '1e999', '0x1p3'),
		val('-84.6189', '-52.9', '0', '181', '73.95', '-Infinity'), val('4', ''));
	splice(@f, int(rand(@f)), 1) if chance(0.1);    # a field missing: columns shift
	push @f, 'extra' if chance(0.05);
	return join("\t", map { defined $_ ? Encode::encode('UTF-8', $_) : '' } @f);
}

# postal_file writes a generated postal-code file and returns its path.
sub postal_file
{
	my $kind = pick(qw(junk shifted giant giant_bad_utf8 truncated_gz junk_gz gz_header empty crlf
		  hostile nul_lines good_gz));
	my $path = sprintf('%s/postal_%04d_%s.tsv', $tmp, ++$file_counter, $kind);
	my $bytes;
	if ($kind eq 'junk')
	{
		$bytes = join('', map { chr(int(rand(256))) } 1 .. 1 + int(rand(4096)));
	}
	elsif ($kind eq 'shifted')
	{
		$bytes = join("\n", map { my @f = split /\t/, $good_line; splice(@f, 1 + int(rand(10)), 0, '') ; join("\t", @f) } 1 .. 5) . "\n";
	}
	elsif ($kind eq 'giant' || $kind eq 'giant_bad_utf8')
	{
		my $start = $kind eq 'giant' ? "US\t12345\t" : "US\tAB\xff\xfe\t";
		$bytes = "$good_line\n$start" . ('x' x (1 << 20)) . "\n$good_line\n";
	}
	elsif ($kind eq 'truncated_gz' || $kind eq 'good_gz')
	{
		my $plain = join("\n", map { geonames_line() } 1 .. 50) . "\n";
		gzip(\$plain => \$bytes) or die "gzip failed: $GzipError";
		$bytes = substr($bytes, 0, int(length($bytes) / 2)) if $kind eq 'truncated_gz';
	}
	elsif ($kind eq 'junk_gz')
	{
		my $junk = join('', map { chr(int(rand(256))) } 1 .. 2000);
		gzip(\$junk => \$bytes) or die "gzip failed: $GzipError";
	}
	elsif ($kind eq 'gz_header')
	{
		$bytes = "\x1f\x8b\x08\x00" . join('', map { chr(int(rand(256))) } 1 .. 200);
	}
	elsif ($kind eq 'empty')
	{
		$bytes = '';
	}
	elsif ($kind eq 'crlf')
	{
		$bytes = join("\r\n", map { geonames_line() } 1 .. 20) . "\r\n";
	}
	elsif ($kind eq 'nul_lines')
	{
		$bytes = "US\t4\0bad\t\n$good_line\n" . geonames_line() . "\n";
	}
	else
	{
		$bytes = join("\n", map { geonames_line() } 1 .. 40) . "\n";
	}
	open(my $fh, '>:raw', $path) or die "could not write $path: $!";
	print $fh $bytes;
	close $fh;
	if ($bytes !~ /\A\x1f\x8b/)
	{
		if ($bytes =~ /\0/) { $nul_files{$path} = line_count($bytes) }
		else { $expected_lines{$path} = line_count($bytes) }
	}
	return $path;
}

my $stmt_no = 0;
my $batch_id = 0;

# The statement generators: target => [weight, sub returning SQL].
my @lead_text_columns = qw(source brand_code product_code first_name last_name email phone
  address city state_code country postal_code dealer_number dealer_group comment);
my %lead_domain = (
	source => [ 'api', 'import', 'manual' ],
	brand_code => \@brands,
	product_code => \@products,
	first_name => [ 'Ann', "Zo\x{eb}", "\x{5d0}\x{5d1}" ],
	email => \@emails,
	phone => [ '906-555-0100', '+1 (906) 555-0100', '5' ],
	state_code => [ 'MI', 'ON', 'mi', 'ZZ' ],
	country => \@countries,
	postal_code => \@postals,
	dealer_number => \@dealers,
	dealer_group => \@groups);

sub lead_values
{
	my %v;
	for my $c (@lead_text_columns)
	{
		next unless chance($c =~ /^(country|postal_code|brand_code)$/ ? 0.9 : 0.5);
		$v{$c} = val(@{ $lead_domain{$c} // [] });
		delete $v{$c} if $c eq 'source' && !defined $v{$c};    # NOT NULL DEFAULT 'api'
	}
	return %v;
}

my %generators = (
	leads => [
		20,
		sub {
			my @rows = map { +{ lead_values() } } 1 .. 1 + int(rand(3));
			my %cols = map { %$_ } @rows;
			my @cols = sort keys %cols;
			return 'INSERT INTO aimroute.leads DEFAULT VALUES' unless @cols;
			# A column missing from a row gets its default, as it would alone.
			return "INSERT INTO aimroute.leads (" . join(', ', @cols) . ") VALUES "
			  . join(', ',
				map { my $r = $_; '(' . join(', ', map { exists $r->{$_} ? lit($r->{$_}) : 'DEFAULT' } @cols) . ')' } @rows);
		}
	],
	leads_typed => [
		4,
		sub {
			my %v = lead_values();
			my %expr = map { $_ => lit($v{$_}) } keys %v;
			$expr{send_to_dealer} = lit(val('true', 'false', 'yes', 'off', '1', 't'));
			$expr{received_at} = lit(val('2026-11-29 09:15:52+00', 'now', 'infinity', 'epoch', '2026-02-30'))
			  if chance(0.5);
			$expr{reroute_count} = lit(val('0', '3')) if chance(0.2);
			if (chance(0.3))
			{
				# The restore path: a lead that arrives routed keeps its routing.
				$expr{source} = "'fuzz-restore'";
				$expr{dealer_number} = lit(val(@dealers));
				$expr{match_type} = lit(val('Territory', 'Radius', 'Default', 'Re-Route'));
				$expr{routed_at} = lit(val('2026-11-29 09:15:52+00'));
				$expr{routing_log} = lit(val('{"(1,Input,restored,,)"}', '{}', '{"(1,x,y,D100,NaN)"}'));
			}
			my @cols = sort keys %expr;
			return "INSERT INTO aimroute.leads (" . join(', ', @cols) . ") VALUES ("
			  . join(', ', map { $expr{$_} } @cols) . ")";
		}
	],
	lead_staging => [
		6,
		sub {
			$batch_id++;
			my @cols = qw(received_at source brand_code product_code first_name last_name email
			  phone address city state_code country postal_code dealer_number dealer_group
			  send_to_dealer comment);
			my $b = chance(0.95) ? "fz$batch_id" : hostile();
			my @rows;
			for (1 .. 1 + int(rand(5)))
			{
				my %v = lead_values();
				$v{received_at} = val('2026-11-29 09:15:52+00', 'yesterday', 'infinity', '') if chance(0.5);
				$v{send_to_dealer} = val('true', 'no', 'Y', '') if chance(0.5);
				push @rows, '(' . lits($b, map { $v{$_} } @cols) . ')';
			}
			push @rows, $rows[0] if chance(0.3);    # a duplicate in the same batch
			return ("INSERT INTO aimroute.lead_staging (batch_id, " . join(', ', @cols) . ") VALUES " . join(', ', @rows),
				[ 'process_staging', "SELECT count(*) FROM aimroute.process_staging(" . lit($b) . ")" ]);
		}
	],
	normalize_country => [
		6,
		sub {
			my $c = lit(val(@countries));
			return "SELECT fuzz.expect(r IS NULL OR (r ~ '^[A-Z]{2}\$' AND aimroute.normalize_country(r) = r),"
			  . " 'normalize_country gives NULL or an alpha-2 code that maps to itself')"
			  . " FROM (SELECT aimroute.normalize_country($c) AS r) x";
		}
	],
	normalize_postal_code => [
		8,
		sub {
			my ($c, $p) = (lit(val(@countries)), lit(val(@postals)));
			return "SELECT fuzz.expect_known(fuzz.valid_utf8(r),"
			  . " 'normalize_postal_code returns valid UTF-8 (src/postal.c: the Canadian FSA is cut at byte 3)'),"
			  . " fuzz.expect(p IS NULL OR (r IS NULL) = (btrim(p, E' \\t\\n\\r\\f') = ''"
			  . " OR (aimroute.normalize_country(c) IS NOT DISTINCT FROM 'CA' AND btrim(p, E' \\t\\n\\r\\f-') = '')),"
			  . " 'normalize_postal_code is NULL exactly for a blank code (in Canada: nothing but blanks and hyphens)'),"
			  . " fuzz.expect(r IS NULL OR (r !~ '[a-z]' AND length(r) <= length(p)),"
			  . " 'a normalized code is upper-cased and no longer than the input'),"
			  . " fuzz.expect(r IS NULL OR aimroute.normalize_country(c) IS DISTINCT FROM 'US' OR r !~ '^[0-9]{5}\$'"
			  . " OR aimroute.postal_code_is_valid(c, p), 'a five-digit US code is valid'),"
			  . " fuzz.expect_known(r IS NULL OR (r <> '' AND r = btrim(r, E' \\t\\n\\r\\f')),"
			  . " 'a normalized code is trimmed and not empty (src/postal.c, Canadian hyphens)')"
			  . " FROM (SELECT $c AS c, $p AS p, aimroute.normalize_postal_code($c, $p) AS r) x";
		}
	],
	postal_code_is_valid => [
		3,
		sub {
			my ($c, $p) = (lit(val(@countries)), lit(val(@postals)));
			return "SELECT fuzz.expect(aimroute.postal_code_is_valid($c, $p) IS NOT NULL"
			  . " OR $c IS NULL OR $p IS NULL, 'postal_code_is_valid answers')";
		}
	],
	locate_dealers => [
		8,
		sub {
			my @args = (lit(val(@countries)), lit(val(@postals)), lit(val(@brands)),
				lit(chance(0.5) ? val(@products) : undef));
			my $max = pick('10', '1', '3', '1000', 'NULL', '0', '-1', '1001', '2147483647');
			my $a = join(', ', @args);
			my $limit = $max =~ /^[0-9]+$/ ? $max : 10;
			return "SELECT fuzz.expect(count(*) >= 1 AND count(*) <= $limit AND min(rank) = 1"
			  . " AND max(rank) = count(*) AND count(DISTINCT dealer_number) = count(*)"
			  . " AND coalesce(bool_and(dealer_number IS NOT NULL AND match_type IS NOT NULL), true),"
			  . " 'locate_dealers ranks distinct dealers from 1')"
			  . " FROM aimroute.locate_dealers($a, $max)",
			  "SELECT fuzz.expect((SELECT dealer_number FROM aimroute.locate_dealers($a, 1))"
			  . " IS NOT DISTINCT FROM (aimroute.route($a)).dealer_number,"
			  . " 'rank 1 of locate_dealers is the dealer route() chooses')";
		}
	],
	route => [
		5,
		sub {
			my @excluded = map { val(@dealers) } 1 .. int(rand(6));
			my $excl = chance(0.2) ? 'NULL::text[]' : 'ARRAY[' . lits(@excluded) . ']::text[]';
			$excl = "ARRAY(SELECT 'X' || g FROM generate_series(1, 2000) g)" if chance(0.05);
			my $args = join(', ', lit(val(@countries)), lit(val(@postals)), lit(val(@brands)),
				lit(val(@products)), lit(val(@dealers)), lit(val(@groups)), $excl, lit(val('MI', 'ON')),
				pick('NULL', 'now()', map { "'$_'::timestamptz" } grep { defined } @instants));
			return "SELECT fuzz.expect(r.dealer_number IS NOT NULL AND r.match_type IS NOT NULL"
			  . " AND cardinality(r.steps) >= 1, 'route() decides and explains'),"
			  . " fuzz.expect(r.match_type = 'Default' OR NOT coalesce(r.dealer_number = ANY (e), false),"
			  . " 'route() never chooses an excluded dealer but the default one')"
			  . " FROM (SELECT aimroute.route($args) AS d, $excl AS e) x, LATERAL (SELECT (x.d).*) r";
		}
	],
	coverage => [
		1,
		sub {
			my ($b, $c) = (lit(val(@brands)), lit(chance(0.3) ? undef : val(@countries)));
			return "SELECT fuzz.expect(count(*) = (SELECT count(*) FROM aimroute.postal_codes p"
			  . " WHERE p.centroid IS NOT NULL AND (${c}::text IS NULL OR p.country = aimroute.normalize_country($c)))"
			  . " AND coalesce(bool_and(dealer_number IS NOT NULL AND match_type IS NOT NULL), true),"
			  . " 'coverage() has a dealer for every postal code with a centre point')"
			  . " FROM aimroute.coverage($b, $c)",
			  "SELECT fuzz.expect(json_array_length(aimroute.coverage_geojson($b, $c)->'features')"
			  . " = (SELECT count(*) FROM aimroute.coverage($b, $c)),"
			  . " 'coverage_geojson() has a feature per row of coverage()')";
		}
	],
	explain_lead => [
		4,
		sub {
			return "SELECT fuzz.expect(NOT EXISTS (SELECT FROM aimroute.leads l WHERE l.lead_id = i)"
			  . " OR (SELECT count(*) >= 1 AND min(step) = 1 AND max(step) = count(*) FROM aimroute.explain_lead(i)),"
			  . " 'explain_lead numbers the steps of a lead from 1')"
			  . " FROM (SELECT " . some_id('leads', 'lead_id') . " AS i) x";
		}
	],
	explain_lead_typed => [ 1, sub { return 'SELECT count(*) FROM aimroute.explain_lead(' . lit(hostile()) . ')' } ],
	lead_adf => [
		3,
		sub {
			return "SELECT fuzz.expect(d IS NULL OR xml_is_well_formed_document(d),"
			  . " 'lead_adf is a well-formed XML document')"
			  . " FROM (SELECT aimroute.lead_adf(" . some_id('leads', 'lead_id') . ") AS d) x";
		}
	],
	adf_render => [
		3,
		sub {
			my @args = (pick('1', '-1', '9223372036854775807', 'NULL'), lit(val('2026-11-29T09:15:52-05:00')),
				pick('2027', '0', '-2147483648', 'NULL'), map { lit(val('Ann', 'MI', 'US')) } 1 .. 15);
			return "SELECT fuzz.expect(xml_is_well_formed_document(d), 'adf_render is a well-formed XML document')"
			  . " FROM (SELECT aimroute.adf_render(" . join(', ', @args) . ") AS d) x";
		}
	],
	adf_render_typed => [
		1,
		sub {
			my @args = (lit(hostile()), lit(hostile()), lit(hostile()), map { lit(hostile()) } 1 .. 15);
			return 'SELECT aimroute.adf_render(' . join(', ', @args) . ')';
		}
	],
	reassign => [
		2,
		sub {
			return 'SELECT aimroute.reassign(' . join(', ', some_id('leads', 'lead_id'), lit(val(@dealers)), lit(hostile())) . ')';
		}
	],
	mark_viewed => [
		2,
		sub {
			return "SELECT fuzz.expect(aimroute.mark_viewed(" . some_id('leads', 'lead_id') . ", "
			  . lit(val(@emails)) . ") IS NOT NULL, 'mark_viewed answers')";
		}
	],
	open_view_link => [
		2,
		sub {
			my $token = chance(0.5) ? "(SELECT view_token FROM aimroute.lead_notifications ORDER BY random() LIMIT 1)" : lit(val());
			return "SELECT fuzz.expect(aimroute.open_view_link($token) IS NOT NULL OR $token IS NULL,"
			  . " 'open_view_link answers')";
		}
	],
	send_lead => [ 2, sub { return 'SELECT aimroute.send_lead(' . some_id('leads', 'lead_id') . ')' } ],
	record_bounce => [
		2,
		sub {
			return 'SELECT aimroute.record_bounce(' . lits(val(@emails), val('hard', 'soft', 'Hard Bounce', ' SOFT '), hostile()) . ')';
		}
	],
	set_delivery_status_active => [
		1, sub { return 'SELECT aimroute.set_delivery_status_active(' . some_id('dealer_contacts', 'contact_id') . ')' }
	],
	# A DSN around a message's VERP address or a hostile one, hostile
	# fields, any line ends, cut anywhere.
	record_dsn => [
		2,
		sub {
			my $key = chance(0.6)
			  ? q{(SELECT 'bounces+' || aimroute.verp_key(o) || '@oem.example' FROM aimroute.outbox o ORDER BY random() LIMIT 1)}
			  : lit(val('bounces+1.20260101000000000000@oem.example', 'bounces@oem.example'));
			my $rcpt = chance(0.5) ? '(SELECT recipient FROM aimroute.outbox ORDER BY random() LIMIT 1)' : lit(val(@emails));
			my $nl = pick("\r\n", "\n", "\r", "\r\n");
			my $b = chance(0.8) ? 'B0UND' : (hostile() // '');
			my $v = sub { return val(@_) // '' };
			my $head = "Return-Path: <>${nl}To: ";
			my $middle = "${nl}Content-Type: " . $v->('multipart/report') . "; report-type=delivery-status; boundary=\"$b\"$nl$nl"
			  . "--$b${nl}Content-Type: " . $v->('message/delivery-status', 'message/global-delivery-status') . "$nl$nl"
			  . 'Reporting-MTA: dns; ' . $v->('relay.oem.example') . "$nl${nl}Final-Recipient: rfc822; ";
			my $tail = "${nl}Action: " . $v->('failed', 'delayed', 'delivered', 'relayed') . "${nl}Status: "
			  . $v->('5.1.1', '4.2.2', '5.2.2', '2.0.0', '5.7.1') . "${nl}Diagnostic-Code: " . $v->('smtp; 550 5.1.1 no such user', 'smtp; 452 full')
			  . "$nl$nl--$b${nl}Content-Type: " . $v->('text/rfc822-headers', 'message/rfc822') . "$nl${nl}Message-ID: "
			  . $v->('<aimroute.1.20260101000000000000@oem.example>') . "$nl$nl--$b--$nl";
			my $dsn = 'concat(' . lits($head) . ", $key, " . lits($middle) . ", $rcpt, " . lits($tail) . ')';
			$dsn = "left($dsn, " . int(rand(900)) . ')' if chance(0.3);
			$dsn = lit(hostile()) if chance(0.1);
			return "SELECT fuzz.expect(aimroute.record_dsn($dsn) >= 0, 'record_dsn counts what it recorded')";
		}
	],
	# One event of each provider's shape with hostile values, or hostile JSON.
	record_delivery_event => [
		2,
		sub {
			my $addr = chance(0.5) ? '(SELECT recipient FROM aimroute.outbox ORDER BY random() LIMIT 1)' : lit(val(@emails));
			my $key = '(SELECT message_key FROM aimroute.outbox ORDER BY random() LIMIT 1)';
			my $event = pick(
				"jsonb_build_object('event', " . lit(val('bounce', 'dropped', 'spamreport', 'delivered', 'deferred'))
				  . ", 'email', $addr, 'status', " . lit(val('5.1.1', '4.2.2')) . ", 'type', " . lit(val('blocked', 'bounce'))
				  . ", 'reason', " . lit(hostile()) . ", 'smtp-id', $key)",
				"jsonb_build_object('event-data', jsonb_build_object('event', " . lit(val('failed', 'complained', 'delivered'))
				  . ", 'severity', " . lit(val('permanent', 'temporary')) . ", 'recipient', $addr"
				  . ", 'delivery-status', jsonb_build_object('code', " . lit(val('550', '452')) . ', \'message\', ' . lit(hostile()) . ')))',
				"jsonb_build_object('Type', 'Notification', 'Message', jsonb_build_object('notificationType', "
				  . lit(val('Bounce', 'Complaint', 'Delivery', 'DeliveryDelay')) . ", 'bounce', jsonb_build_object('bounceType', "
				  . lit(val('Permanent', 'Transient')) . ", 'bouncedRecipients', jsonb_build_array(jsonb_build_object('emailAddress', $addr)))"
				  . ", 'delivery', jsonb_build_object('recipients', " . pick("jsonb_build_array($addr)", lit(hostile()) . '::text::jsonb', "'{}'::jsonb") . '))::text)',
				"jsonb_build_object('Type', 'Notification', 'Message', " . lit(hostile()) . ')',
				"jsonb_build_object('RecordType', " . lit(val('Bounce', 'Delivery', 'SpamComplaint')) . ", 'Type', "
				  . lit(val('HardBounce', 'SoftBounce', 'Blocked')) . ", 'Email', $addr, 'Details', " . lit(hostile()) . ')',
				'to_jsonb(' . lit(hostile()) . '::text)',
				'jsonb_build_array(' . lit(hostile()) . ", 1, NULL, '{}'::jsonb)");
			my $provider = lit(val('sendgrid', 'mailgun', 'ses', 'postmark'));
			return "SELECT fuzz.expect(aimroute.record_delivery_event($provider, $event) >= 0, 'record_delivery_event counts what it recorded')";
		}
	],
	reassign_dealer_leads => [
		0.5, sub { return 'SELECT count(*) FROM aimroute.reassign_dealer_leads(' . lits(val('D300', 'D999', 'HQ'), hostile()) . ')' }
	],
	simulate_routing => [
		1,
		sub {
			my ($from, $to) = ("now() - interval '30 seconds'", 'now()');
			($from, $to) = (lit(val('-infinity', 'epoch', 'yesterday')), lit(val('infinity', 'tomorrow', 'now')))
			  if chance(0.3);
			my $sql = "SELECT fuzz.expect(bool_and(simulated_dealer_number IS NOT NULL AND simulated_match_type IS NOT NULL)"
			  . " IS NOT FALSE, 'simulate_routing decides every lead')"
			  . " FROM aimroute.simulate_routing($from, $to"
			  . (chance(0.5) ? '' : ', ' . pick('NULL', 'now()', map { "'$_'::timestamptz" } grep { defined } @instants))
			  . ")";
			return $from =~ /^now/ ? $sql : [ 'simulate_routing_typed', $sql ];
		}
	],
	dealers => [
		4,
		sub {
			my $d = (val('D5', 'D6', 'D7') // '') . (chance(0.8) ? int(rand(1e6)) : '');
			my ($x, $y) = (lit(val('-84.6', '-79.1', @numbers)), lit(val('45.8', '46.9', @numbers)));
			my $location = pick('NULL', "ST_SetSRID(ST_MakePoint($x, $y), 4326)::geography",
				"ST_MakePoint($x, $y)::geography");
			my $target = 'dealers';
			if (chance(0.1)) { $location = lit(val('POINT(-84 45)', 'SRID=4326;POINT(NaN NaN)')); $target = 'dealers_location_text' }
			my $active = 'true';
			if (chance(0.1)) { $active = lit(hostile()); $target = 'dealers_typed' if $target eq 'dealers' }
			my $sql = "INSERT INTO aimroute.dealers (dealer_number, name, country, postal_code, state_code,"
			  . " county, location, active_for_sales, dealer_group, timezone, region) VALUES ("
			  . join(', ', lit($d), lit(val('Garbage Marine')), lit(val(@countries)), lit(val(@postals)),
				lit(val('MI', 'ON')), lit(val('Mackinac')), $location, $active,
				lit(val(@groups)), lit(val('America/Chicago', 'UTC', 'Mars/Olympus')), lit(val('Great Lakes')))
			  . ")";
			return [ $target, $sql ],
			  [ 'dealer_brands', 'INSERT INTO aimroute.dealer_brands VALUES (' . lits(btrim($d), val(@brands)) . ')' ];
		}
	],
	dealers_update => [
		1,
		sub {
			my ($x, $y) = (lit(val(@numbers)), lit(val(@numbers)));
			my $set = pick("location = ST_SetSRID(ST_MakePoint($x, $y), 4326)::geography",
				'postal_code = ' . lit(val(@postals)), 'country = ' . lit(val(@countries)),
				'active_for_sales = ' . pick('true', 'false'), 'dealer_group = ' . lit(val(@groups)));
			return "UPDATE aimroute.dealers SET $set WHERE dealer_number = " . lit(pick('D100', 'D200', 'D300', 'D400'));
		}
	],
	territories => [
		3,
		sub {
			# A third of them with a period (issue 20, part 3): open, past, future, empty or reversed.
			my $dated = chance(0.3);
			return 'INSERT INTO aimroute.territories (dealer_number, brand_code, kind, country, code'
			  . ($dated ? ', valid_from, valid_to' : '') . ') VALUES ('
			  . lits(val(@dealers), chance(0.5) ? undef : val(@brands),
				val('postal', 'county', 'state', 'country', ' POSTAL '), val(@countries),
				val(@postals, 'MI/Mackinac', 'ON', 'mi / mackinac', 'US'),
				$dated ? (val(@instants), val(@instants)) : ())
			  . ')';
		}
	],
	dealer_contacts => [
		3,
		sub {
			my $types = chance(0.8)
			  ? 'ARRAY[' . lits(map { val('Leads: Emails To', 'Leads: Emails CC', 'Lead Delivery Notification Daily') } 1 .. 1 + int(rand(3))) . ']::text[]'
			  : lit(val('{Leads: Emails To}', '{}', '{NULL}'));
			return 'INSERT INTO aimroute.dealer_contacts (dealer_number, name, email, mobile, contact_types, delivery_status) VALUES ('
			  . join(', ', lit(val(@dealers)), lit(val('Sales')), lit(val(@emails)), lit(val('+15550100')), $types,
				lit(val('Active', 'Hard Bounce', 'Soft Bounce')))
			  . ')';
		}
	],
	crm_integrations => [
		2,
		sub {
			# Every endpoint is on the loopback sink, or refused: no traffic leaves the machine.
			my $endpoint = pick("$http_url/ok/", "$http_url/fail/", "$http_url/notfound/") . (val('adf') // '');
			$endpoint = 'x' . (hostile() // '') if chance(0.2);
			$endpoint = val(@emails) if chance(0.2);
			my $active = chance(0.9) ? 'true' : lit(hostile());
			return 'INSERT INTO aimroute.crm_integrations (dealer_number, kind, endpoint, active, name) VALUES ('
			  . join(', ', lit(val(@dealers)), lit(val('adf_http', 'adf_email')), lit($endpoint), $active, lit(val('CRM')))
			  . ')';
		}
	],
	notification_contacts => [
		2,
		sub {
			return 'INSERT INTO aimroute.notification_contacts (email, contact_type, region, name) VALUES ('
			  . lits(val(@emails), val('Dealer Lead Delivery Notification (real-time)', 'Lead Delivery Notification Daily'),
				val('Great Lakes', 'West'), val('Ops'))
			  . ')';
		}
	],
	products => [
		1,
		sub {
			return pick('INSERT INTO aimroute.product_assignments VALUES (' . lits(val(@dealers), val(@products)) . ')',
				'INSERT INTO aimroute.product_assignments VALUES ('
				  . lits(val(@dealers), val(@products), val(@instants), val(@instants)) . ')',
				'INSERT INTO aimroute.inventory VALUES (' . lits(val(@dealers), val(@products)) . ', ' . pick('1', '0', '-1', lit(hostile())) . ')');
		}
	],
	load_postal_codes => [
		2,
		sub {
			my $path = chance(0.8) ? postal_file() : val('', '/', '/nonexistent/x.tsv', '../x', $tmp, 'x' x 5000);
			my $format = chance(0.9) ? 'geonames' : val('GeoNames', 'csv');
			return 'SELECT aimroute.load_postal_codes(' . lits($path, $format) . ')';
		}
	],
	reroute => [
		1,
		sub {
			return ("UPDATE aimroute.leads SET reroute_due_at = now() - interval '1 second'"
				  . " WHERE reroute_due_at IS NOT NULL AND lead_id % 3 = " . int(rand(3)),
				[ 'reroute_overdue', 'SELECT aimroute.reroute_overdue(' . pick('50', '1', '0', '-1') . ')' ]);
		}
	],
	settings => [
		1,
		sub {
			my $set = pick('radius_miles = ' . lit(val('750', '1500', '0.001', '12451', @numbers)),
				'radius_enabled = ' . pick('true', 'false'),
				'product_routing_enabled = ' . pick('true', 'false'),
				'inventory_routing_enabled = ' . pick('true', 'false'),
				'radius_countries = ' . lit(val('{US,CA}', '{US}', '{usa,Canada}', '{}', '{XX}', '{NULL}')),
				'default_dealer_number = ' . lit(val('HQ', 'D100')),
				'reroute_max_dealers = ' . lit(val('1', '3', '100', '0')),
				'oem_name = ' . lit(val('Lakeshore Marine')), 'timezone = ' . lit(val('UTC', 'America/Chicago')),
				'reroute_clock = ' . lit(val('elapsed', 'business_hours')),
				'tie_break = ' . lit(val('dealer_number', 'round_robin', 'round_robin')),
				'drive_distance_enabled = ' . pick('true', 'false'),
				'drive_network = ' . lit(val('public.roads', 'public.roads', 'roads', 'public.dealers')));
			return "UPDATE aimroute.settings SET $set";
		}
	],
	# Business hours (OpenStreetMap opening_hours): shuffled pieces of the
	# syntax, odd spacing, what aimroute refuses (PH, months, +, past
	# midnight), or hostile text; validated, stored on a dealer, and counted
	# by the deadline function.
	business_hours => [
		2,
		sub {
			my $v = business_hours_value();
			my $tz = lit(val('America/New_York', 'Europe/Berlin', 'Australia/Lord_Howe', 'UTC', 'Mars/Olympus'));
			my $after = lit(val('4 hours', '1 minute', '90 days', '0', '-1 hour', '1 year', '1 mon 2 days'));
			my $skip = lit(val('{}', '{6,7}', '{1,2,3,4,5,6}', '{1,2,3,4,5,6,7}', '{0}', '{NULL}'));
			my $at = pick('now()', "'2026-03-08 06:30Z'", "'2026-11-01 05:30Z'", lit(val('infinity', '-infinity', 'epoch')));
			return [ 'business_hours_valid', 'SELECT aimroute.business_hours_valid(' . lit($v) . ')' ],
			  [ 'business_hours_deadline', "SELECT aimroute.business_hours_deadline($at, ${after}::interval, " . lit($v) . ", $tz, ${skip}::integer[])" ],
			  [ 'business_hours_dealer', 'UPDATE aimroute.dealers SET business_hours = ' . lit($v)
				  . ', timezone = ' . lit(val('America/Chicago', 'Europe/Berlin')) . ' WHERE dealer_number = ' . lit(pick('D100', 'D200', 'D300', 'D400')) ];
		}
	],
);

# Pieces of opening_hours values, good and bad.
my @hours_pieces = ('Mo', 'Tu', 'We', 'Th', 'Fr', 'Sa', 'Su', 'Mo-Fr', 'Sa-Mo', '-', ',', ';', ' ', '  ', "\t",
	'08:00', '18:00', '24:00', '00:00', '23:59', '99:99', '8:00', '08:00-18:00', '22:00-02:00', '12:00-12:00',
	'off', 'closed', '24/7', 'PH', 'SH', 'Jan', 'week', 'sunrise', '+', '"comment"', '||', '[1]', '2026', 'open',
	'mo', 'Mon');

# business_hours_value returns a value for dealers.business_hours.
sub business_hours_value
{
	return hostile() if chance(0.15);
	return pick('Mo-Fr 08:00-18:00; Sa 09:00-13:00', '24/7', 'Mo-Fr 08:00-12:00,13:00-18:00; Su off', 'Sa')
	  if chance(0.2);
	my $v = join('', map { pick(@hours_pieces) } 1 .. 1 + int(rand(20)));
	$v .= soup(2) if chance(0.1);
	$v = $v x (1 + int(rand(2000))) if chance(0.02);
	return $v;
}

sub btrim { my $s = shift; return undef unless defined $s; $s =~ s/^\s+|\s+$//g; return $s }

# Targets that take only well-typed arguments: any error from them is a bug.
my %no_error = map { $_ => 1 } qw(leads normalize_country normalize_postal_code
  postal_code_is_valid route explain_lead lead_adf adf_render mark_viewed open_view_link
  simulate_routing reroute);
# Errors a target may raise on hostile input: SQLSTATEs or classes (two characters).
my %allowed = (
	leads_typed => [qw(22 23)],
	lead_staging => [qw(23502 54000)],
	process_staging => [qw(22004)],
	locate_dealers => [qw(22023)],
	coverage => [qw(22004 22023)],
	explain_lead_typed => [qw(22)],
	adf_render_typed => [qw(22)],
	reassign => [qw(P0002 23503)],
	send_lead => [qw(P0002 55000)],
	record_bounce => [qw(22023 22004)],
	set_delivery_status_active => [qw(P0002)],
	record_dsn => [qw(22023 22004)],
	record_delivery_event => [qw(22)],
	reassign_dealer_leads => [qw(23503 55006)],
	dealers => [qw(22 23 54000)],
	dealers_typed => [qw(22 23 54000)],
	dealers_location_text => [qw(22 23 54000)],
	dealer_brands => [qw(23 54000)],
	dealers_update => [qw(22 23)],
	territories => [qw(22 23 54000)],
	dealer_contacts => [qw(22 23 54000)],
	crm_integrations => [qw(22 23 54000)],
	notification_contacts => [qw(22 23 54000)],
	products => [qw(22 23 54000)],
	load_postal_codes => [qw(22023 58P01 42809 XX001)],
	settings => [qw(22 23 42P01 42703 55000)],
	simulate_routing_typed => [qw(22)],
	reroute_overdue => [qw(22023 2201W)],
	business_hours_valid => [qw(22023)],
	business_hours_deadline => [qw(22)],
	business_hours_dealer => [qw(22 23)]);

my $total_weight = 0;
$total_weight += $_->[0] for values %generators;
my @target_names = sort keys %generators;

# statement returns [target, sql] pairs for one random draw.
sub statement
{
	my $r = rand($total_weight);
	my $name;
	for (@target_names)
	{
		$name = $_;
		last if ($r -= $generators{$_}[0]) < 0;
	}
	return map { ref $_ ? $_ : [ $name, $_ ] } $generators{$name}[1]->();
}

# dollar_quote wraps text in a dollar quote whose tag does not occur in it.
sub dollar_quote
{
	my ($text) = @_;
	my $tag;
	do { $tag = 'f' . int(rand(1e9)) } while index($text, "\$$tag") >= 0;
	return "\$$tag\$$text\$$tag\$";
}

my %sql_of;    # statement number => SQL, for reproducers
my $log_dir = $PostgreSQL::Test::Utils::log_path;
my $deadline = time + $budget;
my $crashed;
my $harness_errors = '';
my $statements = 0;
my $t0 = time;

while (time < $deadline)
{
	my $script = "SET client_min_messages = error;\n";
	my @batch;
	while (@batch < $batch_size)
	{
		push @batch, statement();
	}
	for my $s (@batch)
	{
		my ($target, $sql) = @$s;
		my $n = ++$stmt_no;
		$sql_of{$n} = [ $target, $sql ];
		$script .= "\\echo \@stmt $n\nCALL fuzz.run($n, '$target', " . dollar_quote($sql) . ");\n";
	}
	# The script goes in a file: psql may stop reading before its end.
	my $file = "$tmp/batch.sql";
	open(my $fh, '>:raw', $file) or die "could not write $file: $!";
	print $fh Encode::encode('UTF-8', $script);
	close $fh;
	my ($out, $err) = ('', '');
	my $rc = eval {
		$node->psql('app', '', stdout => \$out, stderr => \$err, on_error_stop => 0,
			extra_params => [ '-f', $file ]);
	} // 255;
	$err .= $@ if $@;
	$statements += @batch;
	if ($rc != 0 || $err =~ /server closed|connection to server|terminat/i)
	{
		my ($last) = $out =~ /\@stmt (\d+)\s*\z/;
		$last //= '?';
		$crashed = "statement $last ($sql_of{$last}[0]) ended the session (psql exit $rc): $err";
		write_reproducer("crash_$last", $last);
		last;
	}
	elsif ($err =~ /ERROR/)
	{
		$harness_errors .= $err;
	}
	# Drop the SQL of statements that raised nothing worth keeping.
	%sql_of = map { $_ => $sql_of{$_} } grep { $_ > $stmt_no - 5 * $batch_size } keys %sql_of;
	my $fz = $node->safe_psql('app',
		"SELECT string_agg(CASE sqlstate WHEN 'FZ001' THEN 'invariant' ELSE 'known_bug' END || '_' || stmt, ' ')"
		  . " FROM fuzz.errors WHERE sqlstate LIKE 'FZ%' AND stmt > $stmt_no - " . scalar(@batch));
	write_reproducer($_, /(\d+)$/) for split / /, $fz;
}
my $elapsed = time - $t0;
diag(sprintf('fuzz: %d statements in %.1f s (%.0f/s), %d batches', $statements, $elapsed,
	$statements / ($elapsed || 1), $stmt_no / $batch_size));

# write_reproducer saves one statement's SQL (as fuzz.run ran it) to the log directory.
sub write_reproducer
{
	my ($name, $n) = @_;
	return unless defined $sql_of{$n};
	my $file = "$log_dir/005_fuzz_$name.sql";
	open(my $fh, '>:raw', $file) or return;
	print $fh Encode::encode('UTF-8',
		"-- t/005_fuzz.pl, seed $seed, statement $n, target $sql_of{$n}[0].\n"
		  . "-- Run it in a database set up as the test does (fuzz.expect comes from its fuzz schema).\n"
		  . "$sql_of{$n}[1];\n");
	close $fh;
	diag("fuzz: reproducer of statement $n written to $file");
}

ok(!$crashed, 'no statement ended the session') or diag($crashed);
if ($crashed)
{
	my @lines = grep { /terminated by signal|was terminated|PANIC|TRAP:|Failed process/ } split /\n/,
	  slurp_file($node->logfile);
	diag(join("\n", @lines));
	done_testing();
	exit;
}
is($harness_errors, '', 'every statement ran inside fuzz.run');

# The server: up, never restarted, no crash in its log.
is($node->safe_psql('app', 'SELECT pg_postmaster_start_time()'), $started, 'the server was never restarted');
ok($node->poll_query_until('app', "SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type IN"
	  . " ('aimroute delivery worker', 'aimroute re-route worker')"), 'both workers still run');
is($node->safe_psql('app', $workers_sql), $workers, 'neither worker restarted');
my @log = split /\n/, substr(slurp_file($node->logfile), $log_start);
my @crash_lines = grep { /terminated by signal|was terminated|PANIC|TRAP:|exited with exit code [1-9]/ } @log;
is(scalar(@crash_lines), 0, 'the log shows no crash and no worker exit')
  or diag(join("\n", @crash_lines[0 .. min(9, $#crash_lines)]));
# Statements' errors are caught by fuzz.run: an ERROR in the log is a worker's.
my @error_lines = grep { /^\S+ \S+ \S+ \[\d+\] \S+ (ERROR|FATAL):/ } @log;
is(scalar(@error_lines), 0, 'the log shows no ERROR of a worker')
  or diag(join("\n", @error_lines[0 .. min(9, $#error_lines)]));

# Leads: every committed lead has a dealer, a match type and an explanation.
is( $node->safe_psql(
		'app', q{
	SELECT count(*) FROM aimroute.leads l
	 WHERE dealer_number IS NULL OR match_type IS NULL OR routed_at IS NULL
	    OR cardinality(routing_log) = 0 OR NOT EXISTS (SELECT FROM aimroute.explain_lead(l.lead_id))
	    OR NOT EXISTS (SELECT FROM aimroute.dealers d WHERE d.dealer_number = l.dealer_number)}),
	'0',
	'every lead has a dealer, a match type and an explanation');
is( $node->safe_psql(
		'app', q{
	SELECT (SELECT count(*) FROM aimroute.leads
	         WHERE NOT fuzz.valid_utf8(routing_log::text) OR NOT fuzz.valid_utf8(postal_code))
	     + (SELECT count(*) FROM aimroute.dealers WHERE NOT fuzz.valid_utf8(postal_code))}),
	'0',
	'every stored postal code and explanation is valid UTF-8');
# Routing marks a lead to be sent; the delivery worker makes its notice.
ok( $node->poll_query_until(
		'app', q{
	SELECT NOT EXISTS (SELECT FROM aimroute.leads WHERE notice_pending)}),
	'the delivery worker made the notice of every lead routing marked');
is( $node->safe_psql(
		'app', q{
	SELECT count(*) FROM aimroute.leads l
	 WHERE send_to_dealer AND source IS DISTINCT FROM 'fuzz-restore'
	   AND NOT EXISTS (SELECT FROM aimroute.lead_notifications n WHERE n.lead_id = l.lead_id)}),
	'0',
	'every lead to send has a notice queued');
my $lead_count = $node->safe_psql('app', 'SELECT count(*) FROM aimroute.leads');

# Staging: every row of a processed batch has an outcome that holds.
is( $node->safe_psql(
		'app', q{
	SELECT count(*) FROM aimroute.lead_staging s
	 WHERE batch_id IN (SELECT DISTINCT batch_id FROM aimroute.lead_staging WHERE status IS NOT NULL)
	   AND (status IS NULL
	        OR (status = 'processed' AND NOT EXISTS (SELECT FROM aimroute.leads l WHERE l.lead_id = s.lead_id))
	        OR (status = 'rejected' AND coalesce(reason, '') = '')
	        OR (status = 'duplicate' AND duplicate_of IS NULL))}),
	'0',
	'every staged row of a processed batch is processed into a lead, rejected with a reason, or a duplicate');

# Loads: every non-empty line of a file is loaded or rejected, once.
my %loads = map { my ($p, $n) = split /\|/; ($p => $n) } split /\n/,
  $node->safe_psql('app', q{SELECT path || '|' || (rows_loaded + rows_rejected) FROM aimroute.postal_code_loads WHERE finished_at IS NOT NULL});
my @miscounted = grep { exists $loads{$_} && $loads{$_} != $expected_lines{$_} } sort keys %expected_lines;
is(scalar(@miscounted), 0, 'every non-empty line of a loaded file is loaded or rejected, once')
  or diag(join("\n", map { "$_: $expected_lines{$_} lines, $loads{$_} outcomes" } @miscounted));
my @nul_miscounted = grep { exists $loads{$_} && $loads{$_} != $nul_files{$_} } sort keys %nul_files;
is(scalar(@nul_miscounted), 0, 'files with NUL bytes: every non-empty line is loaded or rejected, once')
  or diag(join("\n", map { "$_: $nul_files{$_} lines, $loads{$_} outcomes" } @nul_miscounted));
is( $node->safe_psql('app',
		q{SELECT count(*) FROM aimroute.postal_code_load_issues WHERE NOT fuzz.valid_utf8(raw_line) OR NOT fuzz.valid_utf8(postal_code)}),
	'0',
	'every load issue is valid UTF-8');

# Errors: a summary, then the ones that are bugs.
my $summary = $node->safe_psql(
	'app', q{
	SELECT target || ' ' || sqlstate || ' x' || count(*) || ': '
	       || regexp_replace(left(min(message), 100), '[[:cntrl:]]', ' ', 'g')
	  FROM fuzz.errors GROUP BY target, sqlstate ORDER BY target, sqlstate});
diag("fuzz: $lead_count leads; errors by target and SQLSTATE:\n$summary");

my @errors = map { [ split /\x1f/, $_, -1 ] } split /\x1e/,
  $node->safe_psql('app',
	q{SELECT string_agg(concat_ws(chr(31), stmt, target, sqlstate,
	                                   translate(coalesce(message, ''), chr(30) || chr(31), '  ')), chr(30) ORDER BY stmt)
	    FROM fuzz.errors});
# Known bugs: each is a TODO test until fixed; remove its entry then, and
# the errors it explains count as failures again.
my @known_bugs = ();
my (@internal, @unclear, @no_message, @invariant);
my %known = map { $_->{name} => [] } @known_bugs;
ERROR: for my $e (@errors)
{
	my ($n, $target, $state, $message) = @$e;
	next unless defined $state;
	my $line = "statement $n, $target: $state: " . substr($message, 0, 300) =~ s/[\x00-\x1f]/ /gr;
	for my $bug (@known_bugs)
	{
		if ($bug->{match}->($target, $state, $message))
		{
			push @{ $known{ $bug->{name} } }, $line;
			next ERROR;
		}
	}
	if ($state eq 'FZ001' || $state eq 'FZ002') { push @invariant, $line; next }
	push @no_message, $line if $message eq '';
	if ($state eq 'XX000')
	{
		# PostGIS's geography input raises XX000 for text it cannot parse
		# ("parse error - invalid geometry", "Invalid hex character"):
		# outside aimroute, counted in the summary above.
		push @internal, $line unless $target eq 'dealers_location_text';
		next;
	}
	my $ok = !$no_error{$target}
	  && grep { $state eq $_ || substr($state, 0, 2) eq $_ } @{ $allowed{$target} // [] };
	push @unclear, $line unless $ok;
}
is(scalar(@internal), 0, 'no error was an internal error (XX000)') or diag(join("\n", @internal[0 .. min(9, $#internal)]));
is(scalar(@no_message), 0, 'every error has a message') or diag(join("\n", @no_message[0 .. min(9, $#no_message)]));
is(scalar(@unclear), 0, 'every error is one its function may raise on bad input')
  or diag(join("\n", @unclear[0 .. min(19, $#unclear)]));
is(scalar(@invariant), 0, 'every invariant held') or diag(join("\n", @invariant[0 .. min(19, $#invariant)]));
for my $bug (@known_bugs)
{
	my @shown = @{ $known{ $bug->{name} } };
	TODO:
	{
		local $TODO = $bug->{todo};
		is(scalar(@shown), 0, "known bug did not show: $bug->{name}") or diag(join("\n", @shown[0 .. min(2, $#shown)]));
	}
}

diag( 'fuzz: leads measured by road: '
	  . $node->safe_psql('app', q{
	SELECT count(DISTINCT l.lead_id) FROM aimroute.leads l CROSS JOIN LATERAL aimroute.explain_lead(l.lead_id) e
	 WHERE e.message LIKE 'road distances: %'}));
my $deliveries = $node->safe_psql('app',
	q{SELECT string_agg(status || ' ' || n, ', ' ORDER BY status) FROM (SELECT status, count(*) n FROM aimroute.outbox GROUP BY 1) x});
diag("fuzz: outbox messages by status: $deliveries");

sub min { return $_[0] < $_[1] ? $_[0] : $_[1] }

$node->stop;
stop($smtp);
stop($http);
done_testing();
