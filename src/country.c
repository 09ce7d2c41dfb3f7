/*
 * country.c
 *		Country normalization for aimroute.
 *
 * Leads, dealers, territories and postal codes all store countries as ISO
 * 3166-1 alpha-2 codes.  Input may be an alpha-2 or alpha-3 code or an
 * English short or official name ("USA", "can", "United States"), with any
 * case and surrounding white space.  The table is generated from Debian's
 * iso-codes package by tools/gen_iso3166.py.
 */
#include "postgres.h"

#include "fmgr.h"
#include "parser/scansup.h"
#include "utils/builtins.h"

#include "country.h"
#include "iso3166_table.h"

#define COUNTRY_MAX_NAME 80

static int CompareAlpha2(const void *key, const void *entry);
static int CompareAlpha3(const void *key, const void *entry);
static int CompareName(const void *key, const void *entry);

PG_FUNCTION_INFO_V1(aimroute_normalize_country);

/*
 * CompareAlpha2 orders a search key against an iso_countries entry.
 */
static int
CompareAlpha2(const void *key, const void *entry)
{
	return strcmp((const char *) key, ((const struct IsoCountry *) entry)->alpha2);
}

/*
 * CompareAlpha3 orders a search key against an iso_by_alpha3 index entry.
 */
static int
CompareAlpha3(const void *key, const void *entry)
{
	return strcmp((const char *) key, iso_countries[*(const short *) entry].alpha3);
}

/*
 * CompareName orders a search key against an iso_country_names entry.
 */
static int
CompareName(const void *key, const void *entry)
{
	return strcmp((const char *) key, ((const struct IsoCountryName *) entry)->name);
}

/*
 * CountryNormalize returns the alpha-2 code for raw (len bytes, not
 * necessarily terminated), or NULL when it names no ISO 3166-1 country.
 *
 * The result points into a static table and must not be freed.
 */
const char *
CountryNormalize(const char *raw, int len)
{
	char key[COUNTRY_MAX_NAME + 1];
	int start = 0;
	int end = len;
	int n;

	while (start < end && scanner_isspace(raw[start]))
		start++;
	while (end > start && scanner_isspace(raw[end - 1]))
		end--;
	n = end - start;
	if (n < 2 || n > COUNTRY_MAX_NAME)
		return NULL;

	for (int i = 0; i < n; i++)
	{
		if (raw[start + i] == '\0')
			return NULL;
		key[i] = pg_ascii_toupper((unsigned char) raw[start + i]);
	}
	key[n] = '\0';

	if (n == 2)
	{
		const struct IsoCountry *c;

		c = bsearch(key, iso_countries, lengthof(iso_countries), sizeof(iso_countries[0]),
					CompareAlpha2);
		return c ? c->alpha2 : NULL;
	}
	if (n == 3)
	{
		const short *i;

		i = bsearch(key, iso_by_alpha3, lengthof(iso_by_alpha3), sizeof(iso_by_alpha3[0]),
					CompareAlpha3);
		if (i)
			return iso_countries[*i].alpha2;
	}
	{
		const struct IsoCountryName *c;

		c = bsearch(key, iso_country_names, lengthof(iso_country_names),
					sizeof(iso_country_names[0]), CompareName);
		return c ? c->alpha2 : NULL;
	}
}

/*
 * aimroute_normalize_country is the SQL function
 * aimroute.normalize_country(text): alpha-2 code, or NULL when unknown.
 */
Datum
aimroute_normalize_country(PG_FUNCTION_ARGS)
{
	text *raw = PG_GETARG_TEXT_PP(0);
	const char *alpha2;

	alpha2 = CountryNormalize(VARDATA_ANY(raw), VARSIZE_ANY_EXHDR(raw));
	if (alpha2 == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(alpha2));
}
