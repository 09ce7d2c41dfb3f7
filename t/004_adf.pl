# t/004_adf.pl: ADF documents outside a UTF8 database, and against a DTD.
#
# The same document rendered in a UTF8 and in a LATIN1 database is the same
# UTF-8 text once read with client_encoding UTF8 (nothing double-encoded);
# a SQL_ASCII database, whose bytes may be anything, still yields valid
# UTF-8.  Rendered documents are validated with xmllint against
# test/data/adf.dtd, the part of the ADF 1.0 DTD aimroute uses, and a
# document with its elements out of order is refused, so the check bites.
#
# PostGIS placement: public (t/lib/Placement.pm).
use strict;
use warnings;

use File::Spec;
use FindBin;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use Placement;

my $placement = Placement::pick('public');

my $node = PostgreSQL::Test::Cluster->new('adf');
$node->init;
$node->start;

for my $enc ('UTF8', 'LATIN1', 'SQL_ASCII')
{
	my $db = lc $enc;
	$node->safe_psql('postgres',
		"CREATE DATABASE $db ENCODING '$enc' LOCALE 'C' TEMPLATE template0");
	Placement::install($node, $db, $placement);
}

# Every value as SQL; non-ASCII characters from chr(), which is the same
# character in UTF8 and LATIN1 below 256, so this file stays ASCII.
my @values = (
	'7', q{'2026-11-29T09:15:52-05:00'},
	'2027', q{'Lakeshore & <Boats>'},
	q{'Sport ]]> 210'}, q{'Zo' || chr(235) || ' ' || chr(209) || 'and' || chr(250)},
	q{$$O'Brien & "Sons"$$}, q{'a@example.com'},
	q{E'906\x01555'}, q{E' \t'},
	q{'Montr' || chr(233) || 'al'}, q{'QC'},
	q{'H2X 1Y4'}, q{'CA'},
	q{E'line 1\r\nline 2' || chr(127) || chr(255)}, q{'D1'},
	q{'D' || chr(233) || 'j' || chr(224) || ' Vu'}, q{'OEM'});
my $render = 'SELECT aimroute.adf_render(' . join(', ', @values) . ')';

my $utf8 = $node->safe_psql('utf8', "SET client_encoding = 'UTF8'; $render");
my $latin1 = $node->safe_psql('latin1', "SET client_encoding = 'UTF8'; $render");
like($utf8, qr/<name part="first">Zo\xc3\xab \xc3\x91and\xc3\xba<\/name>/,
	'UTF8 database: the values are UTF-8');
is($latin1, $utf8,
	'LATIN1 database: the same document, read with client_encoding UTF8 (the text is LATIN1, not UTF-8 bytes in a LATIN1 value)'
);
is( $node->safe_psql(
		'latin1', "SELECT xml_is_well_formed_document(d) FROM ($render) x(d)"),
	't',
	'LATIN1 database: well formed for the server\'s own parser');
my $ascii = $node->safe_psql('sql_ascii',
	q{SELECT aimroute.adf_render(1, NULL, NULL, NULL, NULL, E'caf\xc3\xa9 \xff\xc3 x', NULL, NULL, NULL,
	                             NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)});
like($ascii, qr/<name part="first">caf\xc3\xa9 \xef\xbf\xbd\xef\xbf\xbd x<\/name>/,
	'SQL_ASCII database: UTF-8 kept, each byte that is not UTF-8 becomes U+FFFD');

# Documents to check against the DTD, from the UTF8 database.
my %docs = (hostile => $utf8, latin1 => $latin1, sql_ascii => $ascii);
$docs{all_null} = $node->safe_psql('utf8',
	'SELECT aimroute.adf_render(' . join(', ', ('NULL') x 18) . ')');
$docs{city_only} = $node->safe_psql('utf8',
	'SELECT aimroute.adf_render(' . join(', ', ('NULL') x 10, q{'Mackinac Island'}, ('NULL') x 7) . ')');
$docs{stored_lead} = $node->safe_psql(
	'utf8', q{
	SET client_min_messages = warning;
	INSERT INTO aimroute.brands VALUES ('LKB', 'Lakeshore Boats');
	INSERT INTO aimroute.dealers (dealer_number, name, country, postal_code) VALUES ('HQ', 'Corporate', 'US', '10001');
	UPDATE aimroute.settings SET default_dealer_number = 'HQ', timezone = 'America/New_York', oem_name = 'Lakeshore Marine';
	INSERT INTO aimroute.leads (brand_code, product_code, first_name, last_name, email, phone, address, city,
	                            state_code, country, postal_code, comment)
	VALUES ('LKB', '2027 Sport 210', 'Ann', 'Lee', 'ann@example.com', '906-555-0100', '1 Main St',
	        'Mackinac Island', 'MI', 'US', '49757', 'call me');
	SELECT aimroute.lead_adf(max(lead_id)) FROM aimroute.leads;
});
($docs{out_of_order} = $docs{stored_lead}) =~ s{(<year>.*?</year>\n)(\s*<make>.*?</make>\n)}{$2$1}s;

my $dtd = File::Spec->catfile($FindBin::RealBin, '..', 'test', 'data', 'adf.dtd');
my $dir = PostgreSQL::Test::Utils::tempdir();
my %file;
for my $name (sort keys %docs)
{
	$file{$name} = "$dir/$name.xml";
	open(my $fh, '>:raw', $file{$name}) or die "could not write $file{$name}: $!";
	print $fh $docs{$name};
	close($fh);
}

SKIP:
{
	skip 'xmllint not installed (Debian package libxml2-utils)', 10
	  unless system('xmllint --version >/dev/null 2>&1') == 0;

	# PostgreSQL's own xpath() and XMLTABLE cannot read non-ASCII text in a
	# database that is not UTF8 (a documented limitation), so the LATIN1
	# document is read back by xmllint, as a CRM would read it.
	my %read = (
		'//address/city' => "Montr\xc3\xa9al",
		'//customer/comments' => "line 1\r\nline 2\x7f\xc3\xbf",
		'//vendorname' => "D\xc3\xa9j\xc3\xa0 Vu");
	for my $path (sort keys %read)
	{
		my ($value, $stderr);
		IPC::Run::run([ 'xmllint', '--xpath', "string($path)", $file{latin1} ],
			'>', \$value, '2>', \$stderr);
		$value =~ s/\n\z//;    # xmllint ends what it prints with a newline
		is($value, $read{$path}, "LATIN1 database: $path reads back exactly");
	}

	for my $name (qw(hostile latin1 sql_ascii all_null city_only stored_lead))
	{
		command_ok([ 'xmllint', '--noout', '--dtdvalid', $dtd, $file{$name} ],
			"$name document is valid against the ADF 1.0 DTD");
	}
	command_fails([ 'xmllint', '--noout', '--dtdvalid', $dtd, $file{out_of_order} ],
		'... and make before year is refused');
}

$node->stop;
done_testing();
