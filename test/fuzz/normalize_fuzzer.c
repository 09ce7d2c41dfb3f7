/*
 * normalize_fuzzer.c
 *		libFuzzer target: country and postal-code normalization
 *		(src/country.c, src/postal.c), directly and through their SQL entry
 *		points.
 *
 * Input layout: byte 0 chooses the country mode and the text headers,
 * byte 1 the length of the country part; the country bytes follow, then
 * the postal code bytes.  Beyond "no crash, no sanitizer report", each
 * input is checked against what README.md and the source comments promise:
 *
 *	- a country normalizes to NULL or to a two-letter upper-case code that
 *	  normalizes to itself, whatever the case and surrounding white space;
 *	- a postal code normalizes to NULL exactly when it is blank; otherwise
 *	  to a code with no lower-case ASCII letter, trimmed, no longer than the
 *	  input, and normalizing it again changes nothing;
 *	- a US code that normalizes to five digits is well formed;
 *	- the SQL functions agree with the C ones: postal_code_is_valid() is
 *	  "normalizes to a well-formed code", normalize_postal_code() is the
 *	  lexical code, cut to its FSA for a Canadian full code that the table
 *	  does not know.
 *
 * The postal-code table is played by the SPI hook: a few Canadian full
 * codes are "known".
 */
#include "postgres.h"

#include "executor/spi.h"
#include "fmgr.h"
#include "parser/scansup.h"
#include "utils/builtins.h"

#include "country.h"
#include "known_bugs.h"
#include "pg_shim.h"
#include "postal.h"

extern Datum aimroute_normalize_country(PG_FUNCTION_ARGS);
extern Datum aimroute_normalize_postal_code(PG_FUNCTION_ARGS);
extern Datum aimroute_postal_code_is_valid(PG_FUNCTION_ARGS);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const known_codes[] = { "K1A0B1", "P0S1A0", "H2X1Y4", "M5V3L9" };
static char *lookup_code; /* the hook runs in SPI memory: copied out with strdup */
static int lookups;

/*
 * FallsBackToFSA says, independently of postal.c, when normalize_postal_code
 * must look a code up: a Canadian code longer than an FSA that starts with
 * one (letter, digit, letter, in ASCII), which falls back to it when the
 * table does not know it.
 */
static bool
FallsBackToFSA(const char *country, const char *code)
{
	return country != NULL && strcmp(country, "CA") == 0 && strlen(code) > 3 && code[0] >= 'A' &&
		   code[0] <= 'Z' && code[1] >= '0' && code[1] <= '9' && code[2] >= 'A' && code[2] <= 'Z';
}

/* PostalLookupHook plays aimroute.postal_codes for PostalCodeKnown. */
static int
PostalLookupHook(const char *query, int nargs, const Oid *argtypes, Datum *values,
				 const char *nulls)
{
	char *country;
	char *code;

	SHIM_CHECK(strstr(query, "aimroute.postal_codes") != NULL && nargs == 2,
			   "unexpected statement from postal.c: %s", query);
	SHIM_CHECK(nulls == NULL || (nulls[0] != 'n' && nulls[1] != 'n'), "NULL lookup argument");
	country = text_to_cstring(DatumGetTextPP(values[0]));
	code = text_to_cstring(DatumGetTextPP(values[1]));
	SHIM_CHECK(strcmp(country, "CA") == 0, "postal code looked up for %s, not CA", country);
	SHIM_CHECK(strlen(code) > 3, "a code of %zu bytes looked up: an FSA needs no lookup",
			   strlen(code));
	free(lookup_code);
	lookup_code = strdup(code);
	lookups++;
	for (int i = 0; i < (int) lengthof(known_codes); i++)
		if (strcmp(code, known_codes[i]) == 0)
		{
			shim_spi_processed = 1;
			shim_spi_result[0] = Int32GetDatum(1);
			shim_spi_result_null[0] = false;
			break;
		}
	return SPI_OK_SELECT;
}

static bool
IsBlank(const char *s, int len)
{
	for (int i = 0; i < len; i++)
		if (!scanner_isspace(s[i]))
			return false;
	return true;
}

/* CheckCountry checks CountryNormalize on len bytes (any bytes). */
static const char *
CheckCountry(const char *raw, int len)
{
	const char *c = CountryNormalize(raw, len);
	char *upper;
	char *padded;

	if (c != NULL)
	{
		SHIM_CHECK(strlen(c) == 2 && c[0] >= 'A' && c[0] <= 'Z' && c[1] >= 'A' && c[1] <= 'Z',
				   "country normalized to \"%s\", not an alpha-2 code", c);
		SHIM_CHECK(CountryNormalize(c, 2) != NULL && strcmp(CountryNormalize(c, 2), c) == 0,
				   "country code %s does not normalize to itself", c);
	}

	/* Case and surrounding white space do not matter. */
	upper = palloc(len + 1);
	for (int i = 0; i < len; i++)
		upper[i] = pg_ascii_toupper((unsigned char) raw[i]);
	SHIM_CHECK(CountryNormalize(upper, len) == c, "country differs once upper-cased");
	padded = palloc(len + 3);
	padded[0] = ' ';
	memcpy(padded + 1, raw, len);
	padded[len + 1] = '\t';
	SHIM_CHECK(CountryNormalize(padded, len + 2) == c, "country differs once padded with blanks");
	return c;
}

/* CheckLexical checks PostalNormalizeLexical for one country. */
static char *
CheckLexical(const char *country, const char *raw, int len)
{
	char *code = PostalNormalizeLexical(country, raw, len);
	bool has_nul = memchr(raw, '\0', len) != NULL;
	size_t n;
	char *again;

	/* In Canada spaces and hyphens are dropped: a code of nothing else is blank. */
	bool canada = country != NULL && strcmp(country, "CA") == 0;
	bool blank = IsBlank(raw, len);

	if (canada && !blank)
	{
		blank = true;
		for (int i = 0; i < len && blank; i++)
			blank = scanner_isspace(raw[i]) || raw[i] == '-';
	}
	SHIM_CHECK((code == NULL) == blank, "postal code normalized to %s but the input is %sblank",
			   code ? "a code" : "NULL", blank ? "" : "not ");
	if (code == NULL || has_nul)
		return code; /* text never holds NUL: only crashes count then */

	n = strlen(code);
	SHIM_CHECK(n <= (size_t) len, "normalized code longer than the input");
	SHIM_CHECK(!shim_is_valid_encoding(raw, len) || shim_is_valid_encoding(code, n),
			   "the lexical rules turned valid UTF-8 into invalid: \"%s\"", code);
	for (size_t i = 0; i < n; i++)
		SHIM_CHECK(!(code[i] >= 'a' && code[i] <= 'z'), "lower-case letter in \"%s\"", code);
#ifndef KNOWN_BUG_CA_BLANK_AFTER_HYPHEN
	SHIM_CHECK(n > 0, "%s postal code normalized to an empty string, not NULL",
			   country ? country : "(no country)");
	SHIM_CHECK(!scanner_isspace(code[0]) && !scanner_isspace(code[n - 1]),
			   "%s postal code normalized to a code with white space at an end: \"%s\"",
			   country ? country : "(no country)", code);
	again = PostalNormalizeLexical(country, code, n);
	SHIM_CHECK(again != NULL && strcmp(again, code) == 0,
			   "%s postal code normalization is not idempotent: \"%s\" then \"%s\"",
			   country ? country : "(no country)", code, again ? again : "(NULL)");
#else
	(void) again;
#endif
	if (country != NULL && strcmp(country, "US") == 0 && n == 5)
	{
		bool digits = true;

		for (int i = 0; i < 5; i++)
			digits = digits && code[i] >= '0' && code[i] <= '9';
		SHIM_CHECK(PostalIsWellFormed(country, code) == digits,
				   "US code \"%s\": well-formedness disagrees with its digits", code);
	}
	return code;
}

/* CallSql calls a SQL-callable function of up to two text arguments. */
static Datum
CallSql(PGFunction fn, text *a, text *b, int nargs, bool *isnull)
{
	LOCAL_FCINFO(fcinfo, 2);
	Datum result;

	InitFunctionCallInfoData(*fcinfo, NULL, nargs, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = PointerGetDatum(a);
	fcinfo->args[0].isnull = a == NULL;
	fcinfo->args[1].value = PointerGetDatum(b);
	fcinfo->args[1].isnull = b == NULL;
	result = fn(fcinfo);
	*isnull = fcinfo->isnull;
	return result;
}

/* WithoutNul copies len bytes dropping NULs, as a server text would hold them. */
static char *
WithoutNul(const char *s, int len, int *outlen)
{
	char *out = palloc(len + 1);
	int n = 0;

	for (int i = 0; i < len; i++)
		if (s[i] != '\0')
			out[n++] = s[i];
	out[n] = '\0';
	*outlen = n;
	return out;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int mode;
	bool short_header;
	int clen;
	const char *craw;
	const char *praw;
	int plen;
	const char *country = NULL;
	char *cs, *ps;
	int csl, psl;
	text *ct, *pt;
	bool isnull;
	Datum d;
	char *lexical;

	if (size < 2 || size > 1 << 20)
		return -1;
	mode = data[0] & 3;
	short_header = (data[0] & 4) != 0;
	clen = Min((size_t) data[1], size - 2);
	craw = (const char *) data + 2;
	praw = craw + clen;
	plen = size - 2 - clen;

	shim_begin(PG_UTF8);
	shim_spi_hook = PostalLookupHook;

	/* Country normalization on raw bytes. */
	{
		const char *c = CheckCountry(craw, clen);

		if (mode == 3)
			country = c;
		else if (mode == 1)
			country = "US";
		else if (mode == 2)
			country = "CA";
	}

	/* The lexical rules, for the chosen country and for US and CA. */
	lexical = CheckLexical(country, praw, plen);
	CheckLexical("US", praw, plen);
	CheckLexical("CA", praw, plen);
	CheckLexical(NULL, praw, plen);
	if (lexical != NULL)
		(void) PostalIsWellFormed(country, lexical);

	/* The SQL functions, on the text a server would pass (no NUL). */
	cs = WithoutNul(craw, clen, &csl);
	ps = WithoutNul(praw, plen, &psl);
	ct = shim_text(cs, csl, short_header);
	pt = shim_text(ps, psl, short_header);
	{
		const char *c = CountryNormalize(cs, csl);
		char *lex = PostalNormalizeLexical(c, ps, psl);
		bool valid;

		d = CallSql(aimroute_normalize_country, ct, NULL, 1, &isnull);
		SHIM_CHECK(isnull == (c == NULL), "normalize_country: NULL disagrees with the C function");
		if (!isnull)
			SHIM_CHECK(strcmp(text_to_cstring(DatumGetTextPP(d)), c) == 0,
					   "normalize_country disagrees with CountryNormalize");

		d = CallSql(aimroute_postal_code_is_valid, ct, pt, 2, &isnull);
		valid = lex != NULL && PostalIsWellFormed(c, lex);
		SHIM_CHECK(!isnull && DatumGetBool(d) == valid,
				   "postal_code_is_valid disagrees with the lexical rules");

		lookups = 0;
		d = CallSql(aimroute_normalize_postal_code, mode == 0 ? NULL : ct, pt, 2, &isnull);
		if (mode == 0)
		{
			c = NULL;
			lex = PostalNormalizeLexical(NULL, ps, psl);
		}
		SHIM_CHECK(isnull == (lex == NULL), "normalize_postal_code: NULL disagrees with blankness");
		if (!isnull)
		{
			char *got = text_to_cstring(DatumGetTextPP(d));

			SHIM_CHECK(lookups == FallsBackToFSA(c, lex),
					   "%d lookups of the postal-code table for \"%s\"", lookups, lex);
			if (lookups > 0)
			{
				bool known = false;

				SHIM_CHECK(strcmp(lookup_code, lex) == 0, "looked up \"%s\" for the code \"%s\"",
						   lookup_code, lex);
				for (int i = 0; i < (int) lengthof(known_codes); i++)
					known = known || strcmp(lex, known_codes[i]) == 0;
				if (!known)
					lex[3] = '\0'; /* the FSA; the encoding check below catches a cut character */
			}
			SHIM_CHECK(strcmp(got, lex) == 0, "normalize_postal_code gave \"%s\", expected \"%s\"",
					   got, lex);
#ifndef KNOWN_BUG_CA_FSA_CUT_MIDCHAR
			SHIM_CHECK(!shim_is_valid_encoding(ps, psl) || shim_is_valid_encoding(got, strlen(got)),
					   "normalize_postal_code turned valid UTF-8 into invalid: \"%s\"", got);
#endif
		}
	}

	shim_end();
	return 0;
}
