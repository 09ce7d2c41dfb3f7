/*
 * staging.c
 *		Helpers of aimroute.process_staging() (schema/050_staging.sql).
 *
 * process_staging() reads every staged value trimmed of white space, with a
 * blank value as NULL.  In SQL that is nullif(btrim(value, ws), ''), which
 * for a multibyte server encoding first measures every character of the
 * value; for the 17 input columns of a row it was a fifth of the time spent
 * checking rows.  The white space characters are ASCII, and in every server
 * encoding an ASCII byte is always a character of its own (the bytes of a
 * multibyte character have the high bit set), so trimming bytes gives the
 * same result without looking at the characters in between.
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"

PG_FUNCTION_INFO_V1(aimroute_staging_value);

/*
 * StagingSpace is whether a byte is one of the white space characters a
 * staged value is trimmed of: space, tab, CR, LF, form feed, vertical tab.
 */
static inline bool
StagingSpace(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

/*
 * aimroute_staging_value is the SQL function aimroute.staging_value(value
 * text): the value without leading and trailing white space, NULL when
 * nothing else is left; the same as nullif(btrim(value, E' \t\r\n\f\x0B'),
 * '').
 */
Datum
aimroute_staging_value(PG_FUNCTION_ARGS)
{
	text *value = PG_GETARG_TEXT_PP(0);
	const char *start = VARDATA_ANY(value);
	const char *end = start + VARSIZE_ANY_EXHDR(value);
	const char *first = start;
	const char *last = end;

	while (first < last && StagingSpace(*first))
		first++;
	while (last > first && StagingSpace(last[-1]))
		last--;
	if (first == last)
		PG_RETURN_NULL();
	if (first == start && last == end)
		PG_RETURN_TEXT_P(value);
	PG_RETURN_TEXT_P(cstring_to_text_with_len(first, (int) (last - first)));
}
