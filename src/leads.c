/*
 * leads.c
 *		SQL entry points of routing: the INSERT trigger on aimroute.leads,
 *		aimroute.route() and aimroute.locate_dealers().
 *
 * All three call RouteLead (routing.c), so a lead, a simulation and the
 * dealer locator always agree.
 */
#include "postgres.h"

#include <math.h>

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "routing.h"

#define METERS_PER_MILE 1609.344

/* Columns of aimroute.leads the trigger reads and writes, by name. */
typedef struct LeadColumns
{
	int country;
	int postal_code;
	int state_code;
	int brand_code;
	int product_code;
	int dealer_number;
	int dealer_group;
	int match_type;
	int distance_miles;
	int routed_at;
	int country_input;
	int postal_code_input;
	int dealer_number_input;
	int routing_log;
} LeadColumns;

static int ColumnNumber(TupleDesc desc, const char *name);
static char *GetTextColumn(HeapTuple tuple, TupleDesc desc, int attnum);
static Datum MatchTypeDatum(Oid enum_type, MatchKind match);
static void ReadExcluded(ArrayType *array, RouteRequest *request);
static char *DealerName(const char *dealer_number);
static char *TextArg(FunctionCallInfo fcinfo, int i);
static void ReadRequestArgs(FunctionCallInfo fcinfo, RouteRequest *request);

PG_FUNCTION_INFO_V1(aimroute_route_lead_trigger);
PG_FUNCTION_INFO_V1(aimroute_route);
PG_FUNCTION_INFO_V1(aimroute_locate_dealers);

/*
 * ColumnNumber finds a column of the trigger's relation by name.
 */
static int
ColumnNumber(TupleDesc desc, const char *name)
{
	int attnum = SPI_fnumber(desc, name);

	if (attnum <= 0)
		elog(ERROR, "aimroute.leads has no column \"%s\"", name);
	return attnum;
}

/*
 * GetTextColumn reads a text column of a tuple, or NULL.
 */
static char *
GetTextColumn(HeapTuple tuple, TupleDesc desc, int attnum)
{
	bool isnull;
	Datum d = heap_getattr(tuple, attnum, desc, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

/*
 * MatchTypeDatum returns the aimroute.match_type value of a match.
 */
static Datum
MatchTypeDatum(Oid enum_type, MatchKind match)
{
	Oid input;
	Oid ioparam;

	getTypeInputInfo(enum_type, &input, &ioparam);
	return OidInputFunctionCall(input, (char *) MatchKindLabels[match], ioparam, -1);
}

/*
 * ReadExcluded fills the request's excluded dealers from a text[].
 */
static void
ReadExcluded(ArrayType *array, RouteRequest *request)
{
	Datum *elems;
	bool *nulls;
	int n;

	deconstruct_array(array, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	request->excluded = palloc(sizeof(char *) * Max(n, 1));
	request->nexcluded = 0;
	for (int i = 0; i < n; i++)
		if (!nulls[i])
			request->excluded[request->nexcluded++] = TextDatumGetCString(elems[i]);
}

/*
 * TextArg returns argument i as a C string, or NULL.
 */
static char *
TextArg(FunctionCallInfo fcinfo, int i)
{
	return PG_ARGISNULL(i) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(i));
}

/*
 * ReadRequestArgs starts a request from the arguments route() and
 * locate_dealers() share: country, postal_code, brand_code, product_code.
 */
static void
ReadRequestArgs(FunctionCallInfo fcinfo, RouteRequest *request)
{
	memset(request, 0, sizeof(*request));
	request->country = TextArg(fcinfo, 0);
	request->postal_code = TextArg(fcinfo, 1);
	request->brand_code = TextArg(fcinfo, 2);
	request->product_code = TextArg(fcinfo, 3);
}

/*
 * DealerName returns a dealer's name, allocated in the caller's context, or
 * NULL.
 */
static char *
DealerName(const char *dealer_number)
{
	static SPIPlanPtr plan = NULL;
	MemoryContext caller = CurrentMemoryContext;
	Datum arg = CStringGetTextDatum(dealer_number);
	char *name = NULL;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (plan == NULL)
	{
		Oid argtype = TEXTOID;
		SPIPlanPtr p =
			SPI_prepare("SELECT name FROM aimroute.dealers WHERE dealer_number = $1", 1, &argtype);

		if (p == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(p);
		plan = p;
	}
	if (SPI_execute_plan(plan, &arg, NULL, true, 1) == SPI_OK_SELECT && SPI_processed == 1)
	{
		bool isnull;
		Datum d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
			name = MemoryContextStrdup(caller, TextDatumGetCString(d));
	}
	SPI_finish();
	return name;
}

/*
 * aimroute_route_lead_trigger is the BEFORE INSERT row trigger on
 * aimroute.leads: it routes the new lead and fills dealer_number,
 * match_type, distance_miles, routed_at and the explanation.
 */
Datum
aimroute_route_lead_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc desc;
	HeapTuple tuple;
	LeadColumns c;
	RouteRequest request;
	RouteResult result;
	int attnums[11];
	Datum values[11];
	bool nulls[11];
	int n = 0;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) || !TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		elog(ERROR, "aimroute_route_lead_trigger must be a BEFORE INSERT row trigger");

	desc = trigdata->tg_relation->rd_att;
	tuple = trigdata->tg_trigtuple;
	c.country = ColumnNumber(desc, "country");
	c.postal_code = ColumnNumber(desc, "postal_code");
	c.state_code = ColumnNumber(desc, "state_code");
	c.brand_code = ColumnNumber(desc, "brand_code");
	c.product_code = ColumnNumber(desc, "product_code");
	c.dealer_number = ColumnNumber(desc, "dealer_number");
	c.dealer_group = ColumnNumber(desc, "dealer_group");
	c.match_type = ColumnNumber(desc, "match_type");
	c.distance_miles = ColumnNumber(desc, "distance_miles");
	c.routed_at = ColumnNumber(desc, "routed_at");
	c.country_input = ColumnNumber(desc, "country_input");
	c.postal_code_input = ColumnNumber(desc, "postal_code_input");
	c.dealer_number_input = ColumnNumber(desc, "dealer_number_input");
	c.routing_log = ColumnNumber(desc, "routing_log");

	memset(&request, 0, sizeof(request));
	request.country = GetTextColumn(tuple, desc, c.country);
	request.postal_code = GetTextColumn(tuple, desc, c.postal_code);
	request.state_code = GetTextColumn(tuple, desc, c.state_code);
	request.brand_code = GetTextColumn(tuple, desc, c.brand_code);
	request.product_code = GetTextColumn(tuple, desc, c.product_code);
	request.dealer_number = GetTextColumn(tuple, desc, c.dealer_number);
	request.dealer_group = GetTextColumn(tuple, desc, c.dealer_group);

	RouteLead(&request, &result);

#define SET(attnum, value, isnull)                                                                 \
	do                                                                                             \
	{                                                                                              \
		attnums[n] = (attnum);                                                                     \
		values[n] = (value);                                                                       \
		nulls[n] = (isnull);                                                                       \
		n++;                                                                                       \
	} while (0)
	SET(c.dealer_number, CStringGetTextDatum(result.dealer_number), false);
	SET(c.match_type, MatchTypeDatum(TupleDescAttr(desc, c.match_type - 1)->atttypid, result.match),
		false);
	SET(c.distance_miles, Float8GetDatum(result.distance_m / METERS_PER_MILE),
		isnan(result.distance_m));
	SET(c.routed_at, TimestampTzGetDatum(GetCurrentTimestamp()), false);
	SET(c.country, result.country ? CStringGetTextDatum(result.country) : (Datum) 0,
		result.country == NULL);
	SET(c.postal_code, result.postal_code ? CStringGetTextDatum(result.postal_code) : (Datum) 0,
		result.postal_code == NULL);
	SET(c.country_input, request.country ? CStringGetTextDatum(request.country) : (Datum) 0,
		request.country == NULL);
	SET(c.postal_code_input,
		request.postal_code ? CStringGetTextDatum(request.postal_code) : (Datum) 0,
		request.postal_code == NULL);
	SET(c.dealer_number_input,
		request.dealer_number ? CStringGetTextDatum(request.dealer_number) : (Datum) 0,
		request.dealer_number == NULL);
	SET(c.routing_log,
		RouteStepsToArray(result.steps, TupleDescAttr(desc, c.routing_log - 1)->atttypid), false);
#undef SET

	return PointerGetDatum(heap_modify_tuple_by_cols(tuple, desc, n, attnums, values, nulls));
}

/*
 * aimroute_route is the SQL function aimroute.route(country, postal_code,
 * brand_code, product_code, dealer_number, dealer_group, excluded,
 * state_code): the decision and its explanation, changing nothing.
 */
Datum
aimroute_route(PG_FUNCTION_ARGS)
{
	RouteRequest request;
	RouteResult result;
	TupleDesc desc;
	Datum values[4];
	bool nulls[4] = { false, false, false, false };

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "aimroute.route must return a composite type");
	desc = BlessTupleDesc(desc);

	ReadRequestArgs(fcinfo, &request);
	request.dealer_number = TextArg(fcinfo, 4);
	request.dealer_group = TextArg(fcinfo, 5);
	request.state_code = TextArg(fcinfo, 7);
	if (!PG_ARGISNULL(6))
		ReadExcluded(PG_GETARG_ARRAYTYPE_P(6), &request);

	RouteLead(&request, &result);

	values[0] = CStringGetTextDatum(result.dealer_number);
	values[1] = MatchTypeDatum(TupleDescAttr(desc, 1)->atttypid, result.match);
	values[2] = Float8GetDatum(result.distance_m / METERS_PER_MILE);
	nulls[2] = isnan(result.distance_m);
	values[3] = RouteStepsToArray(result.steps, TupleDescAttr(desc, 3)->atttypid);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}

/*
 * aimroute_locate_dealers is the SQL function aimroute.locate_dealers():
 * rank 1 is the dealer a lead with these inputs gets; each next rank is the
 * dealer it would be re-routed to, excluding every dealer ranked before,
 * down to the default dealer.
 */
Datum
aimroute_locate_dealers(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	RouteRequest request;
	int max_results = PG_ARGISNULL(4) ? 10 : PG_GETARG_INT32(4);
	Oid match_type;

	if (max_results < 1 || max_results > 1000)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("max_results must be between 1 and 1000, not %d", max_results)));

	InitMaterializedSRF(fcinfo, 0);
	match_type = TupleDescAttr(rsinfo->setDesc, 4)->atttypid;

	ReadRequestArgs(fcinfo, &request);
	request.excluded = palloc(sizeof(char *) * max_results);

	for (int rank = 1; rank <= max_results; rank++)
	{
		RouteResult result;
		Datum values[5];
		bool nulls[5] = { false, false, false, false, false };
		char *name = NULL;

		RouteLead(&request, &result);

		/* The default dealer may already be listed, as a candidate of a rule. */
		if (result.match == MATCH_DEFAULT)
		{
			bool listed = false;

			for (int i = 0; i < request.nexcluded; i++)
				if (strcmp(request.excluded[i], result.dealer_number) == 0)
					listed = true;
			if (listed)
				break;
		}
		name = DealerName(result.dealer_number);

		values[0] = Int32GetDatum(rank);
		values[1] = CStringGetTextDatum(result.dealer_number);
		values[2] = name ? CStringGetTextDatum(name) : (Datum) 0;
		nulls[2] = name == NULL;
		values[3] = Float8GetDatum(result.distance_m / METERS_PER_MILE);
		nulls[3] = isnan(result.distance_m);
		values[4] = MatchTypeDatum(match_type, result.match);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);

		/* The default dealer is the end of the line. */
		if (result.match == MATCH_DEFAULT)
			break;
		request.excluded[request.nexcluded++] = result.dealer_number;
	}
	return (Datum) 0;
}
