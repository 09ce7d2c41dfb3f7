/*
 * coverage.c
 *		Coverage and white space (SPEC section 9): where a lead from every
 *		postal code with a centre point would go, for one brand.
 *
 * aimroute.coverage() and aimroute.coverage_geojson() walk the postal codes
 * of aimroute.postal_codes that have a centre point, in (country,
 * postal_code) order, and route a lead from each -- that brand, no
 * product, no dealer group, no pre-assigned dealer -- with RouteLead
 * (routing.c), the routing core that the INSERT trigger, route() and
 * locate_dealers() call, over the model of the statement's snapshot.  So
 * coverage agrees with routing by construction, and inside a transaction
 * that changed the configuration it answers "what if", as
 * simulate_routing() does.  White space is what goes to the default dealer
 * (match type Default).
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "country.h"
#include "kept_plan.h"
#include "model.h"
#include "routing.h"
#include "search_path.h"

#define COVERAGE_FETCH 2000 /* postal codes read from the cursor at a time */

/* One postal code and where a lead from there goes. */
typedef struct CoveragePoint
{
	const char *country;
	const char *postal_code;
	const char *state_code; /* NULL when unknown */
	const char *county;		/* NULL when unknown */
	RouteResult result;
	bool has_point;
	double latitude; /* degrees, when has_point */
	double longitude;
} CoveragePoint;

typedef void (*CoverageEmit)(void *arg, const CoveragePoint *point);

/* What aimroute.coverage() gathers its rows in. */
typedef struct CoverageRows
{
	ReturnSetInfo *rsinfo;
	Datum match_values[MATCH_REROUTE + 1];
	bool match_known[MATCH_REROUTE + 1];
	Oid match_type;
} CoverageRows;

/* What aimroute.coverage_geojson() writes its features in. */
typedef struct CoverageJson
{
	StringInfo buf;
	int64 features;
} CoverageJson;

static void CoverageArgs(FunctionCallInfo fcinfo, const char **brand, const char **country);
static void CoverageWalk(const char *brand, const char *country, CoverageEmit emit, void *arg);
static void RoutePoint(CoveragePoint *point, const char *brand);
static char *NullableText(HeapTuple tuple, TupleDesc desc, int attnum);
static void EmitRow(void *arg, const CoveragePoint *point);
static void EmitFeature(void *arg, const CoveragePoint *point);
static void AppendJsonText(StringInfo buf, const char *key, const char *value);

PG_FUNCTION_INFO_V1(aimroute_coverage);
PG_FUNCTION_INFO_V1(aimroute_coverage_geojson);

/*
 * CoverageArgs reads and checks the brand and country arguments: a brand
 * of aimroute.brands, and a country that is NULL (every country) or one
 * aimroute.normalize_country() knows, returned as its alpha-2 code.
 */
static void
CoverageArgs(FunctionCallInfo fcinfo, const char **brand, const char **country)
{
	Model *model;
	char *given;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("brand_code must not be null"),
				 errhint("Coverage is computed for one brand of aimroute.brands.")));
	*brand = text_to_cstring(PG_GETARG_TEXT_PP(0));
	model = ModelCurrent();
	if (ModelFindBrand(model, *brand) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("brand \"%s\" is not in aimroute.brands", *brand),
				 errhint("SELECT brand_code FROM aimroute.brands lists the brands; codes are "
						 "compared exactly.")));

	*country = NULL;
	if (PG_NARGS() < 2 || PG_ARGISNULL(1))
		return;
	given = text_to_cstring(PG_GETARG_TEXT_PP(1));
	*country = CountryNormalize(given, strlen(given));
	if (*country == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("country \"%s\" is not an ISO 3166-1 country", given),
				 errhint("Give a country code or name such as US, CAN or Canada, or NULL for "
						 "every country.")));
}

/*
 * CoverageWalk routes a lead of the brand from every postal code with a
 * centre point (of the country, when not NULL), in (country, postal_code)
 * order, and hands each to emit, which runs in a memory context reset
 * after each point.
 */
static void
CoverageWalk(const char *brand, const char *country, CoverageEmit emit, void *arg)
{
	static SPIPlanPtr plan = NULL;
	Oid argtype = TEXTOID;
	Datum argvalue = country ? CStringGetTextDatum(country) : (Datum) 0;
	char argnull = country ? ' ' : 'n';
	MemoryContext caller = CurrentMemoryContext;
	MemoryContext per_point;
	Portal portal;
	int pinned;

	per_point = AllocSetContextCreate(caller, "aimroute coverage point", ALLOCSET_DEFAULT_SIZES);
	pinned = SpiConnectPinned();
	portal = SPI_cursor_open(NULL,
							 KeptPlan(&plan,
									  "SELECT p.country, p.postal_code, p.state_code, p.county"
									  "  FROM aimroute.postal_codes p"
									  " WHERE p.centroid IS NOT NULL"
									  "   AND ($1 IS NULL OR p.country OPERATOR(pg_catalog.=) $1)"
									  " ORDER BY p.country, p.postal_code",
									  1, &argtype, CURSOR_OPT_NO_SCROLL),
							 &argvalue, &argnull, true);
	for (;;)
	{
		SPI_cursor_fetch(portal, true, COVERAGE_FETCH);
		if (SPI_processed == 0)
			break;
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple tuple = SPI_tuptable->vals[i];
			TupleDesc desc = SPI_tuptable->tupdesc;
			MemoryContext old = MemoryContextSwitchTo(per_point);
			CoveragePoint point;

			CHECK_FOR_INTERRUPTS(); /* a whole country takes a while: let it be cancelled */
			memset(&point, 0, sizeof(point));
			point.country = NullableText(tuple, desc, 1);
			point.postal_code = NullableText(tuple, desc, 2);
			point.state_code = NullableText(tuple, desc, 3);
			point.county = NullableText(tuple, desc, 4);
			RoutePoint(&point, brand);
			emit(arg, &point); /* what it keeps, it copies (tuplestore, StringInfo) */

			MemoryContextSwitchTo(old);
			MemoryContextReset(per_point);
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	SpiFinishPinned(pinned);
	MemoryContextSwitchTo(caller);
	MemoryContextDelete(per_point);
}

/*
 * RoutePoint routes a lead of the brand from the point's postal code, as
 * an application's INSERT of (brand_code, country, postal_code) would be,
 * and finds the postal code's centre point in the model.
 */
static void
RoutePoint(CoveragePoint *point, const char *brand)
{
	RouteRequest request;
	Place place;

	memset(&request, 0, sizeof(request));
	request.country = point->country;
	request.postal_code = point->postal_code;
	request.brand_code = brand;
	RouteLead(&request, &point->result);

	ModelPlace(ModelCurrent(), point->country, point->postal_code, &place);
	if (place.has_centroid)
	{
		/* The unit vector routing measures with (UnitVector), back to degrees. */
		point->has_point = true;
		point->latitude = asin(Max(-1.0, Min(1.0, place.xyz[2]))) * 180.0 / M_PI;
		point->longitude = atan2(place.xyz[1], place.xyz[0]) * 180.0 / M_PI;
	}
}

/*
 * NullableText returns a text column of an SPI row as a C string, or NULL.
 */
static char *
NullableText(HeapTuple tuple, TupleDesc desc, int attnum)
{
	bool isnull;
	Datum d = SPI_getbinval(tuple, desc, attnum, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

/*
 * EmitRow adds a point to aimroute.coverage()'s result.
 */
static void
EmitRow(void *arg, const CoveragePoint *point)
{
	CoverageRows *rows = arg;
	const RouteResult *r = &point->result;
	Datum values[7];
	bool nulls[7] = { false, false, false, false, false, false, false };

	if (!rows->match_known[r->match])
	{
		Oid input;
		Oid ioparam;

		getTypeInputInfo(rows->match_type, &input, &ioparam);
		rows->match_values[r->match] =
			OidInputFunctionCall(input, (char *) MatchKindLabels[r->match], ioparam, -1);
		rows->match_known[r->match] = true;
	}
	values[0] = CStringGetTextDatum(point->country);
	values[1] = CStringGetTextDatum(point->postal_code);
	values[2] = point->state_code ? CStringGetTextDatum(point->state_code) : (Datum) 0;
	nulls[2] = point->state_code == NULL;
	values[3] = point->county ? CStringGetTextDatum(point->county) : (Datum) 0;
	nulls[3] = point->county == NULL;
	values[4] = CStringGetTextDatum(r->dealer_number);
	values[5] = rows->match_values[r->match];
	values[6] = Float8GetDatum(r->distance_m / METERS_PER_MILE);
	nulls[6] = isnan(r->distance_m);
	tuplestore_putvalues(rows->rsinfo->setResult, rows->rsinfo->setDesc, values, nulls);
}

/*
 * aimroute_coverage is the SQL function aimroute.coverage(brand_code,
 * country): (country, postal_code, state_code, county, dealer_number,
 * match_type, distance_miles) for every postal code with a centre point.
 */
Datum
aimroute_coverage(PG_FUNCTION_ARGS)
{
	CoverageRows rows;
	const char *brand;
	const char *country;
	int pinned = PinSearchPath();

	CoverageArgs(fcinfo, &brand, &country);
	InitMaterializedSRF(fcinfo, 0);
	memset(&rows, 0, sizeof(rows));
	rows.rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	rows.match_type = TupleDescAttr(rows.rsinfo->setDesc, 5)->atttypid;
	CoverageWalk(brand, country, EmitRow, &rows);
	RestoreSearchPath(pinned);
	return (Datum) 0;
}

/*
 * AppendJsonText appends "key": value to a JSON object, null when value is
 * NULL.
 */
static void
AppendJsonText(StringInfo buf, const char *key, const char *value)
{
	escape_json(buf, key);
	appendStringInfoChar(buf, ':');
	if (value)
		escape_json(buf, value);
	else
		appendStringInfoString(buf, "null");
}

/*
 * EmitFeature appends a point as a GeoJSON Feature (RFC 7946): a Point at
 * [longitude, latitude] with the coverage columns as properties.
 */
static void
EmitFeature(void *arg, const CoveragePoint *point)
{
	CoverageJson *json = arg;
	StringInfo buf = json->buf;
	const RouteResult *r = &point->result;

	if (!point->has_point)
		return; /* not a centre point routing can measure from: no place on a map */
	appendStringInfoString(buf, json->features > 0 ? ",\n" : "\n");
	appendStringInfo(buf,
					 "{\"type\":\"Feature\",\"geometry\":{\"type\":\"Point\",\"coordinates\":"
					 "[%.6f,%.6f]},\"properties\":{",
					 point->longitude, point->latitude);
	AppendJsonText(buf, "country", point->country);
	appendStringInfoChar(buf, ',');
	AppendJsonText(buf, "postal_code", point->postal_code);
	appendStringInfoChar(buf, ',');
	AppendJsonText(buf, "state_code", point->state_code);
	appendStringInfoChar(buf, ',');
	AppendJsonText(buf, "county", point->county);
	appendStringInfoChar(buf, ',');
	AppendJsonText(buf, "dealer_number", r->dealer_number);
	appendStringInfoChar(buf, ',');
	AppendJsonText(buf, "match_type", MatchKindLabels[r->match]);
	appendStringInfoString(buf, ",\"distance_miles\":");
	if (isnan(r->distance_m))
		appendStringInfoString(buf, "null");
	else
		appendStringInfo(buf, "%.3f", r->distance_m / METERS_PER_MILE);
	appendStringInfo(buf, ",\"white_space\":%s}}", r->match == MATCH_DEFAULT ? "true" : "false");
	json->features++;
}

/*
 * aimroute_coverage_geojson is the SQL function
 * aimroute.coverage_geojson(brand_code, country): the coverage as a GeoJSON
 * FeatureCollection of points, one feature per line, as json.
 */
Datum
aimroute_coverage_geojson(PG_FUNCTION_ARGS)
{
	CoverageJson json;
	const char *brand;
	const char *country;
	int pinned = PinSearchPath();

	CoverageArgs(fcinfo, &brand, &country);
	json.buf = makeStringInfo();
	json.features = 0;
	appendStringInfoString(json.buf, "{\"type\":\"FeatureCollection\",\"features\":[");
	CoverageWalk(brand, country, EmitFeature, &json);
	appendStringInfoString(json.buf, "\n]}");
	RestoreSearchPath(pinned);
	PG_RETURN_TEXT_P(cstring_to_text_with_len(json.buf->data, json.buf->len));
}
