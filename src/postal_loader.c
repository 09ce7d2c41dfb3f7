/*
 * postal_loader.c
 *		aimroute.load_postal_codes(path, format): bulk-load a postal-code file.
 *
 * The file is read on the server, plain or gzip-compressed (zlib reads both).
 * The only format so far is 'geonames', the tab-separated layout of GeoNames'
 * postal-code dumps: country, postal code, place name, admin name1, admin
 * code1, admin name2, admin code2, admin name3, admin code3, latitude,
 * longitude, accuracy.
 *
 * Real files have flaws, and the loader's job is to say so, not to hide them
 * or to give up.  Each line ends in one of three ways:
 *
 *	- loaded;
 *	- loaded with a flaw (no coordinates, so no centre point; no state code);
 *	- rejected (wrong number of fields, unknown country, malformed postal code,
 *	  unreadable or half-missing coordinates, a postal code repeated in the
 *	  file).
 *
 * Every flaw and rejection is a row of aimroute.postal_code_load_issues, and
 * the function ends with a WARNING that gives the counts and the first
 * examples.  Loading is an upsert: a code already in the table is updated.
 * Rows are inserted in batches through one kept SPI plan over unnest().
 */
#include "postgres.h"

#include <errno.h>

#include <math.h>
#include <zlib.h>

#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "parser/scansup.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "country.h"
#include "postal.h"
#include "postgis.h"
#include "search_path.h"

#define LOADER_BATCH_ROWS	1000
#define LOADER_MAX_LINE		65536
#define LOADER_MAX_EXAMPLES 5
#define LOADER_MAX_CODE		20
#define LOADER_RAW_KEEP		500
#define GEONAMES_FIELDS		12
#define LOADER_COLUMNS		9

/* Columns of one batch, in the order of the INSERT's unnest(). */
enum LoaderColumn
{
	COL_COUNTRY,
	COL_POSTAL_CODE,
	COL_PLACE_NAME,
	COL_STATE_CODE,
	COL_STATE_NAME,
	COL_COUNTY,
	COL_COUNTY_CODE,
	COL_LATITUDE,
	COL_LONGITUDE
};

typedef struct LoaderState
{
	int64 load_id;
	SPIPlanPtr insert_plan;
	SPIPlanPtr issue_plan;
	MemoryContext batch_context;
	ArrayBuildState *columns[LOADER_COLUMNS];
	int batch_rows;
	HTAB *seen; /* "CC code" -> first line number */
	int64 loaded;
	int64 flawed;
	int64 rejected;
	StringInfoData examples; /* first problems, for the WARNING */
	int example_count;
} LoaderState;

typedef struct SeenEntry
{
	char key[LOADER_MAX_CODE + 4];
	int64 line_number;
} SeenEntry;

static char *BundledPath(void);
static void CheckReadPermission(const char *path);
static int64 StartLoad(const char *path, const char *format);
static void FinishLoad(LoaderState *state);
static void PrepareLoaderPlans(LoaderState *state);
static void ReportIssue(LoaderState *state, int64 line_number, bool rejected, const char *raw,
						const char *problem);
static void LoadGeonamesLine(LoaderState *state, int64 line_number, char *line);
static int SplitGeonamesLine(char *line, char *fields[GEONAMES_FIELDS]);
static char *CheckCoordinates(char *fields[GEONAMES_FIELDS], double *lat, double *lon,
							  bool *has_point);
static char *StateCode(const char *country, char *fields[GEONAMES_FIELDS]);
static char *LineFlaws(const char *country, const char *state_code, char *fields[GEONAMES_FIELDS],
					   double lat, double lon, bool *has_point);
static void AddTextColumn(LoaderState *state, enum LoaderColumn col, const char *value);
static char *TrimField(char *s);
static bool ParseCoordinate(const char *s, double limit, double *value);
static const char *CanadianProvinceCode(const char *geonames_code);
static const char *ImplausiblePoint(const char *country, const char *state_code, double lat,
									double lon);
static void AddColumn(LoaderState *state, enum LoaderColumn col, Datum value, bool isnull,
					  Oid type);
static void FlushBatch(LoaderState *state);
static bool ReadLine(gzFile file, StringInfo line, bool *too_long);
static gzFile OpenPostalFile(const char *path);
static void StartLoaderState(LoaderState *state);
static int64 LoadLines(LoaderState *state, gzFile file);
static void CheckReadToEnd(gzFile file, const char *path, const char *shown, int64 line_number);
static void ReportLoad(LoaderState *state, const char *shown);
static char *ValidTextPrefix(const char *s, int max);

PG_FUNCTION_INFO_V1(aimroute_load_postal_codes);
PG_FUNCTION_INFO_V1(aimroute_bundled_postal_codes_path);

/*
 * aimroute_bundled_postal_codes_path is the SQL function
 * aimroute.bundled_postal_codes_path(): the shipped data file, installed by
 * "make install" into the server's share/extension directory.
 */
Datum
aimroute_bundled_postal_codes_path(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(BundledPath()));
}

/*
 * BundledPath returns the path of the postal-code file shipped with
 * aimroute.
 */
static char *
BundledPath(void)
{
	char sharepath[MAXPGPATH];

	get_share_path(my_exec_path, sharepath);
	return psprintf("%s/extension/%s", sharepath, "aimroute_postal_codes.tsv.gz");
}

/*
 * CheckReadPermission refuses callers that may not read server files, as
 * COPY FROM a file does, unless the file is the one shipped with aimroute:
 * its public data is what a non-superuser owner of aimroute loads.
 */
static void
CheckReadPermission(const char *path)
{
	if (strcmp(path, BundledPath()) == 0)
		return;
	if (!has_privs_of_role(GetUserId(), ROLE_PG_READ_SERVER_FILES))
		ereport(
			ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied to load postal codes from a server file"),
			 errdetail(
				 "Only superusers and roles with privileges of the \"pg_read_server_files\" role may read files on the server."),
			 errhint(
				 "GRANT pg_read_server_files TO the loading role, or have a superuser run the load.  The file shipped with aimroute, aimroute.bundled_postal_codes_path(), needs neither.")));
}

/*
 * StartLoad records a new load in aimroute.postal_code_loads and returns its
 * id.
 */
static int64
StartLoad(const char *path, const char *format)
{
	Datum values[2] = { CStringGetTextDatum(path), CStringGetTextDatum(format) };
	Oid types[2] = { TEXTOID, TEXTOID };
	bool isnull;
	int64 load_id;

	if (SPI_execute_with_args("INSERT INTO aimroute.postal_code_loads (path, format)"
							  " VALUES ($1, $2) RETURNING load_id",
							  2, types, values, NULL, false, 1) != SPI_OK_INSERT_RETURNING ||
		SPI_processed != 1)
		elog(ERROR, "could not record the postal-code load");
	load_id =
		DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	return load_id;
}

/*
 * FinishLoad stores the counts of a load.
 */
static void
FinishLoad(LoaderState *state)
{
	Datum values[4];
	Oid types[4] = { INT8OID, INT8OID, INT8OID, INT8OID };

	values[0] = Int64GetDatum(state->load_id);
	values[1] = Int64GetDatum(state->loaded);
	values[2] = Int64GetDatum(state->flawed);
	values[3] = Int64GetDatum(state->rejected);
	if (SPI_execute_with_args("UPDATE aimroute.postal_code_loads"
							  " SET rows_loaded = $2, rows_flawed = $3,"
							  " rows_rejected = $4, finished_at = clock_timestamp()"
							  " WHERE load_id = $1",
							  4, types, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not record the postal-code load's counts");
}

/*
 * PrepareLoaderPlans prepares the batch INSERT and the issue INSERT.  The
 * plans live for one call: the PostGIS schema is part of the query text.
 */
static void
PrepareLoaderPlans(LoaderState *state)
{
	Oid insert_types[LOADER_COLUMNS] = { TEXTARRAYOID, TEXTARRAYOID,   TEXTARRAYOID,
										 TEXTARRAYOID, TEXTARRAYOID,   TEXTARRAYOID,
										 TEXTARRAYOID, FLOAT8ARRAYOID, FLOAT8ARRAYOID };
	Oid issue_types[6] = { INT8OID, INT8OID, TEXTOID, TEXTOID, TEXTOID, BOOLOID };
	const char *gis = PostgisSchema();
	char *sql;

	sql = psprintf("INSERT INTO aimroute.postal_codes AS p"
				   " (country, postal_code, place_name, state_code, state_name,"
				   "  county, county_code, centroid)"
				   " SELECT c, z, pl, sc, sn, co, cc,"
				   "  CASE WHEN lat IS NOT NULL AND lon IS NOT NULL"
				   "   THEN %s.st_setsrid(%s.st_makepoint(lon, lat), 4326)::%s.geography END"
				   " FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9)"
				   "  AS u(c, z, pl, sc, sn, co, cc, lat, lon)"
				   " ON CONFLICT (country, postal_code) DO UPDATE SET"
				   "  place_name = EXCLUDED.place_name,"
				   "  state_code = EXCLUDED.state_code,"
				   "  state_name = EXCLUDED.state_name,"
				   "  county = EXCLUDED.county,"
				   "  county_code = EXCLUDED.county_code,"
				   "  centroid = EXCLUDED.centroid",
				   gis, gis, gis);
	state->insert_plan = SPI_prepare(sql, LOADER_COLUMNS, insert_types);
	if (state->insert_plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));

	state->issue_plan =
		SPI_prepare("INSERT INTO aimroute.postal_code_load_issues"
					" (load_id, line_number, postal_code, problem, raw_line, rejected)"
					" VALUES ($1, $2, $3, $4, $5, $6)",
					6, issue_types);
	if (state->issue_plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
}

/*
 * ValidTextPrefix copies at most max bytes of the NUL-terminated s as valid
 * text of the database encoding: a byte that does not start a valid
 * character becomes '?', and no character is cut.
 */
static char *
ValidTextPrefix(const char *s, int max)
{
	int encoding = GetDatabaseEncoding();
	int left = strlen(s);
	StringInfoData out;

	initStringInfo(&out);
	while (left > 0)
	{
		int n = IS_HIGHBIT_SET(*s) ? pg_encoding_verifymbchar(encoding, s, left) : 1;

		if (n < 0)
		{
			if (out.len + 1 > max)
				break;
			appendStringInfoChar(&out, '?');
			n = 1;
		}
		else
		{
			if (out.len + n > max)
				break;
			appendBinaryStringInfo(&out, s, n);
		}
		s += n;
		left -= n;
	}
	return out.data;
}

/*
 * ReportIssue records one flawed or rejected line, and keeps the first few
 * for the closing WARNING.
 */
static void
ReportIssue(LoaderState *state, int64 line_number, bool rejected, const char *raw,
			const char *problem)
{
	Datum values[6];
	char nulls[6] = { ' ', ' ', ' ', ' ', ' ', ' ' };
	char *keep;
	char *code = NULL;
	const char *tab1;
	const char *tab2;

	if (rejected)
		state->rejected++;
	else
		state->flawed++;

	/*
	 * The raw line, cut to a readable length: valid text only, since the
	 * line may be reported because its encoding is not (a byte that is not
	 * part of a valid character becomes '?').
	 */
	keep = ValidTextPrefix(raw, LOADER_RAW_KEEP);

	/* The second field, when there is one, is the postal code as written. */
	tab1 = strchr(keep, '\t');
	if (tab1 != NULL)
	{
		tab2 = strchr(tab1 + 1, '\t');
		code = pnstrdup(tab1 + 1, tab2 ? (size_t) (tab2 - tab1 - 1) : strlen(tab1 + 1));
		code[pg_mbcliplen(code, strlen(code), LOADER_MAX_CODE)] = '\0';
	}

	values[0] = Int64GetDatum(state->load_id);
	values[1] = Int64GetDatum(line_number);
	if (code != NULL && code[0] != '\0')
		values[2] = CStringGetTextDatum(code);
	else
		nulls[2] = 'n';
	values[3] = CStringGetTextDatum(problem);
	values[4] = CStringGetTextDatum(keep);
	values[5] = BoolGetDatum(rejected);
	if (SPI_execute_plan(state->issue_plan, values, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not record a postal-code load issue");

	if (state->example_count < LOADER_MAX_EXAMPLES)
	{
		appendStringInfo(&state->examples, "%sline " INT64_FORMAT " (%s): %s.",
						 state->example_count > 0 ? "\n" : "", line_number,
						 rejected ? "rejected" : "loaded with flaw", problem);
		state->example_count++;
	}
}

/*
 * TrimField cuts the white space off both ends of s, in place.
 */
static char *
TrimField(char *s)
{
	char *end;

	while (*s != '\0' && scanner_isspace(*s))
		s++;
	end = s + strlen(s);
	while (end > s && scanner_isspace(end[-1]))
		*--end = '\0';
	return s;
}

/*
 * ParseCoordinate reads a decimal degree from s into *value and checks it
 * against +/-limit.  Returns false when s is not a finite number in range.
 */
static bool
ParseCoordinate(const char *s, double limit, double *value)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (end == s || errno != 0)
		return false;
	while (*end != '\0' && scanner_isspace(*end))
		end++;
	if (*end != '\0' || !isfinite(v) || fabs(v) > limit)
		return false;
	*value = v;
	return true;
}

/*
 * CanadianProvinceCode maps GeoNames' numeric admin1 codes for Canada to
 * postal abbreviations (GeoNames writes "08" where Canada Post writes "ON").
 * Returns NULL for codes that are not numeric province codes.
 */
static const char *
CanadianProvinceCode(const char *geonames_code)
{
	static const char *const provinces[] = { NULL, "AB", "BC", "MB", "NB", "NL", NULL, "NS",
											 "ON", "PE", "QC", "SK", "YT", "NT", "NU" };
	char *end;
	long n;

	if (!isdigit((unsigned char) geonames_code[0]))
		return NULL;
	n = strtol(geonames_code, &end, 10);
	if (*end != '\0' || n < 0 || n >= (long) lengthof(provinces))
		return NULL;
	return provinces[n];
}

/*
 * ImplausiblePoint says why a point cannot be the centre of a postal code of
 * country, or returns NULL when it may be.  It catches the placeholders and
 * typing slips seen in real files, not every wrong point: 0,0; a longitude
 * east of Greenwich for a US state, DC, Puerto Rico or the Virgin Islands (a
 * lost minus sign; the Aleutians lie beyond 140 E); a Canadian point outside
 * Canada.  Military (AA, AE, AP) and Pacific (AS, FM, GU, MH, MP, PW) ZIP
 * codes lie abroad by right.
 */
static const char *
ImplausiblePoint(const char *country, const char *state_code, double lat, double lon)
{
	static const char *const abroad[] = { "AA", "AE", "AP", "AS", "FM", "GU", "MH", "MP", "PW" };

	if (lat == 0.0 && lon == 0.0)
		return "are a placeholder (0, 0 is in the Gulf of Guinea)";
	if (strcmp(country, "US") == 0 && lon > 0.0 && lon < 140.0)
	{
		for (int i = 0; i < (int) lengthof(abroad); i++)
			if (strcmp(state_code, abroad[i]) == 0)
				return NULL;
		return "lie east of Greenwich, outside the United States (the longitude's minus sign looks lost)";
	}
	if (strcmp(country, "CA") == 0 && (lat < 41.6 || lat > 83.2 || lon < -141.1 || lon > -52.6))
		return "lie outside Canada (latitude 41.6 to 83.2, longitude -141.1 to -52.6)";
	return NULL;
}

/*
 * AddColumn appends one value to a column of the current batch.
 */
static void
AddColumn(LoaderState *state, enum LoaderColumn col, Datum value, bool isnull, Oid type)
{
	state->columns[col] =
		accumArrayResult(state->columns[col], value, isnull, type, state->batch_context);
}

/*
 * FlushBatch inserts the rows of the current batch and starts a new one.
 */
static void
FlushBatch(LoaderState *state)
{
	Datum values[LOADER_COLUMNS];

	if (state->batch_rows == 0)
		return;
	for (int i = 0; i < LOADER_COLUMNS; i++)
		values[i] = makeArrayResult(state->columns[i], state->batch_context);
	if (SPI_execute_plan(state->insert_plan, values, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not insert a batch of postal codes");

	MemoryContextReset(state->batch_context);
	memset(state->columns, 0, sizeof(state->columns));
	state->loaded += state->batch_rows;
	state->batch_rows = 0;
}

/*
 * SplitGeonamesLine splits a line on tabs into fields, each trimmed; it
 * returns how many fields the line has (the optional accuracy field, which
 * editors strip with the trailing tab, counted as empty when missing).
 */
static int
SplitGeonamesLine(char *line, char *fields[GEONAMES_FIELDS])
{
	int nfields = 0;
	char *p = line;

	for (;;)
	{
		char *tab = strchr(p, '\t');

		if (tab != NULL)
			*tab = '\0';
		if (nfields < GEONAMES_FIELDS)
			fields[nfields] = TrimField(p);
		nfields++;
		if (tab == NULL)
			break;
		p = tab + 1;
	}
	if (nfields == GEONAMES_FIELDS - 1)
		fields[nfields++] = "";
	return nfields;
}

/*
 * CheckCoordinates reads a line's latitude and longitude (fields 9 and
 * 10) into *lat and *lon, and *has_point when both are given; NULL when
 * they can be loaded, otherwise why the line is rejected.
 */
static char *
CheckCoordinates(char *fields[GEONAMES_FIELDS], double *lat, double *lon, bool *has_point)
{
	bool has_lat = fields[9][0] != '\0';
	bool has_lon = fields[10][0] != '\0';

	*has_point = has_lat && has_lon;
	if (has_lat != has_lon)
		return psprintf("%s is empty but %s is \"%s\": the columns look shifted",
						has_lat ? "longitude" : "latitude", has_lat ? "latitude" : "longitude",
						has_lat ? fields[9] : fields[10]);
	if (has_lat && !ParseCoordinate(fields[9], 90.0, lat))
		return psprintf("latitude \"%s\" is not a number between -90 and 90", fields[9]);
	if (has_lon && !ParseCoordinate(fields[10], 180.0, lon))
		return psprintf("longitude \"%s\" is not a number between -180 and 180", fields[10]);
	return NULL;
}

/*
 * StateCode is a line's state code (field 4), upper-cased; for Canada,
 * GeoNames' numeric province code becomes the postal abbreviation.
 */
static char *
StateCode(const char *country, char *fields[GEONAMES_FIELDS])
{
	char *state_code = fields[4];

	for (char *c = state_code; *c; c++)
		*c = pg_ascii_toupper((unsigned char) *c);
	if (strcmp(country, "CA") == 0 && CanadianProvinceCode(state_code) != NULL)
		state_code = (char *) CanadianProvinceCode(state_code);
	return state_code;
}

/*
 * LineFlaws says what is wrong with a line that is loaded all the same
 * ("" when nothing): no centre point, a centre point outside the country
 * (*has_point is then cleared: it is loaded without one), no state code,
 * no county.
 */
static char *
LineFlaws(const char *country, const char *state_code, char *fields[GEONAMES_FIELDS], double lat,
		  double lon, bool *has_point)
{
	StringInfoData flaws;

	initStringInfo(&flaws);
	if (!*has_point)
		appendStringInfoString(
			&flaws,
			"no coordinates: loaded without a centre point, so radius routing cannot use it");
	else
	{
		const char *implausible = ImplausiblePoint(country, state_code, lat, lon);

		if (implausible != NULL)
		{
			appendStringInfo(
				&flaws,
				"coordinates %s, %s %s: loaded without a centre point, so radius routing cannot use it",
				fields[9], fields[10], implausible);
			*has_point = false;
		}
	}
	if (state_code[0] == '\0')
		appendStringInfo(
			&flaws,
			"%sno state code (state name \"%s\"): state and county territories cannot match it",
			flaws.len > 0 ? "; " : "", fields[3]);
	else if (strcmp(country, "US") == 0 && fields[5][0] == '\0')
		appendStringInfo(&flaws, "%sno county: county territories cannot match it",
						 flaws.len > 0 ? "; " : "");
	return flaws.data;
}

/*
 * AddTextColumn adds a text field to the batch, NULL when empty.
 */
static void
AddTextColumn(LoaderState *state, enum LoaderColumn col, const char *value)
{
	AddColumn(state, col, CStringGetTextDatum(value), value[0] == '\0', TEXTOID);
}

/*
 * LoadGeonamesLine checks one line of a GeoNames file and adds it to the
 * batch, or records why it cannot be loaded.  (Not inlined into the
 * caller's PG_TRY, where its locals would be at the mercy of longjmp.)
 */
static pg_noinline void
LoadGeonamesLine(LoaderState *state, int64 line_number, char *line)
{
	char *raw = pstrdup(line);
	char *fields[GEONAMES_FIELDS];
	int nfields = SplitGeonamesLine(line, fields);
	const char *country;
	char *code;
	char *state_code;
	char *why;
	char *flaws;
	double lat = 0, lon = 0;
	bool has_point = false;
	SeenEntry *seen;
	bool found;
	char key[LOADER_MAX_CODE + 4];

	if (nfields != GEONAMES_FIELDS)
	{
		ReportIssue(
			state, line_number, true, raw,
			psprintf("expected %d tab-separated fields, found %d", GEONAMES_FIELDS, nfields));
		return;
	}
	country = CountryNormalize(fields[0], strlen(fields[0]));
	if (country == NULL)
	{
		ReportIssue(state, line_number, true, raw,
					psprintf("unknown country code \"%s\"", fields[0]));
		return;
	}
	code = PostalNormalizeLexical(country, fields[1], strlen(fields[1]));
	if (code == NULL)
		why = "empty postal code";
	else if (strlen(code) > LOADER_MAX_CODE || !PostalIsWellFormed(country, code))
		why = psprintf("\"%s\" is not a valid %s postal code", fields[1], country);
	else
		why = CheckCoordinates(fields, &lat, &lon, &has_point);
	if (why != NULL)
	{
		ReportIssue(state, line_number, true, raw, why);
		return;
	}

	snprintf(key, sizeof(key), "%s %s", country, code);
	seen = hash_search(state->seen, key, HASH_ENTER, &found);
	if (found)
	{
		ReportIssue(state, line_number, true, raw,
					psprintf("postal code %s %s repeats line " INT64_FORMAT, country, code,
							 seen->line_number));
		return;
	}
	seen->line_number = line_number;

	state_code = StateCode(country, fields);
	flaws = LineFlaws(country, state_code, fields, lat, lon, &has_point);
	if (flaws[0] != '\0')
		ReportIssue(state, line_number, false, raw, flaws);

	AddTextColumn(state, COL_COUNTRY, country);
	AddTextColumn(state, COL_POSTAL_CODE, code);
	AddTextColumn(state, COL_PLACE_NAME, fields[2]);
	AddTextColumn(state, COL_STATE_CODE, state_code);
	AddTextColumn(state, COL_STATE_NAME, fields[3]);
	AddTextColumn(state, COL_COUNTY, fields[5]);
	AddTextColumn(state, COL_COUNTY_CODE, fields[6]);
	AddColumn(state, COL_LATITUDE, Float8GetDatum(lat), !has_point, FLOAT8OID);
	AddColumn(state, COL_LONGITUDE, Float8GetDatum(lon), !has_point, FLOAT8OID);
	if (++state->batch_rows >= LOADER_BATCH_ROWS)
		FlushBatch(state);
}

/*
 * ReadLine reads the next line of file into line, without its line end.
 * Returns false at the end of the file.  A line longer than LOADER_MAX_LINE
 * is consumed whole but only its start is kept, and *too_long is set.
 */
static bool
ReadLine(gzFile file, StringInfo line, bool *too_long)
{
	bool any = false;
	long read = 0;
	int c;

	/*
	 * Byte by byte, so that a NUL byte stays in the line (where the caller
	 * reports it) instead of ending it, and a file of no line ends at all
	 * (/dev/zero) can still be cancelled.
	 */
	resetStringInfo(line);
	*too_long = false;
	while ((c = gzgetc(file)) != -1)
	{
		any = true;
		if (c == '\n')
			break;
		if ((++read & 0xFFFF) == 0)
			CHECK_FOR_INTERRUPTS();
		if (line->len >= LOADER_MAX_LINE)
			*too_long = true;
		else
			appendStringInfoCharMacro(line, (char) c);
	}
	if (line->len > 0 && line->data[line->len - 1] == '\r')
		line->data[--line->len] = '\0';
	return any;
}

/*
 * OpenPostalFile opens a postal-code file (plain or gzip) for reading, or
 * raises an error that says what to do.
 */
static gzFile
OpenPostalFile(const char *path)
{
	gzFile file = gzopen(path, "rb");

	/* errcode_for_file_access() knows no ENAMETOOLONG: it would say XX000. */
	if (file == NULL && errno == ENAMETOOLONG)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("could not open postal-code file \"%.100s...\": %m", path),
						errhint("Give a shorter path to the file.")));
	if (file == NULL)
		ereport(
			ERROR,
			(errcode_for_file_access(), errmsg("could not open postal-code file \"%s\": %m", path),
			 errhint(
				 "The path is read by the server process; a relative path is relative to the data directory.")));
	return file;
}

/*
 * StartLoaderState readies a load: the batch and the table of codes seen,
 * in the caller's memory context (not SPI's: the report outlives the SPI
 * connection).
 */
static void
StartLoaderState(LoaderState *state)
{
	HASHCTL hctl;

	memset(state, 0, sizeof(*state));
	initStringInfo(&state->examples);
	state->batch_context = AllocSetContextCreate(CurrentMemoryContext, "aimroute postal batch",
												 ALLOCSET_DEFAULT_SIZES);
	hctl.keysize = LOADER_MAX_CODE + 4;
	hctl.entrysize = sizeof(SeenEntry);
	hctl.hcxt = CurrentMemoryContext;
	state->seen = hash_create("aimroute postal codes seen", 65536, &hctl,
							  HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
}

/*
 * LoadLines loads every line of file, each in a memory context reset after
 * it; lines that are too long or not text are rejected.  Returns how many
 * lines there were.
 */
static int64
LoadLines(LoaderState *state, gzFile file)
{
	MemoryContext line_context =
		AllocSetContextCreate(CurrentMemoryContext, "aimroute postal line", ALLOCSET_DEFAULT_SIZES);
	StringInfoData line;
	int64 line_number = 0;
	bool too_long;

	initStringInfo(&line);
	while (ReadLine(file, &line, &too_long))
	{
		MemoryContext old;

		line_number++;
		CHECK_FOR_INTERRUPTS();
		old = MemoryContextSwitchTo(line_context);
		if (too_long)
			ReportIssue(state, line_number, true, line.data,
						psprintf("line longer than %d bytes", LOADER_MAX_LINE));
		else if (!pg_verifymbstr(line.data, line.len, true) ||
				 memchr(line.data, '\0', line.len) != NULL)
			ReportIssue(state, line_number, true, "",
						psprintf("not valid %s text", GetDatabaseEncodingName()));
		else if (line.len > 0)
			LoadGeonamesLine(state, line_number, line.data);
		MemoryContextSwitchTo(old);
		MemoryContextReset(line_context);
	}
	return line_number;
}

/*
 * CheckReadToEnd raises an error when the file could not be read to its
 * end (a read error, a truncated or corrupt .gz file): the load is then
 * not committed.  shown is the file's name in messages.
 */
static void
CheckReadToEnd(gzFile file, const char *path, const char *shown, int64 line_number)
{
	int zerr;
	const char *msg = gzerror(file, &zerr);

	/* zlib puts the path in front of its message: it is ours to show. */
	if (strncmp(msg, path, strlen(path)) == 0 && strncmp(msg + strlen(path), ": ", 2) == 0)
		msg += strlen(path) + 2;
	if (zerr == Z_ERRNO)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not read postal-code file \"%s\" after line " INT64_FORMAT ": %m",
						shown, line_number)));
	if (zerr != Z_OK)
		ereport(
			ERROR,
			(errcode(ERRCODE_DATA_CORRUPTED),
			 errmsg("could not read postal-code file \"%s\" after line " INT64_FORMAT ": %s", shown,
					line_number, msg),
			 errhint(
				 "Check that the file is complete; a truncated .gz file cannot be read to its end.")));
}

/*
 * ReportLoad says how the load went: a NOTICE, or a WARNING with the first
 * problems and where to find all of them.
 */
static void
ReportLoad(LoaderState *state, const char *shown)
{
	if (state->flawed + state->rejected > 0)
		ereport(
			WARNING,
			(errcode(ERRCODE_WARNING),
			 errmsg("postal-code file \"%s\": " INT64_FORMAT " loaded (" INT64_FORMAT
					" with flaws), " INT64_FORMAT " rejected",
					shown, state->loaded, state->flawed, state->rejected),
			 errdetail("%s", state->examples.data),
			 errhint(
				 "Every problem is listed in aimroute.postal_code_load_issues WHERE load_id = " INT64_FORMAT
				 ".",
				 state->load_id)));
	else
		ereport(NOTICE,
				(errmsg("postal-code file \"%s\": " INT64_FORMAT " loaded", shown, state->loaded)));
}

/*
 * aimroute_load_postal_codes is the SQL function
 * aimroute.load_postal_codes(path text, format text): returns the number of
 * rows loaded (flawed rows included).
 */
Datum
aimroute_load_postal_codes(PG_FUNCTION_ARGS)
{
	char *path = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char *format = text_to_cstring(PG_GETARG_TEXT_PP(1));
	LoaderState state;
	volatile gzFile file;
	const char *shown;

	CheckReadPermission(path);
	if (pg_strcasecmp(format, "geonames") != 0)
		ereport(
			ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unsupported postal-code file format \"%s\"", format),
			 errhint(
				 "The supported format is 'geonames' (GeoNames' tab-separated postal-code layout).")));
	file = OpenPostalFile(path);
	/* Once open, messages name the file; postal_code_loads keeps the path. */
	shown = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;

	PG_TRY();
	{
		int pinned;
		int64 lines;

		StartLoaderState(&state);
		pinned = SpiConnectPinned();
		state.load_id = StartLoad(path, "geonames");
		PrepareLoaderPlans(&state);
		lines = LoadLines(&state, file);
		CheckReadToEnd(file, path, shown, lines);
		FlushBatch(&state);
		FinishLoad(&state);
		SpiFinishPinned(pinned);
	}
	PG_FINALLY();
	{
		gzclose(file);
	}
	PG_END_TRY();

	ReportLoad(&state, shown);
	PG_RETURN_INT64(state.loaded);
}
