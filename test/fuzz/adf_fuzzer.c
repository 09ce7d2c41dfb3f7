/*
 * adf_fuzzer.c
 *		libFuzzer target: ADF XML rendering and escaping (src/adf.c), through
 *		AdfRender and the SQL entry point aimroute.adf_render().
 *
 * Input layout: byte 0 chooses the database encoding (UTF8 or SQL_ASCII)
 * and the text headers; the rest is up to 18 values separated by NUL
 * bytes, in the order of adf_render()'s arguments; a missing value is
 * NULL.  In a UTF8 database a text value is valid UTF-8 (the server
 * guarantees it), so invalid bytes are replaced by '?' first; a SQL_ASCII
 * database takes any bytes, which is where the escaping has the most to do.
 *
 * Every document must be what adf.c's header promises and a CRM can parse:
 * valid UTF-8; no control character but TAB and LF, no U+FFFE or U+FFFF;
 * every '&' starts one of the entity references adf.c writes; the prolog
 * first, and start and end tags that nest, with nothing after </adf>.
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"

#include "adf.h"
#include "known_bugs.h"
#include "pg_shim.h"

extern Datum aimroute_adf_render(PG_FUNCTION_ARGS);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PROLOG "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<?adf version=\"1.0\"?>\n"

/* MakeValidUtf8 replaces each byte that does not start a legal UTF-8 character with '?'. */
static char *
MakeValidUtf8(const char *s, int len)
{
	char *out = palloc(len + 1);
	int i = 0;

	while (i < len)
	{
		const unsigned char *p = (const unsigned char *) s + i;
		int n = (*p < 0x80) ? 1 : pg_utf_mblen(p);

		if (*p >= 0x80 && (n > len - i || !pg_utf8_islegal(p, n)))
		{
			out[i++] = '?';
			continue;
		}
		memcpy(out + i, p, n);
		i += n;
	}
	out[len] = '\0';
	return out;
}

/* CheckDocument checks one rendered document (see the file header). */
static void
CheckDocument(const char *doc)
{
	int len = strlen(doc);
	const char *stack[32];
	int depth = 0;
	const char *p;
	bool closed = false;

	SHIM_CHECK(pg_encoding_verifymbstr(PG_UTF8, doc, len) == len, "document is not valid UTF-8");
	SHIM_CHECK(strncmp(doc, PROLOG, strlen(PROLOG)) == 0,
			   "document does not start with its prolog");
	for (int i = 0; i < len; i++)
	{
		unsigned char c = doc[i];

		SHIM_CHECK(c >= 0x20 || c == '\t' || c == '\n', "control character 0x%02x at byte %d", c,
				   i);
		if (c == 0xEF && i + 2 < len && (unsigned char) doc[i + 1] == 0xBF &&
			((unsigned char) doc[i + 2] == 0xBE || (unsigned char) doc[i + 2] == 0xBF))
			shim_fail("U+FFFE or U+FFFF at byte %d", i);
		if (c == '&')
		{
			static const char *const entities[] = { "&amp;",  "&lt;",	"&gt;",
													"&quot;", "&apos;", "&#13;" };
			bool ok = false;

			for (int e = 0; e < (int) lengthof(entities); e++)
				ok = ok || strncmp(doc + i, entities[e], strlen(entities[e])) == 0;
			SHIM_CHECK(ok, "a bare '&' at byte %d", i);
		}
	}

	/* Tags nest: values hold no '<' or '>', so every '<' starts a tag. */
	p = doc + strlen(PROLOG);
	while ((p = strchr(p, '<')) != NULL)
	{
		const char *end = strchr(p, '>');
		const char *name = p + (p[1] == '/' ? 2 : 1);
		int nlen = strcspn(name, " />");

		SHIM_CHECK(end != NULL, "a '<' with no '>'");
		SHIM_CHECK(!closed, "content after </adf>");
		SHIM_CHECK(nlen > 0 && p[1] != '?' && p[1] != '!', "not an element tag at byte %d",
				   (int) (p - doc));
		if (p[1] == '/')
		{
			SHIM_CHECK(depth > 0 && strncmp(stack[depth - 1], name, nlen) == 0 &&
						   strcspn(stack[depth - 1], " />") == (size_t) nlen,
					   "end tag </%.*s> does not close the open element", nlen, name);
			depth--;
			closed = depth == 0;
		}
		else if (end[-1] != '/')
		{
			SHIM_CHECK(depth < (int) lengthof(stack), "elements nest too deep");
			SHIM_CHECK(depth > 0 || strncmp(name, "adf>", 4) == 0, "root element is not <adf>");
			stack[depth++] = name;
		}
		p = end + 1;
	}
	SHIM_CHECK(depth == 0 && closed, "unclosed elements at the end of the document");
	SHIM_CHECK(strcmp(doc + len - strlen("</adf>\n"), "</adf>\n") == 0,
			   "document does not end with </adf>");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int encoding;
	bool short_header;
	const char *values[ADF_NFIELDS];
	const char *p;
	const char *end;
	int n = 0;

	if (size < 1 || size > 1 << 20)
		return -1;
	encoding = (data[0] & 1) ? PG_SQL_ASCII : PG_UTF8;
	short_header = (data[0] & 2) != 0;
	shim_begin(encoding);

	memset(values, 0, sizeof(values));
	p = (const char *) data + 1;
	end = (const char *) data + size;
	while (p < end && n < ADF_NFIELDS)
	{
		const char *nul = memchr(p, '\0', end - p);
		int len = nul ? nul - p : end - p;

		values[n++] = encoding == PG_UTF8 ? MakeValidUtf8(p, len) : pnstrdup(p, len);
		p += len + 1;
	}

	CheckDocument(AdfRender(values));

	/* Through the SQL function: lead_id and vehicle_year are numbers there. */
	{
		LOCAL_FCINFO(fcinfo, ADF_NFIELDS);
		Datum result;

		InitFunctionCallInfoData(*fcinfo, NULL, ADF_NFIELDS, InvalidOid, NULL, NULL);
		for (int i = 0; i < ADF_NFIELDS; i++)
		{
			fcinfo->args[i].isnull = values[i] == NULL;
			if (values[i] == NULL)
				continue;
			if (i == ADF_LEAD_ID)
				fcinfo->args[i].value = Int64GetDatum((int64) hash_bytes_extended(
					(const unsigned char *) values[i], strlen(values[i]), 0));
			else if (i == ADF_VEHICLE_YEAR)
				fcinfo->args[i].value = Int32GetDatum(
					(int32) hash_bytes((const unsigned char *) values[i], strlen(values[i])));
			else
				fcinfo->args[i].value =
					PointerGetDatum(shim_text(values[i], strlen(values[i]), short_header));
		}
		result = aimroute_adf_render(fcinfo);
		SHIM_CHECK(!fcinfo->isnull, "adf_render returned NULL");
		CheckDocument(text_to_cstring(DatumGetTextPP(result)));
	}

	shim_end();
	return 0;
}
