/*
 * postal.c
 *		Postal-code normalization for aimroute.
 *
 * One set of rules is applied on load, on dealers, on territories and on
 * leads, so that a lead's postal code meets the reference table's:
 *
 *	- every country: trimmed and upper-cased (ASCII letters only);
 *	- US: ZIP or ZIP+4 ("49757", "49757-1234", "49757 1234", "497571234")
 *	  becomes its first five digits, leading zeros kept;
 *	- CA: spaces and hyphens removed; when the full code is not in
 *	  aimroute.postal_codes, its first three characters (the FSA) are used;
 *	- other countries: exact after trimming and upper-casing.
 *
 * A code that does not fit its country's pattern is kept as typed (trimmed,
 * upper-cased) so that routing can say which code it could not find.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "parser/scansup.h"
#include "utils/builtins.h"

#include "country.h"
#include "kept_plan.h"
#include "postal.h"
#include "search_path.h"

static bool AllDigits(const char *s, int n);
static bool PostalCodeKnown(const char *country, const char *code);

PG_FUNCTION_INFO_V1(aimroute_normalize_postal_code);
PG_FUNCTION_INFO_V1(aimroute_postal_code_is_valid);

/*
 * AllDigits tells whether the n bytes at s are all ASCII digits.
 */
static bool
AllDigits(const char *s, int n)
{
	for (int i = 0; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	return true;
}

/*
 * PostalNormalizeLexical applies the per-country lexical rules to raw (len
 * bytes) and returns a palloc'd string, or NULL when raw is blank.  country
 * is an alpha-2 code or NULL when unknown.  The Canadian FSA fallback needs
 * the reference table and is done by PostalResolve.
 */
char *
PostalNormalizeLexical(const char *country, const char *raw, int len)
{
	int start = 0;
	int end = len;
	char *out;
	int n = 0;
	bool canada = country != NULL && strcmp(country, "CA") == 0;

	while (start < end && scanner_isspace(raw[start]))
		start++;
	while (end > start && scanner_isspace(raw[end - 1]))
		end--;
	if (start == end)
		return NULL;

	out = palloc(end - start + 1);
	for (int i = start; i < end; i++)
	{
		char c = raw[i];

		if (canada && (c == ' ' || c == '-'))
			continue;
		out[n++] = pg_ascii_toupper((unsigned char) c);
	}
	out[n] = '\0';

	/*
	 * In Canada the spaces and hyphens go first, so what they surrounded
	 * is trimmed too ("-\tK1A 0B1" is "K1A0B1"), and normalizing twice
	 * gives the same code.
	 */
	if (canada)
	{
		int s = 0;

		while (s < n && scanner_isspace(out[s]))
			s++;
		while (n > s && scanner_isspace(out[n - 1]))
			n--;
		out[n] = '\0';
		if (s > 0)
			memmove(out, out + s, n - s + 1);
		n -= s;
		if (n == 0)
		{
			pfree(out);
			return NULL;
		}
	}

	if (country != NULL && strcmp(country, "US") == 0 && n >= 9 && AllDigits(out, 5))
	{
		/* ZIP+4: 12345-6789, 12345 6789 or 123456789 */
		const char *plus4 = out + 5;
		int rest = n - 5;

		if ((rest == 5 && (plus4[0] == '-' || plus4[0] == ' ') && AllDigits(plus4 + 1, 4)) ||
			(rest == 4 && AllDigits(plus4, 4)))
			out[5] = '\0';
	}
	return out;
}

/*
 * PostalIsWellFormed tells whether a normalized code fits its country's
 * pattern: five digits for the US, an FSA ("K1A") or a full code ("K1A0B1")
 * for Canada, and any non-empty code elsewhere.
 */
bool
PostalIsWellFormed(const char *country, const char *code)
{
	size_t n = strlen(code);

	if (country == NULL || n == 0)
		return false;
	if (strcmp(country, "US") == 0)
		return n == 5 && AllDigits(code, 5);
	if (strcmp(country, "CA") == 0)
	{
		if (n != 3 && n != 6)
			return false;
		for (size_t i = 0; i < n; i++)
		{
			bool want_letter = (i % 2 == 0);
			char c = code[i];

			if (want_letter ? !(c >= 'A' && c <= 'Z') : !(c >= '0' && c <= '9'))
				return false;
		}
		return true;
	}
	return true;
}

/*
 * PostalCodeKnown tells whether (country, code) is a row of
 * aimroute.postal_codes.
 */
static bool
PostalCodeKnown(const char *country, const char *code)
{
	static SPIPlanPtr plan = NULL;
	Oid types[2] = { TEXTOID, TEXTOID };
	Datum values[2];
	bool found;
	int pinned;

	pinned = SpiConnectPinned();
	values[0] = CStringGetTextDatum(country);
	values[1] = CStringGetTextDatum(code);
	if (SPI_execute_plan(KeptPlan(&plan,
								  "SELECT 1 FROM aimroute.postal_codes"
								  " WHERE country = $1 AND postal_code = $2",
								  2, types, 0),
						 values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "postal code lookup failed");
	found = SPI_processed > 0;
	SpiFinishPinned(pinned);
	return found;
}

/*
 * PostalFallback returns the code a normalized code of country (alpha-2 or
 * NULL) falls back to when aimroute.postal_codes does not know it, NULL
 * when none: a full Canadian code falls back to its FSA, its first three
 * characters.  Only a code that starts with an FSA (letter, digit, letter,
 * in ASCII) is cut: cutting anything else could split a character.  The
 * one statement of the fallback, for normalize_postal_code() and routing.
 */
char *
PostalFallback(const char *country, const char *code)
{
	if (country == NULL || strcmp(country, "CA") != 0)
		return NULL;
	if (strlen(code) > 3 && code[0] >= 'A' && code[0] <= 'Z' && code[1] >= '0' && code[1] <= '9' &&
		code[2] >= 'A' && code[2] <= 'Z')
		return pnstrdup(code, 3);
	return NULL;
}

/*
 * PostalResolve normalizes raw for country (alpha-2 or NULL) as stored in
 * tables: the lexical rules, then the fallback.  Returns NULL when raw is
 * blank.
 */
char *
PostalResolve(const char *country, const char *raw, int len)
{
	char *code = PostalNormalizeLexical(country, raw, len);
	char *fallback = code != NULL ? PostalFallback(country, code) : NULL;

	if (fallback != NULL && !PostalCodeKnown(country, code))
		return fallback;
	return code;
}

/*
 * aimroute_normalize_postal_code is the SQL function
 * aimroute.normalize_postal_code(country text, postal_code text).
 */
Datum
aimroute_normalize_postal_code(PG_FUNCTION_ARGS)
{
	const char *country = NULL;
	text *raw;
	char *code;

	if (PG_ARGISNULL(1))
		PG_RETURN_NULL();
	if (!PG_ARGISNULL(0))
	{
		text *c = PG_GETARG_TEXT_PP(0);

		country = CountryNormalize(VARDATA_ANY(c), VARSIZE_ANY_EXHDR(c));
	}
	raw = PG_GETARG_TEXT_PP(1);
	code = PostalResolve(country, VARDATA_ANY(raw), VARSIZE_ANY_EXHDR(raw));
	if (code == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(code));
}

/*
 * aimroute_postal_code_is_valid is the SQL function
 * aimroute.postal_code_is_valid(country text, postal_code text): whether the
 * code, once normalized, fits the country's pattern.
 */
Datum
aimroute_postal_code_is_valid(PG_FUNCTION_ARGS)
{
	text *c = PG_GETARG_TEXT_PP(0);
	text *raw = PG_GETARG_TEXT_PP(1);
	const char *country;
	char *code;

	country = CountryNormalize(VARDATA_ANY(c), VARSIZE_ANY_EXHDR(c));
	code = PostalNormalizeLexical(country, VARDATA_ANY(raw), VARSIZE_ANY_EXHDR(raw));
	PG_RETURN_BOOL(code != NULL && PostalIsWellFormed(country, code));
}
