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

#include "delivery.h"
#include "kept_plan.h"
#include "model.h"
#include "routing.h"
#include "search_path.h"

/* Columns of aimroute.leads the trigger reads and writes. */
typedef enum LeadColumn
{
	LC_COUNTRY,
	LC_POSTAL_CODE,
	LC_STATE_CODE,
	LC_BRAND_CODE,
	LC_PRODUCT_CODE,
	LC_DEALER_NUMBER,
	LC_DEALER_GROUP,
	LC_MATCH_TYPE,
	LC_DISTANCE_MILES,
	LC_ROUTED_AT,
	LC_COUNTRY_INPUT,
	LC_POSTAL_CODE_INPUT,
	LC_DEALER_NUMBER_INPUT,
	LC_ROUTING_LOG,
	LC_SEND_TO_DEALER,
	LC_REROUTE_DUE_AT,
	LC_LEAD_ID,
	LC_RECEIVED_AT,
	LC_NOTICE_PENDING, /* optional: a database not updated from 0.1.0 yet lacks it */
	LC_COUNT
} LeadColumn;

static const char *const lead_column_names[LC_COUNT] = {
	"country",
	"postal_code",
	"state_code",
	"brand_code",
	"product_code",
	"dealer_number",
	"dealer_group",
	"match_type",
	"distance_miles",
	"routed_at",
	"country_input",
	"postal_code_input",
	"dealer_number_input",
	"routing_log",
	"send_to_dealer",
	"reroute_due_at",
	"lead_id",
	"received_at",
	"notice_pending",
};

/* Where those columns are, and the aimroute.match_type value of each match. */
typedef struct LeadColumns
{
	int attnum[LC_COUNT]; /* 0 for an optional column the table lacks */
	int natts;
	Oid match_type_oid;
	Datum match_values[MATCH_REROUTE + 1];
} LeadColumns;

/*
 * A new lead's columns, taken apart once: each read of a column of a row
 * with nulls would otherwise walk the row from its start, and writing the
 * routed columns would take it apart again.
 */
typedef struct LeadRow
{
	Datum *values;
	bool *nulls;
} LeadRow;

/* The columns routing writes into a new lead. */
typedef struct LeadChanges
{
	int n;
	int attnums[LC_COUNT];
	Datum values[LC_COUNT];
	bool nulls[LC_COUNT];
} LeadChanges;

static int ColumnNumber(TupleDesc desc, const char *name);
static void LeadColumnsFor(TupleDesc desc, LeadColumns *c);
static char *GetTextColumn(const LeadRow *row, int attnum);
static Datum MatchTypeDatum(Oid enum_type, MatchKind match);
static void ReadExcluded(ArrayType *array, RouteRequest *request);
static char *DealerName(const char *dealer_number);
static char *TextArg(FunctionCallInfo fcinfo, int i);
static void ReadRequestArgs(FunctionCallInfo fcinfo, RouteRequest *request);
static bool ArrivedRouted(const LeadRow *row, const LeadColumns *c);
static void ReadLeadRequest(const LeadRow *row, const LeadColumns *c, RouteRequest *request);
static HeapTuple RoutedTuple(HeapTuple tuple, TupleDesc desc, LeadRow *row,
							 const LeadChanges *changes);
static void SetColumn(LeadChanges *changes, int attnum, Datum value, bool isnull);
static void SetTextColumn(LeadChanges *changes, int attnum, const char *value);
static void RoutedColumns(LeadChanges *changes, TupleDesc desc, const LeadColumns *c,
						  const RouteRequest *request, const RouteResult *result, bool send);

PG_FUNCTION_INFO_V1(aimroute_route_lead_trigger);
PG_FUNCTION_INFO_V1(aimroute_route);
PG_FUNCTION_INFO_V1(aimroute_locate_dealers);
PG_FUNCTION_INFO_V1(aimroute_dealer_distance_miles);

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
 * LeadColumnsFor finds the columns the trigger uses.  They are looked up by
 * name once per backend and kept; each row checks the kept numbers still
 * name the same columns (an ALTER TABLE may have moved them), which costs a
 * few string compares instead of a search of the tuple descriptor.  The
 * optional notice_pending may be missing (0); a column added since changes
 * the number of columns, and the columns are looked up again.
 */
static void
LeadColumnsFor(TupleDesc desc, LeadColumns *c)
{
	static LeadColumns cached;
	static bool valid = false;
	bool ok = valid && cached.natts == desc->natts;

	for (int i = 0; ok && i < LC_COUNT; i++)
	{
		Form_pg_attribute att;

		if (cached.attnum[i] == 0 && i == LC_NOTICE_PENDING)
			continue;
		if (cached.attnum[i] > desc->natts)
		{
			ok = false;
			break;
		}
		att = TupleDescAttr(desc, cached.attnum[i] - 1);
		ok = !att->attisdropped && strcmp(NameStr(att->attname), lead_column_names[i]) == 0;
	}
	if (ok &&
		TupleDescAttr(desc, cached.attnum[LC_MATCH_TYPE] - 1)->atttypid != cached.match_type_oid)
		ok = false;
	if (!ok)
	{
		Oid input;
		Oid ioparam;

		for (int i = 0; i < LC_COUNT; i++)
			cached.attnum[i] = i == LC_NOTICE_PENDING
								   ? Max(SPI_fnumber(desc, lead_column_names[i]), 0)
								   : ColumnNumber(desc, lead_column_names[i]);
		cached.natts = desc->natts;
		cached.match_type_oid = TupleDescAttr(desc, cached.attnum[LC_MATCH_TYPE] - 1)->atttypid;
		getTypeInputInfo(cached.match_type_oid, &input, &ioparam);
		for (int m = 0; m <= MATCH_REROUTE; m++)
			cached.match_values[m] =
				OidInputFunctionCall(input, (char *) MatchKindLabels[m], ioparam, -1);
		valid = true;
	}
	*c = cached;
}

/*
 * GetTextColumn reads a text column of a new lead, or NULL.
 */
static char *
GetTextColumn(const LeadRow *row, int attnum)
{
	return row->nulls[attnum - 1] ? NULL : TextDatumGetCString(row->values[attnum - 1]);
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
	Oid argtype = TEXTOID;
	MemoryContext caller = CurrentMemoryContext;
	Datum arg = CStringGetTextDatum(dealer_number);
	char *name = NULL;
	int pinned;

	pinned = SpiConnectPinned();
	if (SPI_execute_plan(KeptPlan(&plan,
								  "SELECT name FROM aimroute.dealers WHERE dealer_number = $1", 1,
								  &argtype, 0),
						 &arg, NULL, true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
	{
		bool isnull;
		Datum d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
			name = MemoryContextStrdup(caller, TextDatumGetCString(d));
	}
	SpiFinishPinned(pinned);
	return name;
}

/*
 * ArrivedRouted tells whether a lead arrives already routed -- match type,
 * routing time and explanation all given, as pg_restore's COPY brings them
 * back -- and so keeps its routing and its history.  An application's
 * INSERT never writes an explanation.
 */
static bool
ArrivedRouted(const LeadRow *row, const LeadColumns *c)
{
	int log = c->attnum[LC_ROUTING_LOG] - 1;
	ArrayType *steps;

	if (row->nulls[c->attnum[LC_MATCH_TYPE] - 1] || row->nulls[c->attnum[LC_ROUTED_AT] - 1] ||
		row->nulls[log])
		return false;
	steps = DatumGetArrayTypeP(row->values[log]);
	return ArrayGetNItems(ARR_NDIM(steps), ARR_DIMS(steps)) > 0;
}

/*
 * ReadLeadRequest reads what routing needs of a new lead.
 */
static void
ReadLeadRequest(const LeadRow *row, const LeadColumns *c, RouteRequest *request)
{
	memset(request, 0, sizeof(*request));
	request->country = GetTextColumn(row, c->attnum[LC_COUNTRY]);
	request->postal_code = GetTextColumn(row, c->attnum[LC_POSTAL_CODE]);
	request->state_code = GetTextColumn(row, c->attnum[LC_STATE_CODE]);
	request->brand_code = GetTextColumn(row, c->attnum[LC_BRAND_CODE]);
	request->product_code = GetTextColumn(row, c->attnum[LC_PRODUCT_CODE]);
	request->dealer_number = GetTextColumn(row, c->attnum[LC_DEALER_NUMBER]);
	request->dealer_group = GetTextColumn(row, c->attnum[LC_DEALER_GROUP]);
	/* The configuration valid when the lead was received: a back-dated import routes as then. */
	request->has_at = !row->nulls[c->attnum[LC_RECEIVED_AT] - 1];
	if (request->has_at)
		request->at = DatumGetTimestampTz(row->values[c->attnum[LC_RECEIVED_AT] - 1]);
}

/*
 * RoutedTuple makes the routed lead: the new lead's columns with the
 * changes written in, and the new lead's identity, as
 * heap_modify_tuple_by_cols makes it.
 */
static HeapTuple
RoutedTuple(HeapTuple tuple, TupleDesc desc, LeadRow *row, const LeadChanges *changes)
{
	HeapTuple routed;

	for (int i = 0; i < changes->n; i++)
	{
		row->values[changes->attnums[i] - 1] = changes->values[i];
		row->nulls[changes->attnums[i] - 1] = changes->nulls[i];
	}
	routed = heap_form_tuple(desc, row->values, row->nulls);
	routed->t_data->t_ctid = tuple->t_data->t_ctid;
	routed->t_self = tuple->t_self;
	routed->t_tableOid = tuple->t_tableOid;
	return routed;
}

/*
 * SetColumn records the new value of one column of the routed lead.
 */
static void
SetColumn(LeadChanges *changes, int attnum, Datum value, bool isnull)
{
	changes->attnums[changes->n] = attnum;
	changes->values[changes->n] = value;
	changes->nulls[changes->n] = isnull;
	changes->n++;
}

/*
 * SetTextColumn records a text column of the routed lead (NULL for NULL).
 */
static void
SetTextColumn(LeadChanges *changes, int attnum, const char *value)
{
	SetColumn(changes, attnum, value ? CStringGetTextDatum(value) : (Datum) 0, value == NULL);
}

/*
 * RoutedColumns records what routing writes into the lead: its dealer,
 * match type, distance, routing time, normalized place, the input as
 * received, the explanation, and the re-route deadline.  The dealer has
 * until then to view the lead; not the default dealer, the end of the line
 * (also when the lead was pre-assigned to it), and not for a lead that is
 * not sent to its dealer, which the dealer cannot view.
 */
static void
RoutedColumns(LeadChanges *changes, TupleDesc desc, const LeadColumns *c,
			  const RouteRequest *request, const RouteResult *result, bool send)
{
	TimestampTz routed_at = GetCurrentTimestamp();

	SetTextColumn(changes, c->attnum[LC_DEALER_NUMBER], result->dealer_number);
	SetColumn(changes, c->attnum[LC_MATCH_TYPE], c->match_values[result->match], false);
	SetColumn(changes, c->attnum[LC_DISTANCE_MILES],
			  Float8GetDatum(result->distance_m / METERS_PER_MILE), isnan(result->distance_m));
	SetColumn(changes, c->attnum[LC_ROUTED_AT], TimestampTzGetDatum(routed_at), false);
	SetTextColumn(changes, c->attnum[LC_COUNTRY], result->country);
	SetTextColumn(changes, c->attnum[LC_POSTAL_CODE], result->postal_code);
	SetTextColumn(changes, c->attnum[LC_COUNTRY_INPUT], request->country);
	SetTextColumn(changes, c->attnum[LC_POSTAL_CODE_INPUT], request->postal_code);
	SetTextColumn(changes, c->attnum[LC_DEALER_NUMBER_INPUT], request->dealer_number);
	SetColumn(changes, c->attnum[LC_ROUTING_LOG],
			  RouteStepsToArray(result->steps,
								TupleDescAttr(desc, c->attnum[LC_ROUTING_LOG] - 1)->atttypid),
			  false);
	if (result->reroute.enabled && result->match != MATCH_DEFAULT && !result->default_dealer &&
		send)
		SetColumn(changes, c->attnum[LC_REROUTE_DUE_AT],
				  TimestampTzGetDatum(
					  RerouteDeadlineFor(&result->reroute, result->dealer_number, routed_at)),
				  false);
	else
		SetColumn(changes, c->attnum[LC_REROUTE_DUE_AT], (Datum) 0, true);
}

/*
 * aimroute_route_lead_trigger is the BEFORE INSERT row trigger on
 * aimroute.leads: it routes the new lead and fills dealer_number,
 * match_type, distance_miles, routed_at and the explanation, and marks a
 * lead to be sent (notice_pending) for the delivery worker.
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
	LeadChanges changes;
	LeadRow row;
	bool send;
	int pinned;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) || !TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		elog(ERROR, "aimroute_route_lead_trigger must be a BEFORE INSERT row trigger");
	desc = trigdata->tg_relation->rd_att;
	tuple = trigdata->tg_trigtuple;
	LeadColumnsFor(desc, &c);
	row.values = palloc(sizeof(Datum) * desc->natts);
	row.nulls = palloc(sizeof(bool) * desc->natts);
	heap_deform_tuple(tuple, desc, row.values, row.nulls);
	if (ArrivedRouted(&row, &c))
		return PointerGetDatum(tuple);
	ReadLeadRequest(&row, &c, &request);
	send = row.nulls[c.attnum[LC_SEND_TO_DEALER] - 1] ||
		   DatumGetBool(row.values[c.attnum[LC_SEND_TO_DEALER] - 1]);

	/* Routing and queueing run under aimroute's search_path, not the caller's. */
	pinned = PinSearchPath();
	request.take_turn = true; /* route(), the locator and simulations only look */
	RouteLead(&request, &result);
	changes.n = 0;
	RoutedColumns(&changes, desc, &c, &request, &result, send);

	/*
	 * The lead is the queue: a lead to be sent carries a mark, stored with
	 * the row at no cost of its own, and the delivery worker, woken at
	 * commit, expands the marked leads into their notices and messages in
	 * batches (aimroute.delivery_expand).  The mark commits with the lead or
	 * not at all, so a committed lead always gets its notice, once: the
	 * worker clears the mark in the transaction that queues it.
	 */
	if (c.attnum[LC_NOTICE_PENDING] > 0)
	{
		SetColumn(&changes, c.attnum[LC_NOTICE_PENDING], BoolGetDatum(send), false);
		if (send)
			DeliveryWakeWorkerAtCommit();
	}
	else if (send)
	{
		/*
		 * A database not updated from 0.1.0 yet has no mark: the notice and
		 * its messages are queued here, in the inserting transaction, as
		 * 0.1.0 did.
		 */
		int lead_id = c.attnum[LC_LEAD_ID] - 1;

		if (row.nulls[lead_id])
			elog(ERROR, "a lead without lead_id");
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		(void) QueueLeadDelivery(DatumGetInt64(row.values[lead_id]), result.dealer_number,
								 "Routed");
		SPI_finish();
	}
	RestoreSearchPath(pinned);

	return PointerGetDatum(RoutedTuple(tuple, desc, &row, &changes));
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
	int pinned;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "aimroute.route must return a composite type");
	desc = BlessTupleDesc(desc);

	ReadRequestArgs(fcinfo, &request);
	request.dealer_number = TextArg(fcinfo, 4);
	request.dealer_group = TextArg(fcinfo, 5);
	request.state_code = TextArg(fcinfo, 7);
	if (!PG_ARGISNULL(6))
		ReadExcluded(PG_GETARG_ARRAYTYPE_P(6), &request);
	/* as_of, which a database not updated from 0.1.0 yet does not pass. */
	if (PG_NARGS() > 8 && !PG_ARGISNULL(8))
	{
		request.has_at = true;
		request.at = PG_GETARG_TIMESTAMPTZ(8);
	}

	pinned = PinSearchPath();
	RouteLead(&request, &result);
	RestoreSearchPath(pinned);

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
	int pinned;

	if (max_results < 1 || max_results > 1000)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("max_results must be between 1 and 1000, not %d", max_results)));

	InitMaterializedSRF(fcinfo, 0);
	match_type = TupleDescAttr(rsinfo->setDesc, 4)->atttypid;

	ReadRequestArgs(fcinfo, &request);
	request.excluded = palloc(sizeof(char *) * max_results);

	pinned = PinSearchPath();
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
	RestoreSearchPath(pinned);
	return (Datum) 0;
}

/*
 * aimroute_dealer_distance_miles is the SQL function
 * aimroute.dealer_distance_miles(country, postal_code, dealer_number): the
 * miles from a postal code's centre to a dealer, read from the routing
 * model, so exactly the figure routing gives; NULL when the dealer, the
 * postal code or either point is unknown.
 */
Datum
aimroute_dealer_distance_miles(PG_FUNCTION_ARGS)
{
	char *country = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char *postal_code = text_to_cstring(PG_GETARG_TEXT_PP(1));
	char *dealer_number = text_to_cstring(PG_GETARG_TEXT_PP(2));
	int pinned = PinSearchPath();
	Model *model = ModelCurrent();
	int dealer = ModelFindDealer(model, dealer_number);
	Place place;
	double metres = NAN;

	if (dealer >= 0)
	{
		ModelPlace(model, country, postal_code, &place);
		if (place.has_centroid)
			metres = ModelDistance(model, dealer, place.centroid);
	}

	RestoreSearchPath(pinned);
	if (isnan(metres))
		PG_RETURN_NULL();
	PG_RETURN_FLOAT8(metres / METERS_PER_MILE);
}
