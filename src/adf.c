/*
 * adf.c
 *		A lead as an ADF 1.0 (Auto-lead Data Format) XML document, the format
 *		dealer CRMs ingest: aimroute.adf_render().
 *
 * Elements come in the order of the ADF 1.0 DTD, so a validating parser
 * accepts the document:
 *
 *	adf > prospect > id, requestdate, vehicle (year, make, model),
 *	customer (contact (name, email, phone, address (street, city,
 *	regioncode, postalcode, country)), comments), vendor (id, vendorname,
 *	contact (name)), provider (name).
 *
 * An optional element whose value is NULL or blank is left out.  An element
 * the DTD requires (requestdate, year, make, model, a customer name,
 * vendorname and the vendor's contact name, and the first street line of an
 * address that has other parts) is written empty instead.
 *
 * Values are character data: & < > " ' become entity references, a carriage
 * return becomes &#13; (a parser would read a literal one back as a line
 * feed), and the characters XML 1.0 forbids (C0 controls other than TAB, LF
 * and CR, U+FFFE and U+FFFF) are dropped.  The document is built in UTF-8,
 * as its declaration says, and returned as text in the database encoding,
 * like every text value: a client reading it with client_encoding UTF8, or
 * convert_to(document, 'UTF8'), gets the UTF-8 bytes.
 */
#include "postgres.h"

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"

#include "adf.h"

/* The document being written, and the depth of the open element. */
typedef struct AdfWriter
{
	StringInfoData buf;
	int depth;
} AdfWriter;

static char *AdfEscape(const char *value);
static bool AdfEscapeAscii(StringInfo out, unsigned char c);
static int AdfEscapeMultibyte(StringInfo out, const unsigned char *p, const unsigned char *end,
							  bool *blank);
static void AdfIndent(AdfWriter *w);
static void AdfOpen(AdfWriter *w, const char *name, const char *attrs);
static void AdfClose(AdfWriter *w, const char *name);
static void AdfLeaf(AdfWriter *w, const char *name, const char *attrs, const char *text,
					bool required);

PG_FUNCTION_INFO_V1(aimroute_adf_render);

/*
 * AdfEscapeAscii appends one ASCII byte as XML character data: the five
 * markup characters as entities, a carriage return as a reference (an XML
 * parser would fold it into a line break), other C0 controls dropped (they
 * are not XML 1.0 characters).  Returns whether the byte is more than
 * white space.
 */
static bool
AdfEscapeAscii(StringInfo out, unsigned char c)
{
	switch (c)
	{
		case '&':
			appendStringInfoString(out, "&amp;");
			break;
		case '<':
			appendStringInfoString(out, "&lt;");
			break;
		case '>':
			appendStringInfoString(out, "&gt;");
			break;
		case '"':
			appendStringInfoString(out, "&quot;");
			break;
		case '\'':
			appendStringInfoString(out, "&apos;");
			break;
		case '\r':
			appendStringInfoString(out, "&#13;");
			break;
		default:
			if (c >= 0x20 || c == '\t' || c == '\n')
				appendStringInfoChar(out, (char) c);
			break;
	}
	return c > ' ';
}

/*
 * AdfEscapeMultibyte appends the UTF-8 character at p (end: the end of
 * the text) and returns its length: a byte that starts no legal character
 * (a SQL_ASCII database only) becomes U+FFFD, and U+FFFE and U+FFFF, which
 * XML forbids, are dropped.  Legal UTF-8 excludes surrogates and code
 * points past U+10FFFF.  *blank is cleared when something was appended.
 */
static int
AdfEscapeMultibyte(StringInfo out, const unsigned char *p, const unsigned char *end, bool *blank)
{
	int n = pg_utf_mblen(p);
	pg_wchar c;

	if (n > end - p || !pg_utf8_islegal(p, n))
	{
		appendBinaryStringInfo(out, "\xEF\xBF\xBD", 3);
		*blank = false;
		return 1;
	}
	c = utf8_to_unicode(p);
	if (c != 0xFFFE && c != 0xFFFF)
	{
		appendBinaryStringInfo(out, (const char *) p, n);
		*blank = false;
	}
	return n;
}

/*
 * AdfEscape returns value (database encoding) as UTF-8 character data,
 * palloc'd, or NULL when value is NULL or blank: nothing but spaces, tabs,
 * line breaks and forbidden characters.
 */
static char *
AdfEscape(const char *value)
{
	const char *utf8;
	const unsigned char *p;
	const unsigned char *end;
	StringInfoData out;
	bool blank = true;
	int len;

	if (value == NULL)
		return NULL;
	len = strlen(value);

	/*
	 * A SQL_ASCII database does not know its bytes' encoding: read them as
	 * UTF-8, and replace what is not UTF-8.
	 */
	if (GetDatabaseEncoding() == PG_SQL_ASCII)
		utf8 = value;
	else
		utf8 = pg_server_to_any(value, len, PG_UTF8);
	if (utf8 != value)
		len = strlen(utf8);

	initStringInfo(&out);
	p = (const unsigned char *) utf8;
	end = p + len;
	while (p < end)
	{
		if (*p < 0x80)
		{
			if (AdfEscapeAscii(&out, *p))
				blank = false;
			p++;
		}
		else
			p += AdfEscapeMultibyte(&out, p, end, &blank);
	}

	if (blank)
	{
		pfree(out.data);
		return NULL;
	}
	return out.data;
}

/*
 * AdfIndent starts a line at the writer's depth, two spaces a level.
 */
static void
AdfIndent(AdfWriter *w)
{
	appendStringInfoSpaces(&w->buf, 2 * w->depth);
}

/*
 * AdfOpen writes the start tag of element name, with attrs (already
 * escaped, or NULL), on a line of its own.
 */
static void
AdfOpen(AdfWriter *w, const char *name, const char *attrs)
{
	AdfIndent(w);
	appendStringInfo(&w->buf, "<%s%s%s>\n", name, attrs ? " " : "", attrs ? attrs : "");
	w->depth++;
}

/*
 * AdfClose writes the end tag of element name.
 */
static void
AdfClose(AdfWriter *w, const char *name)
{
	w->depth--;
	AdfIndent(w);
	appendStringInfo(&w->buf, "</%s>\n", name);
}

/*
 * AdfLeaf writes element name holding text (escaped, or NULL when blank):
 * an empty element when text is NULL and the DTD requires the element,
 * nothing when it does not.
 */
static void
AdfLeaf(AdfWriter *w, const char *name, const char *attrs, const char *text, bool required)
{
	if (text == NULL && !required)
		return;
	AdfIndent(w);
	appendStringInfo(&w->buf, "<%s%s%s", name, attrs ? " " : "", attrs ? attrs : "");
	if (text == NULL)
		appendStringInfoString(&w->buf, "/>\n");
	else
		appendStringInfo(&w->buf, ">%s</%s>\n", text, name);
}

/*
 * AdfRender returns the ADF 1.0 document of values (see AdfField), as a
 * palloc'd UTF-8 string.
 */
char *
AdfRender(const char *const values[ADF_NFIELDS])
{
	char *v[ADF_NFIELDS];
	AdfWriter w;

	for (int i = 0; i < ADF_NFIELDS; i++)
		v[i] = AdfEscape(values[i]);

	initStringInfo(&w.buf);
	w.depth = 0;
	appendStringInfoString(&w.buf, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
								   "<?adf version=\"1.0\"?>\n");
	AdfOpen(&w, "adf", NULL);
	AdfOpen(&w, "prospect", "status=\"new\"");
	AdfLeaf(&w, "id", "sequence=\"1\" source=\"aimroute\"", v[ADF_LEAD_ID], false);
	AdfLeaf(&w, "requestdate", NULL, v[ADF_REQUEST_DATE], true);

	AdfOpen(&w, "vehicle", "interest=\"buy\" status=\"new\"");
	AdfLeaf(&w, "year", NULL, v[ADF_VEHICLE_YEAR], true);
	AdfLeaf(&w, "make", NULL, v[ADF_VEHICLE_MAKE], true);
	AdfLeaf(&w, "model", NULL, v[ADF_VEHICLE_MODEL], true);
	AdfClose(&w, "vehicle");

	AdfOpen(&w, "customer", NULL);
	AdfOpen(&w, "contact", NULL);
	if (v[ADF_FIRST_NAME] == NULL && v[ADF_LAST_NAME] == NULL)
		AdfLeaf(&w, "name", "part=\"full\"", NULL, true);
	AdfLeaf(&w, "name", "part=\"first\"", v[ADF_FIRST_NAME], false);
	AdfLeaf(&w, "name", "part=\"last\"", v[ADF_LAST_NAME], false);
	AdfLeaf(&w, "email", NULL, v[ADF_EMAIL], false);
	AdfLeaf(&w, "phone", NULL, v[ADF_PHONE], false);
	if (v[ADF_STREET] || v[ADF_CITY] || v[ADF_REGION_CODE] || v[ADF_POSTAL_CODE] || v[ADF_COUNTRY])
	{
		AdfOpen(&w, "address", NULL);
		AdfLeaf(&w, "street", "line=\"1\"", v[ADF_STREET], true);
		AdfLeaf(&w, "city", NULL, v[ADF_CITY], false);
		AdfLeaf(&w, "regioncode", NULL, v[ADF_REGION_CODE], false);
		AdfLeaf(&w, "postalcode", NULL, v[ADF_POSTAL_CODE], false);
		AdfLeaf(&w, "country", NULL, v[ADF_COUNTRY], false);
		AdfClose(&w, "address");
	}
	AdfClose(&w, "contact");
	AdfLeaf(&w, "comments", NULL, v[ADF_COMMENTS], false);
	AdfClose(&w, "customer");

	AdfOpen(&w, "vendor", NULL);
	AdfLeaf(&w, "id", "source=\"aimroute\"", v[ADF_VENDOR_ID], false);
	AdfLeaf(&w, "vendorname", NULL, v[ADF_VENDOR_NAME], true);
	AdfOpen(&w, "contact", NULL);
	AdfLeaf(&w, "name", "part=\"full\"", v[ADF_VENDOR_NAME], true);
	AdfClose(&w, "contact");
	AdfClose(&w, "vendor");

	if (v[ADF_PROVIDER_NAME] != NULL)
	{
		AdfOpen(&w, "provider", NULL);
		AdfLeaf(&w, "name", "part=\"full\"", v[ADF_PROVIDER_NAME], true);
		AdfClose(&w, "provider");
	}

	AdfClose(&w, "prospect");
	AdfClose(&w, "adf");
	return w.buf.data;
}

/*
 * aimroute_adf_render is the SQL function aimroute.adf_render(lead_id,
 * request_date, vehicle_year, ..., provider_name): the ADF 1.0 document of
 * its arguments, any of which may be NULL.
 */
Datum
aimroute_adf_render(PG_FUNCTION_ARGS)
{
	const char *values[ADF_NFIELDS];
	char *doc;

	if (PG_NARGS() != ADF_NFIELDS)
		elog(ERROR, "aimroute_adf_render: expected %d arguments, got %d", ADF_NFIELDS, PG_NARGS());

	for (int i = 0; i < ADF_NFIELDS; i++)
	{
		if (PG_ARGISNULL(i))
			values[i] = NULL;
		else if (i == ADF_LEAD_ID)
			values[i] = psprintf(INT64_FORMAT, PG_GETARG_INT64(i));
		else if (i == ADF_VEHICLE_YEAR)
			values[i] = psprintf("%d", PG_GETARG_INT32(i));
		else
			values[i] = text_to_cstring(PG_GETARG_TEXT_PP(i));
	}

	doc = AdfRender(values);
	PG_RETURN_TEXT_P(cstring_to_text(pg_any_to_server(doc, strlen(doc), PG_UTF8)));
}
