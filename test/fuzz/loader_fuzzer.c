/*
 * loader_fuzzer.c
 *		libFuzzer target: the postal-code loader (src/postal_loader.c), the
 *		whole of aimroute.load_postal_codes() on a file whose bytes are the
 *		input -- gzip or plain, line reading, the GeoNames line parser,
 *		issue reporting and batching.
 *
 * Input layout: byte 0 chooses the database encoding (UTF8 or SQL_ASCII)
 * and the format argument; the rest is the file, written to a memfd that
 * the loader opens by its /proc/self/fd path.
 *
 * The tables are played by the SPI hook, which checks every row the loader
 * sends:
 *
 *	- postal_codes: country an alpha-2 code, postal code well formed for
 *	  it, at most 20 bytes and stored once per load; latitude and
 *	  longitude both given or both NULL, finite, in range; every text valid
 *	  in the database encoding;
 *	- postal_code_load_issues: one row per line at most (its primary key),
 *	  a problem, the raw line and the postal code valid in the database
 *	  encoding;
 *	- postal_code_loads: the counts it records are the rows the hook saw.
 *
 * And the call as a whole: an ERROR only for a gzip stream that cannot be
 * read (data_corrupted) or an unknown format (invalid_parameter_value);
 * the result is the number of rows loaded; for a plain file, every
 * non-empty line ends loaded or rejected, exactly once.
 */
#include "postgres.h"

#include <sys/mman.h>
#include <unistd.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"

#include "country.h"
#include "known_bugs.h"
#include "pg_shim.h"
#include "postal.h"

extern Datum aimroute_load_postal_codes(PG_FUNCTION_ARGS);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define LOAD_ID 42

/* What the hook saw during one load. */
static int64 rows_loaded;
static int64 rows_flawed;
static int64 rows_rejected;
static int64 last_issue_line;
static char **stored_keys;
static int nstored;
static int stored_alloc;
static bool counts_recorded;

/* TextArg reads a text argument the loader passed, checking its encoding. */
static char *
TextArg(Datum d, const char *what)
{
	text *t = DatumGetTextPP(d);
	int len = VARSIZE_ANY_EXHDR(t);

	SHIM_CHECK(memchr(VARDATA_ANY(t), '\0', len) == NULL, "%s holds a NUL byte", what);
	SHIM_CHECK(shim_is_valid_encoding(VARDATA_ANY(t), len), "%s is not valid %s text", what,
			   GetDatabaseEncodingName());
	return text_to_cstring(t);
}

/* ArrayArg reads an array argument of the batch INSERT. */
static ShimArray *
ArrayArg(Datum d, Oid element_type)
{
	ShimArray *a = (ShimArray *) DatumGetPointer(d);

	SHIM_CHECK(a != NULL && a->magic == SHIM_ARRAY_MAGIC, "batch argument is not a built array");
	SHIM_CHECK(a->element_type == element_type, "batch array of type %u, expected %u",
			   a->element_type, element_type);
	return a;
}

/* CheckBatch checks the rows of one batch INSERT into postal_codes. */
static void
CheckBatch(int nargs, Datum *values, const char *nulls)
{
	ShimArray *cols[9];

	SHIM_CHECK(nargs == 9, "batch INSERT with %d arguments", nargs);
	SHIM_CHECK(nulls == NULL || memchr(nulls, 'n', 9) == NULL, "a NULL batch array");
	for (int i = 0; i < 9; i++)
	{
		cols[i] = ArrayArg(values[i], i < 7 ? TEXTOID : FLOAT8OID);
		SHIM_CHECK(cols[i]->nelems == cols[0]->nelems, "batch columns of different lengths");
	}
	SHIM_CHECK(cols[0]->nelems > 0, "an empty batch");

	for (int r = 0; r < cols[0]->nelems; r++)
	{
		char *country;
		char *code;
		char key[64];

		SHIM_CHECK(!cols[0]->nulls[r] && !cols[1]->nulls[r], "row without country or code");
		country = TextArg(cols[0]->values[r], "country");
		code = TextArg(cols[1]->values[r], "postal code");
		SHIM_CHECK(CountryNormalize(country, strlen(country)) != NULL &&
					   strcmp(CountryNormalize(country, strlen(country)), country) == 0,
				   "country \"%s\" stored, not an alpha-2 code", country);
		SHIM_CHECK(strlen(code) <= 20 && PostalIsWellFormed(country, code),
				   "postal code \"%s\" stored for %s, not well formed", code, country);
		for (int i = 2; i < 7; i++)
			if (!cols[i]->nulls[r])
				(void) TextArg(cols[i]->values[r], "place, state or county");
		SHIM_CHECK(cols[7]->nulls[r] == cols[8]->nulls[r], "latitude without longitude");
		if (!cols[7]->nulls[r])
		{
			double lat = DatumGetFloat8(cols[7]->values[r]);
			double lon = DatumGetFloat8(cols[8]->values[r]);

			SHIM_CHECK(isfinite(lat) && isfinite(lon) && fabs(lat) <= 90 && fabs(lon) <= 180,
					   "coordinates %g, %g stored", lat, lon);
			SHIM_CHECK(!(lat == 0 && lon == 0), "the 0, 0 placeholder stored as a centre");
		}

		snprintf(key, sizeof(key), "%s %s", country, code);
		for (int i = 0; i < nstored; i++)
			SHIM_CHECK(strcmp(stored_keys[i], key) != 0, "postal code %s stored twice in one load",
					   key);
		if (nstored == stored_alloc)
		{
			stored_alloc = Max(64, stored_alloc * 2);
			stored_keys = realloc(stored_keys, sizeof(char *) * stored_alloc);
		}
		stored_keys[nstored++] = strdup(key);
	}
	rows_loaded += cols[0]->nelems;
}

/* LoaderHook plays the tables of aimroute.load_postal_codes(). */
static int
LoaderHook(const char *query, int nargs, const Oid *argtypes, Datum *values, const char *nulls)
{
	if (strstr(query, "INSERT INTO aimroute.postal_code_loads") != NULL)
	{
		(void) TextArg(values[0], "path");
		shim_spi_processed = 1;
		shim_spi_result[0] = Int64GetDatum(LOAD_ID);
		shim_spi_result_null[0] = false;
		return SPI_OK_INSERT_RETURNING;
	}
	if (strstr(query, "INSERT INTO aimroute.postal_codes") != NULL)
	{
		CheckBatch(nargs, values, nulls);
		shim_spi_processed = ((ShimArray *) DatumGetPointer(values[0]))->nelems;
		return SPI_OK_INSERT;
	}
	if (strstr(query, "INSERT INTO aimroute.postal_code_load_issues") != NULL)
	{
		int64 line;
		char *problem;

		SHIM_CHECK(nargs == 6, "issue INSERT with %d arguments", nargs);
		SHIM_CHECK(nulls == NULL || (nulls[0] != 'n' && nulls[1] != 'n' && nulls[3] != 'n' &&
									 nulls[4] != 'n' && nulls[5] != 'n'),
				   "an issue without load, line, problem, raw line or outcome");
		SHIM_CHECK(DatumGetInt64(values[0]) == LOAD_ID, "issue of another load");
		line = DatumGetInt64(values[1]);
		SHIM_CHECK(line > last_issue_line,
				   "issue for line " INT64_FORMAT " after line " INT64_FORMAT
				   ": the primary key (load_id, line_number) would refuse it",
				   line, last_issue_line);
		last_issue_line = line;
		if (nulls == NULL || nulls[2] != 'n')
		{
			char *code = TextArg(values[2], "issue postal code");

			SHIM_CHECK(code[0] != '\0', "empty issue postal code, not NULL");
		}
		problem = TextArg(values[3], "problem");
		SHIM_CHECK(problem[0] != '\0', "an issue with no problem");
		(void) TextArg(values[4], "raw line");
		if (DatumGetBool(values[5]))
			rows_rejected++;
		else
			rows_flawed++;
		return SPI_OK_INSERT;
	}
	if (strstr(query, "UPDATE aimroute.postal_code_loads") != NULL)
	{
		SHIM_CHECK(DatumGetInt64(values[1]) == rows_loaded &&
					   DatumGetInt64(values[2]) == rows_flawed &&
					   DatumGetInt64(values[3]) == rows_rejected,
				   "load recorded " INT64_FORMAT "/" INT64_FORMAT "/" INT64_FORMAT
				   ", the tables got " INT64_FORMAT "/" INT64_FORMAT "/" INT64_FORMAT,
				   DatumGetInt64(values[1]), DatumGetInt64(values[2]), DatumGetInt64(values[3]),
				   rows_loaded, rows_flawed, rows_rejected);
		counts_recorded = true;
		return SPI_OK_UPDATE;
	}
	shim_fail("unexpected statement from the loader: %s", query);
}

/* PlainLines counts the non-empty lines of a plain file, as the loader should see them. */
static int64
PlainLines(const uint8_t *data, size_t size)
{
	int64 n = 0;
	size_t start = 0;

	for (size_t i = 0; i <= size; i++)
	{
		if (i == size || data[i] == '\n')
		{
			size_t len = i - start;

			if (len > 0 && data[start + len - 1] == '\r')
				len--;
			if (len > 0)
				n++;
			start = i + 1;
		}
	}
	return n;
}

#ifdef KNOWN_BUG_LOADER_UNVERIFIED_LONG_LINE
/* AsciiLongLines returns the file with the bytes >= 0x80 of lines over 60000 bytes made '?'. */
static const uint8_t *
AsciiLongLines(const uint8_t *file, size_t size)
{
	static uint8_t *copy;
	static size_t copy_size;
	size_t start = 0;

	if (size == 0)
		return file;
	if (copy_size < size)
	{
		copy = realloc(copy, size);
		copy_size = size;
	}
	memcpy(copy, file, size);
	for (size_t i = 0; i <= size; i++)
		if (i == size || copy[i] == '\n')
		{
			if (i - start > 60000)
				for (size_t j = start; j < i; j++)
					if (copy[j] >= 0x80)
						copy[j] = '?';
			start = i + 1;
		}
	return copy;
}
#endif

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int fd = -1;
	static const char *const formats[] = { "geonames", "GeoNames", "csv", "" };
	char path[64];
	const uint8_t *file;
	size_t file_size;
	const char *format;
	volatile bool failed = false;
	volatile Datum result = 0;

	if (size < 1 || size > 1 << 20)
		return -1;
	file = data + 1;
	file_size = size - 1;
#ifdef KNOWN_BUG_LOADER_UNVERIFIED_LONG_LINE
	if (!(data[0] & 1))
		file = AsciiLongLines(file, file_size);
#endif
	format = formats[(data[0] >> 1) & 3];

	if (fd < 0)
		fd = memfd_create("aimroute-loader-fuzz", 0);
	if (fd < 0 || ftruncate(fd, 0) != 0 ||
		(file_size > 0 && pwrite(fd, file, file_size, 0) != (ssize_t) file_size))
		shim_fail("could not write the input to a memfd");
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);

	shim_begin((data[0] & 1) ? PG_SQL_ASCII : PG_UTF8);
	shim_spi_hook = LoaderHook;
	rows_loaded = rows_flawed = rows_rejected = 0;
	last_issue_line = 0;
	counts_recorded = false;
	for (int i = 0; i < nstored; i++)
		free(stored_keys[i]);
	nstored = 0;

	PG_TRY();
	{
		LOCAL_FCINFO(fcinfo, 2);

		InitFunctionCallInfoData(*fcinfo, NULL, 2, InvalidOid, NULL, NULL);
		fcinfo->args[0].value = PointerGetDatum(cstring_to_text(path));
		fcinfo->args[0].isnull = false;
		fcinfo->args[1].value = PointerGetDatum(cstring_to_text(format));
		fcinfo->args[1].isnull = false;
		result = aimroute_load_postal_codes(fcinfo);
	}
	PG_CATCH();
	{
		failed = true;
	}
	PG_END_TRY();

	if (failed)
	{
		int code = shim_last_error.sqlerrcode;

		SHIM_CHECK(code == ERRCODE_DATA_CORRUPTED || code == ERRCODE_INVALID_PARAMETER_VALUE,
				   "load failed with SQLSTATE %s: %s (%s:%d)", unpack_sql_state(code),
				   shim_last_error.message, shim_last_error.filename, shim_last_error.lineno);
		SHIM_CHECK(code != ERRCODE_INVALID_PARAMETER_VALUE ||
					   pg_strcasecmp(format, "geonames") != 0,
				   "the geonames format refused: %s", shim_last_error.message);
		SHIM_CHECK(code != ERRCODE_DATA_CORRUPTED ||
					   (file_size >= 2 && file[0] == 0x1f && file[1] == 0x8b),
				   "a plain file reported as corrupt: %s", shim_last_error.message);
		shim_after_error();
		shim_end();
		return 0;
	}

	SHIM_CHECK(pg_strcasecmp(format, "geonames") == 0, "format \"%s\" accepted", format);
	SHIM_CHECK(counts_recorded, "the load's counts were not recorded");
	SHIM_CHECK(DatumGetInt64(result) == rows_loaded,
			   "returned " INT64_FORMAT ", loaded " INT64_FORMAT, DatumGetInt64(result),
			   rows_loaded);
	if (!(file_size >= 2 && file[0] == 0x1f && file[1] == 0x8b))
	{
		int64 lines = PlainLines(file, file_size);

#ifdef KNOWN_BUG_LOADER_NUL_MERGES_LINES
		if (memchr(file, '\0', file_size) == NULL)
#endif
			SHIM_CHECK(rows_loaded + rows_rejected == lines,
					   "%lld non-empty lines, but %lld loaded and %lld rejected", (long long) lines,
					   (long long) rows_loaded, (long long) rows_rejected);
	}
	shim_end();
	return 0;
}
