/*
 * routing.c
 *		The routing decision: which dealer a lead goes to, and why.
 *
 * RouteLead applies the rules in order (SPEC section 2):
 *
 *	1. Pre-assigned: the lead names an existing dealer, active or not,
 *	   selling its brand or not (the explanation says which).
 *	2. Dealer Group: the closest dealer of the lead's group in its country.
 *	3. Inventory: the closest dealer in the country, within the radius, with
 *	   the lead's product in stock (when inventory routing is on).
 *	4. Territory: the closest dealer holding a territory that contains the
 *	   lead (postal code, county, state or country; all-brands territories
 *	   and the lead's brand's Brand Territories).
 *	5. Radius: the closest dealer in the same country within the radius
 *	   (when on, and the country is in radius_countries).
 *	6. Default: the default dealer.
 *
 * Only active dealers selling the lead's brand are candidates (the default
 * dealer excepted), and with product routing on, steps 4 and 5 consider only
 * dealers assigned the lead's product.  Distances are WGS84 spheroid metres
 * as PostGIS's ST_Distance(geography, geography) gives them; ties go to the
 * lower dealer number (byte order).
 *
 * Nearest-dealer searches walk the GiST index in KNN order, which is exact
 * on the sphere, and compute the spheroid distance of each row.  The
 * spheroid and sphere distances of one pair differ by less than 0.6%, so
 * once a row's sphere distance, less a 1% margin, exceeds the best spheroid
 * distance found, no later row can beat it and the walk stops: the answer is
 * exact without measuring every dealer.
 *
 * Every step appends lines to the explanation (RouteStep), including why a
 * step did not apply.  Bad lead data never raises: it leads to the default
 * dealer with the reason logged.  The one error is a missing default dealer.
 */
#include "postgres.h"

#include <math.h>

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/typcache.h"

#include "country.h"
#include "postal.h"
#include "postgis.h"
#include "routing.h"
#include "routing_cache.h"
#include "search_path.h"

#define METERS_PER_MILE 1609.344
#define LOG_CANDIDATES	5 /* candidates named in the explanation per step */
#define FETCH_ROWS		16

const char *const MatchKindLabels[] = {
	"Territory",	"Radius",		"Drive Distance", "Default",  "Reassigned",
	"Pre-assigned", "Dealer Group", "Inventory",	  "Re-Route",
};

/* The plans, prepared once per backend and kept. */
enum RoutingPlan
{
	PLAN_SETTINGS,
	PLAN_POSTAL,
	PLAN_BRAND,
	PLAN_DEALER,
	PLAN_GROUP_NEAR,
	PLAN_GROUP_ANY,
	PLAN_INVENTORY,
	PLAN_TERRITORY,
	PLAN_RADIUS,
	PLAN_COUNT
};

/* Where the lead is, as far as its inputs tell. */
typedef struct LeadPlace
{
	const char *country;
	char *postal_code;
	bool postal_known;
	char *place_name;
	char *state_code;
	char *county_code; /* "MI/Mackinac" */
	Datum centroid;
	bool has_centroid;
	double xyz[3]; /* the centroid on the unit sphere (in-memory path) */
} LeadPlace;

/* The state of one routing: inputs, the explanation so far, the answer. */
typedef struct Routing
{
	const RouteRequest *request;
	RouteResult *result;
	MemoryContext result_context;
	RoutingCache *cache; /* NULL: route by SQL queries */
	RoutingSettings settings;
	LeadPlace place;
	int brand;			 /* in-memory path: the brand's index */
	int *excluded_index; /* in-memory path: the excluded dealers' indexes */
	int nexcluded_index;
	Datum excluded;				/* text[] */
	const char *product_filter; /* NULL: no product filter */
	int nsteps;
} Routing;

static SPIPlanPtr plans[PLAN_COUNT];
static MemoryContext scratch = NULL; /* the in-memory path's working memory */
static char *plans_postgis_schema = NULL;

static void PreparePlans(void);
static void EnsurePlans(void);
static SPIPlanPtr PlanFor(enum RoutingPlan which);
static char *Keep(Routing *r, const char *s);
static void AddStep(Routing *r, const char *rule, const char *dealer, double distance_m,
					const char *fmt, ...) pg_attribute_printf(5, 6);
static void Decide(Routing *r, MatchKind match, const char *dealer, double distance_m);
static char *GetText(int col, bool *isnull);
static double GetFloat(int col);
static void LoadSettings(Routing *r);
static void LocateLead(Routing *r);
static bool CheckBrand(Routing *r);
static bool TryPreassigned(Routing *r, bool brand_ok);
static const char *PreassignedNote(Routing *r, bool active, bool sells, bool brand_ok);
static bool TryDealerGroup(Routing *r);
static bool TryInventory(Routing *r);
static bool TryTerritory(Routing *r);
static bool TryRadius(Routing *r);
static void UseDefault(Routing *r);
static bool IsExcluded(Routing *r, const char *dealer);
static bool Better(double d1, const char *n1, double d2, const char *n2);
static void FindPlaceCached(Routing *r);
static void CacheFilter(Routing *r, CandidateFilter *f, const char *product, const char *stock,
						const char *group);
static bool NearestCached(Routing *r, const CandidateFilter *f, double limit_m, const char *rule,
						  char **best, double *best_m);
static bool TerritoryCached(Routing *r);
static bool TerritoryDecide(Routing *r, char *best, double best_m, uint64 n);
static void ForeignHoldersStep(Routing *r, int foreign);
static bool NearestByIndex(Routing *r, enum RoutingPlan which, Datum *values, const char *nulls,
						   double limit_m, const char *rule, char **best, double *best_m);
static char *MilesText(double m);

/*
 * PreparePlans prepares every query of the routing decision, qualifying
 * PostGIS's functions with its schema.
 */
static void
PreparePlans(void)
{
	const char *gis = PostgisSchema();
	Oid geog = PostgisGeographyType();
	char *candidate_filter;
	struct
	{
		enum RoutingPlan which;
		char *sql;
		int nargs;
		Oid types[8];
	} defs[PLAN_COUNT];
	int n = 0;

	/* An active dealer selling the brand ($b), not excluded ($x), with the product ($p). */
#define FILTER(b, x, p)                                                                            \
	psprintf(" d.active_for_sales"                                                                 \
			 " AND EXISTS (SELECT 1 FROM aimroute.dealer_brands b"                                 \
			 "  WHERE b.dealer_number = d.dealer_number AND b.brand_code = $%d)"                   \
			 " AND d.dealer_number <> ALL ($%d)"                                                   \
			 " AND ($%d::text IS NULL OR EXISTS (SELECT 1 FROM aimroute.product_assignments pa"    \
			 "  WHERE pa.dealer_number = d.dealer_number AND pa.product_code = $%d))",             \
			 b, x, p, p)

	defs[n++] = (typeof(defs[0])){
		PLAN_SETTINGS,
		"SELECT radius_enabled, radius_miles::float8, radius_countries, default_dealer_number,"
		" product_routing_enabled, inventory_routing_enabled, " REROUTE_SETTINGS_COLUMNS
		" FROM aimroute.settings",
		0,
		{ 0 }
	};
	defs[n++] =
		(typeof(defs[0])){ PLAN_POSTAL,
						   "SELECT place_name, state_code, county, centroid"
						   " FROM aimroute.postal_codes WHERE country = $1 AND postal_code = $2",
						   2,
						   { TEXTOID, TEXTOID } };
	defs[n++] = (typeof(defs[0])){
		PLAN_BRAND, "SELECT name FROM aimroute.brands WHERE brand_code = $1", 1, { TEXTOID }
	};
	defs[n++] = (typeof(defs[0])){
		PLAN_DEALER,
		psprintf("SELECT d.active_for_sales,"
				 " EXISTS (SELECT 1 FROM aimroute.dealer_brands b"
				 "  WHERE b.dealer_number = d.dealer_number AND b.brand_code = $2),"
				 " %s.st_distance(d.location, $3)"
				 " FROM aimroute.dealers d WHERE d.dealer_number = $1",
				 gis),
		3,
		{ TEXTOID, TEXTOID, geog }
	};

	candidate_filter = FILTER(4, 5, 6);
	defs[n++] = (typeof(defs[0])){
		PLAN_GROUP_NEAR,
		psprintf(
			"SELECT d.dealer_number, d.location OPERATOR(%s.<->) $1, %s.st_distance(d.location, $1)"
			" FROM aimroute.dealers d"
			" WHERE d.dealer_group = $2 AND d.country = $3 AND d.location IS NOT NULL AND %s"
			" ORDER BY d.location OPERATOR(%s.<->) $1, d.dealer_number COLLATE \"C\"",
			gis, gis, candidate_filter, gis),
		6,
		{ geog, TEXTOID, TEXTOID, TEXTOID, TEXTARRAYOID, TEXTOID }
	};
	defs[n++] = (typeof(defs[0])){
		PLAN_GROUP_ANY,
		psprintf("SELECT d.dealer_number FROM aimroute.dealers d"
				 " WHERE d.dealer_group = $2 AND d.country = $3 AND $1::text IS NULL AND %s"
				 " ORDER BY d.dealer_number COLLATE \"C\" LIMIT 1",
				 candidate_filter),
		6,
		{ TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTARRAYOID, TEXTOID }
	};
	defs[n++] = (typeof(defs[0])){
		PLAN_INVENTORY,
		psprintf(
			"SELECT d.dealer_number, d.location OPERATOR(%s.<->) $1, %s.st_distance(d.location, $1)"
			" FROM aimroute.dealers d"
			" WHERE d.country = $2 AND d.location IS NOT NULL"
			" AND EXISTS (SELECT 1 FROM aimroute.inventory i WHERE i.dealer_number = "
			"d.dealer_number"
			"  AND i.product_code = $6 AND i.quantity > 0) AND %s"
			" ORDER BY d.location OPERATOR(%s.<->) $1, d.dealer_number COLLATE \"C\"",
			gis, gis, FILTER(3, 4, 5), gis),
		6,
		{ geog, TEXTOID, TEXTOID, TEXTARRAYOID, TEXTOID, TEXTOID }
	};
	defs[n++] = (typeof(defs[0])){
		PLAN_TERRITORY,
		psprintf("SELECT d.dealer_number, %s.st_distance(d.location, $1),"
				 " string_agg(t.kind || ' ' || t.code"
				 "  || coalesce(' (brand ' || t.brand_code || ')', ''), ', '"
				 "  ORDER BY CASE t.kind WHEN 'postal' THEN 1 WHEN 'county' THEN 2"
				 "  WHEN 'state' THEN 3 ELSE 4 END, t.brand_code NULLS LAST),"
				 " d.country = $2"
				 " FROM aimroute.territories t JOIN aimroute.dealers d ON d.dealer_number = "
				 "t.dealer_number"
				 " WHERE t.country = $2"
				 " AND ((t.kind = 'postal' AND t.code = $3) OR (t.kind = 'county' AND t.code = $4)"
				 "  OR (t.kind = 'state' AND t.code = $5) OR t.kind = 'country')"
				 " AND (t.brand_code IS NULL OR t.brand_code = $6) AND %s"
				 " GROUP BY d.dealer_number, d.location, d.country"
				 " ORDER BY 2 NULLS LAST, d.dealer_number COLLATE \"C\"",
				 gis, FILTER(6, 7, 8)),
		8,
		{ geog, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTARRAYOID, TEXTOID }
	};
	defs[n++] = (typeof(defs[0])){
		PLAN_RADIUS,
		psprintf(
			"SELECT d.dealer_number, d.location OPERATOR(%s.<->) $1, %s.st_distance(d.location, $1)"
			" FROM aimroute.dealers d"
			" WHERE d.country = $2 AND d.location IS NOT NULL AND %s"
			" ORDER BY d.location OPERATOR(%s.<->) $1, d.dealer_number COLLATE \"C\"",
			gis, gis, FILTER(3, 4, 5), gis),
		5,
		{ geog, TEXTOID, TEXTOID, TEXTARRAYOID, TEXTOID }
	};
#undef FILTER

	for (int i = 0; i < n; i++)
	{
		SPIPlanPtr plan = SPI_prepare(defs[i].sql, defs[i].nargs, defs[i].types);

		if (plan == NULL)
			elog(ERROR, "could not prepare routing query %d: %s", (int) defs[i].which,
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		if (plans[defs[i].which] != NULL)
			SPI_freeplan(plans[defs[i].which]);
		plans[defs[i].which] = plan;
	}
	if (plans_postgis_schema != NULL)
		pfree(plans_postgis_schema);
	plans_postgis_schema = MemoryContextStrdup(TopMemoryContext, gis);
}

/*
 * EnsurePlans prepares the plans when nothing is prepared yet or PostGIS
 * was re-created in another schema; once per routing, not per query, as
 * finding PostGIS's schema reads pg_extension.
 */
static void
EnsurePlans(void)
{
	if (plans_postgis_schema == NULL || strcmp(plans_postgis_schema, PostgisSchema()) != 0)
		PreparePlans();
}

/*
 * PlanFor returns a kept plan; EnsurePlans has run for this routing.
 */
static SPIPlanPtr
PlanFor(enum RoutingPlan which)
{
	Assert(plans[which] != NULL);
	return plans[which];
}

/*
 * Keep copies a string into the result's memory context.
 */
static char *
Keep(Routing *r, const char *s)
{
	return s ? MemoryContextStrdup(r->result_context, s) : NULL;
}

/*
 * AddStep appends one line to the explanation.
 */
static void
AddStep(Routing *r, const char *rule, const char *dealer, double distance_m, const char *fmt, ...)
{
	MemoryContext old = MemoryContextSwitchTo(r->result_context);
	RouteStep *step = palloc(sizeof(RouteStep));
	StringInfoData buf;

	initStringInfo(&buf);
	for (;;)
	{
		va_list args;
		int needed;

		va_start(args, fmt);
		needed = appendStringInfoVA(&buf, fmt, args);
		va_end(args);
		if (needed == 0)
			break;
		enlargeStringInfo(&buf, needed);
	}
	step->step = ++r->nsteps;
	step->rule = rule;
	step->message = buf.data;
	step->dealer_number = dealer ? pstrdup(dealer) : NULL;
	step->distance_m = distance_m;
	r->result->steps = lappend(r->result->steps, step);
	MemoryContextSwitchTo(old);
}

/*
 * Decide records the answer and the line that says so.
 */
static void
Decide(Routing *r, MatchKind match, const char *dealer, double distance_m)
{
	r->result->dealer_number = Keep(r, dealer);
	r->result->match = match;
	r->result->distance_m = distance_m;
}

/*
 * GetText reads a text column of the current SPI row (1-based), or NULL.
 */
static char *
GetText(int col, bool *isnull)
{
	bool null;
	Datum d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, col, &null);

	if (isnull)
		*isnull = null;
	return null ? NULL : TextDatumGetCString(d);
}

/*
 * GetFloat reads a float8 column of the current SPI row, NaN when NULL.
 */
static double
GetFloat(int col)
{
	bool null;
	Datum d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, col, &null);

	return null ? NAN : DatumGetFloat8(d);
}

/*
 * MilesText formats a distance in metres as miles, to a tenth, for
 * messages.  In integer tenths rather than with "%.1f": every lead's
 * explanation has a few, and the C library's floating-point formatting
 * was a measurable part of routing's own cost.
 */
static char *
MilesText(double m)
{
	double tenths;

	if (isnan(m))
		return "unknown distance";
	tenths = rint(m / METERS_PER_MILE * 10.0);
	if (!(tenths >= 0 && tenths < 1e15))
		return psprintf("%.1f miles", m / METERS_PER_MILE);
	return psprintf(INT64_FORMAT ".%d miles", (int64) tenths / 10, (int) ((int64) tenths % 10));
}

/*
 * LoadSettings reads the one row of aimroute.settings.
 */
static void
LoadSettings(Routing *r)
{
	HeapTuple row;
	TupleDesc desc;
	bool isnull;
	Datum d;

	if (SPI_execute_plan(PlanFor(PLAN_SETTINGS), NULL, NULL, true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						errmsg("aimroute.settings has no row"),
						errhint("Reinstall the extension: the settings row is created by CREATE "
								"EXTENSION.")));
	row = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	r->settings.radius_enabled = DatumGetBool(SPI_getbinval(row, desc, 1, &isnull));
	r->settings.radius_m = DatumGetFloat8(SPI_getbinval(row, desc, 2, &isnull)) * METERS_PER_MILE;
	d = SPI_getbinval(row, desc, 3, &isnull);
	r->settings.nradius_countries = 0;
	if (!isnull)
	{
		Datum *elems;
		bool *nulls;
		int n;

		deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls,
						  &n);
		r->settings.radius_countries = palloc(sizeof(char *) * Max(n, 1));
		for (int i = 0; i < n; i++)
			if (!nulls[i])
				r->settings.radius_countries[r->settings.nradius_countries++] =
					TextDatumGetCString(elems[i]);
	}
	r->settings.default_dealer = GetText(4, NULL);
	r->settings.product_routing = DatumGetBool(SPI_getbinval(row, desc, 5, &isnull));
	r->settings.inventory_routing = DatumGetBool(SPI_getbinval(row, desc, 6, &isnull));
	ReadRerouteSettings(row, desc, 7, &r->settings.reroute);
}

/*
 * LocateLead normalizes the lead's country and postal code and finds its
 * centre point, state and county, explaining what it could not find.
 */
static void
LocateLead(Routing *r)
{
	const RouteRequest *q = r->request;
	LeadPlace *p = &r->place;

	p->country = q->country ? CountryNormalize(q->country, strlen(q->country)) : NULL;
	r->result->country = Keep(r, p->country);
	if (p->country == NULL)
	{
		AddStep(r, "Input", NULL, NAN,
				q->country && q->country[0] ? "country \"%s\" is not an ISO 3166-1 country: no "
											  "postal code lookup, no dealer in its country"
											: "no country%s: no postal code lookup, no dealer "
											  "in its country",
				q->country ? q->country : "");
		return;
	}

	if (r->cache != NULL)
		FindPlaceCached(r);
	else
		p->postal_code = q->postal_code
							 ? PostalResolve(p->country, q->postal_code, strlen(q->postal_code))
							 : NULL;
	r->result->postal_code = Keep(r, p->postal_code);
	if (p->postal_code != NULL && r->cache == NULL)
	{
		Datum values[2] = { CStringGetTextDatum(p->country), CStringGetTextDatum(p->postal_code) };

		if (SPI_execute_plan(PlanFor(PLAN_POSTAL), values, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "postal code lookup failed");
		if (SPI_processed == 1)
		{
			bool null;
			Datum c;

			p->postal_known = true;
			p->place_name = GetText(1, NULL);
			p->state_code = GetText(2, NULL);
			{
				char *county = GetText(3, NULL);

				if (county && p->state_code)
					p->county_code = psprintf("%s/%s", p->state_code, county);
			}
			c = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &null);
			if (!null)
			{
				MemoryContext old = MemoryContextSwitchTo(r->result_context);

				p->centroid = datumCopy(c, false, -1);
				p->has_centroid = true;
				MemoryContextSwitchTo(old);
			}
		}
	}

	if (p->postal_code == NULL)
		AddStep(r, "Input", NULL, NAN,
				"no postal code (blank) for %s: no centre point, no county appended", p->country);
	else if (!p->postal_known)
		AddStep(r, "Input", NULL, NAN,
				"postal code %s not found for %s: no centre point, no county appended",
				p->postal_code, p->country);
	else
		AddStep(r, "Input", NULL, NAN, "postal code %s %s: %s, state %s, county %s%s", p->country,
				p->postal_code, p->place_name ? p->place_name : "(no place name)",
				p->state_code ? p->state_code : "unknown",
				p->county_code ? p->county_code : "unknown",
				p->has_centroid ? "" : "; no centre point in aimroute.postal_codes");

	/* With no state from the postal code, the lead's own state code serves. */
	if (p->state_code == NULL && q->state_code != NULL)
	{
		char *given = PostalNormalizeLexical(NULL, q->state_code, strlen(q->state_code));

		if (given != NULL)
		{
			p->state_code = given;
			AddStep(r, "Input", NULL, NAN,
					"state %s taken from the lead's state_code for state territories", given);
		}
	}
}

/*
 * FindPlaceCached finds the lead's postal code in the in-memory copy.
 */
static void
FindPlaceCached(Routing *r)
{
	const RouteRequest *q = r->request;
	LeadPlace *p = &r->place;
	char *lexical;
	CachedPlace *place;

	if (q->postal_code == NULL)
		return;
	lexical = PostalNormalizeLexical(p->country, q->postal_code, strlen(q->postal_code));
	if (lexical == NULL)
		return;
	place = RoutingCachePlace(r->cache, p->country, lexical);
	p->postal_code = pstrdup(place->code);
	if (!place->known)
		return;
	p->postal_known = true;
	p->place_name = place->place_name;
	p->state_code = place->state_code;
	if (place->county && place->state_code)
		p->county_code = psprintf("%s/%s", place->state_code, place->county);
	if (place->has_centroid)
	{
		p->has_centroid = true;
		p->centroid = place->centroid;
		memcpy(p->xyz, place->xyz, sizeof(p->xyz));
	}
}

/*
 * CheckBrand explains the lead's brand; returns false when no dealer can
 * sell it (no brand, or an unknown one).
 */
static bool
CheckBrand(Routing *r)
{
	const char *brand = r->request->brand_code;
	const char *name = NULL;

	if (brand == NULL || brand[0] == '\0')
	{
		AddStep(r, "Input", NULL, NAN, "no brand: no dealer can be chosen for it");
		return false;
	}
	if (r->cache != NULL)
	{
		r->brand = RoutingCacheBrand(r->cache, brand);
		if (r->brand >= 0)
			name = r->cache->brand_names[r->brand];
	}
	else
	{
		Datum value = CStringGetTextDatum(brand);

		if (SPI_execute_plan(PlanFor(PLAN_BRAND), &value, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "brand lookup failed");
		if (SPI_processed == 1)
			name = GetText(1, NULL);
	}
	if (name == NULL)
	{
		AddStep(r, "Input", NULL, NAN, "brand %s is not in aimroute.brands: no dealer sells it",
				brand);
		return false;
	}
	AddStep(r, "Input", NULL, NAN, "brand %s (%s)%s%s", brand, name,
			r->product_filter ? "; product routing: only dealers assigned product " : "",
			r->product_filter ? r->product_filter : "");
	return true;
}

/*
 * IsExcluded tells whether a dealer may not receive the lead.
 */
static bool
IsExcluded(Routing *r, const char *dealer)
{
	for (int i = 0; i < r->request->nexcluded; i++)
		if (strcmp(r->request->excluded[i], dealer) == 0)
			return true;
	return false;
}

/*
 * Better orders two candidates: the closer first (unknown distances last),
 * then the lower dealer number.
 */
static bool
Better(double d1, const char *n1, double d2, const char *n2)
{
	if (n2 == NULL)
		return true;
	if (isnan(d1) != isnan(d2))
		return !isnan(d1);
	if (!isnan(d1) && d1 != d2)
		return d1 < d2;
	return strcmp(n1, n2) < 0;
}

/*
 * TryPreassigned takes the dealer the lead arrived with whenever it exists,
 * active or not, selling the lead's brand or not (SPEC section 2, rule 1);
 * brand_ok tells whether the lead has a known brand.
 */
static bool
TryPreassigned(Routing *r, bool brand_ok)
{
	const char *dealer = r->request->dealer_number;
	Datum values[3];
	char nulls[3] = { ' ', ' ', ' ' };
	bool active;
	bool sells;
	double m;

	bool exists;

	if (dealer == NULL || dealer[0] == '\0')
		return false;
	if (r->cache != NULL)
	{
		int di = RoutingCacheDealer(r->cache, dealer);

		exists = di >= 0;
		if (exists)
		{
			active = r->cache->dealers[di].active;
			sells = RoutingCacheSells(&r->cache->dealers[di], r->brand);
			m = r->place.has_centroid ? RoutingCacheDistance(r->cache, di, r->place.centroid) : NAN;
		}
	}
	else
	{
		values[0] = CStringGetTextDatum(dealer);
		values[1] = CStringGetTextDatum(r->request->brand_code ? r->request->brand_code : "");
		values[2] = r->place.centroid;
		if (!r->place.has_centroid)
			nulls[2] = 'n';
		if (SPI_execute_plan(PlanFor(PLAN_DEALER), values, nulls, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "dealer lookup failed");
		exists = SPI_processed == 1;
		if (exists)
		{
			active = DatumGetBool(
				SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &(bool){ 0 }));
			sells = DatumGetBool(
				SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &(bool){ 0 }));
			m = GetFloat(3);
		}
	}
	if (!exists)
	{
		AddStep(r, "Pre-assigned", NULL, NAN,
				"pre-assigned dealer \"%s\" does not exist: routed by the rules instead", dealer);
		return false;
	}
	if (IsExcluded(r, dealer))
	{
		AddStep(r, "Pre-assigned", dealer, m,
				"pre-assigned dealer %s already held the lead: routed by the rules instead",
				dealer);
		return false;
	}
	AddStep(r, "Pre-assigned", dealer, m,
			"chosen: the lead arrived pre-assigned to dealer %s%s; every other step skipped",
			dealer, PreassignedNote(r, active, sells, brand_ok));
	Decide(r, MATCH_PREASSIGNED, dealer, m);
	return true;
}

/*
 * PreassignedNote says what a pre-assigned dealer lacks that the rules
 * would ask of a candidate ("" when nothing): a pre-assigned lead keeps its
 * dealer all the same (a historical import, a "Contact This Dealer" form).
 */
static const char *
PreassignedNote(Routing *r, bool active, bool sells, bool brand_ok)
{
	const char *brand = r->request->brand_code;
	const char *why;

	if (!brand_ok)
		why = (brand == NULL || brand[0] == '\0')
				  ? "the lead has no brand"
				  : psprintf("brand %s is not in aimroute.brands", brand);
	else if (!sells)
		why = psprintf("the dealer does not sell brand %s", brand);
	else
		why = NULL;
	if (active && why == NULL)
		return "";
	return psprintf(" (kept although %s%s%s)", active ? "" : "the dealer is not active for sales",
					!active && why ? " and " : "", why ? why : "");
}

/*
 * NearestByIndex walks a KNN-ordered query (columns: dealer_number, sphere
 * metres, spheroid metres) and finds the closest dealer on the spheroid
 * within limit_m, naming the first candidates in the explanation.
 */
static bool
NearestByIndex(Routing *r, enum RoutingPlan which, Datum *values, const char *nulls, double limit_m,
			   const char *rule, char **best, double *best_m)
{
	Portal portal = SPI_cursor_open(NULL, PlanFor(which), values, nulls, true);
	int considered = 0;
	int beyond = 0;
	bool done = false;

	*best = NULL;
	*best_m = NAN;
	while (!done)
	{
		SPI_cursor_fetch(portal, true, FETCH_ROWS);
		if (SPI_processed == 0)
			break;
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple row = SPI_tuptable->vals[i];
			TupleDesc desc = SPI_tuptable->tupdesc;
			bool null;
			char *dealer = TextDatumGetCString(SPI_getbinval(row, desc, 1, &null));
			double sphere = DatumGetFloat8(SPI_getbinval(row, desc, 2, &null));
			double spheroid = DatumGetFloat8(SPI_getbinval(row, desc, 3, &null));
			double bound = *best ? Min(*best_m, limit_m) : limit_m;

			if (sphere * (1.0 - SPHERE_MARGIN) > bound)
			{
				done = true;
				break;
			}
			if (spheroid > limit_m)
			{
				beyond++;
				continue;
			}
			considered++;
			if (considered <= LOG_CANDIDATES)
				AddStep(r, rule, dealer, spheroid, "candidate at %s", MilesText(spheroid));
			if (Better(spheroid, dealer, *best_m, *best))
			{
				*best = Keep(r, dealer);
				*best_m = spheroid;
			}
		}
	}
	SPI_cursor_close(portal);
	if (considered > LOG_CANDIDATES)
		AddStep(r, rule, NULL, NAN, "%d more candidates no closer", considered - LOG_CANDIDATES);
	(void) beyond;
	return *best != NULL;
}

/*
 * CacheFilter fills the in-memory candidate condition: an active dealer of
 * the lead's country selling its brand, not excluded, and, when given,
 * assigned a product, with a product in stock, of a group.
 */
static void
CacheFilter(Routing *r, CandidateFilter *f, const char *product, const char *stock,
			const char *group)
{
	int p;

	memset(f, 0, sizeof(*f));
	f->country = r->place.country;
	f->brand = r->brand;
	f->excluded = r->excluded_index;
	f->nexcluded = r->nexcluded_index;
	f->product = FILTER_ANY;
	f->stock = FILTER_ANY;
	if (product != NULL)
	{
		p = RoutingCacheProduct(r->cache, product);
		f->product = p >= 0 ? p : FILTER_NOTHING;
	}
	if (stock != NULL)
	{
		p = RoutingCacheProduct(r->cache, stock);
		f->stock = p >= 0 ? p : FILTER_NOTHING;
	}
	f->group = group;
}

/*
 * NearestCached is NearestByIndex on the in-memory copy: the same walk in
 * sphere order, the same stop rule and the same explanation.
 */
static bool
NearestCached(Routing *r, const CandidateFilter *f, double limit_m, const char *rule, char **best,
			  double *best_m)
{
	Candidate *cand;
	int n = RoutingCacheNearest(r->cache, f, r->place.xyz, r->place.centroid, limit_m, &cand);
	int considered = 0;

	*best = NULL;
	*best_m = NAN;
	for (int i = 0; i < n; i++)
	{
		const char *dealer = r->cache->dealers[cand[i].dealer].number;
		double bound = *best ? Min(*best_m, limit_m) : limit_m;
		double spheroid;

		if (cand[i].sphere_m * (1.0 - SPHERE_MARGIN) > bound)
			break;
		spheroid = RoutingCacheDistance(r->cache, cand[i].dealer, r->place.centroid);
		if (spheroid > limit_m)
			continue;
		considered++;
		if (considered <= LOG_CANDIDATES)
			AddStep(r, rule, dealer, spheroid, "candidate at %s", MilesText(spheroid));
		if (Better(spheroid, dealer, *best_m, *best))
		{
			*best = Keep(r, dealer);
			*best_m = spheroid;
		}
	}
	if (considered > LOG_CANDIDATES)
		AddStep(r, rule, NULL, NAN, "%d more candidates no closer", considered - LOG_CANDIDATES);
	return *best != NULL;
}

/*
 * TryDealerGroup takes the closest dealer of the lead's group in its
 * country.
 */
static bool
TryDealerGroup(Routing *r)
{
	const char *group = r->request->dealer_group;
	Datum values[6];
	char nulls[6] = { ' ', ' ', ' ', ' ', ' ', ' ' };
	char *best = NULL;
	double best_m = NAN;

	if (group == NULL || group[0] == '\0')
		return false;
	if (r->place.country == NULL)
	{
		AddStep(r, "Dealer Group", NULL, NAN,
				"dealer group %s: no country, so no dealer of the group can be chosen", group);
		return false;
	}
	values[0] = r->place.centroid;
	values[1] = CStringGetTextDatum(group);
	values[2] = CStringGetTextDatum(r->place.country);
	values[3] = CStringGetTextDatum(r->request->brand_code);
	values[4] = r->excluded;
	values[5] = (Datum) 0; /* the product filter is for territory and radius only */
	nulls[5] = 'n';
	if (r->cache != NULL)
	{
		CandidateFilter f;

		CacheFilter(r, &f, NULL, NULL, group);
		if (r->place.has_centroid)
			NearestCached(r, &f, INFINITY, "Dealer Group", &best, &best_m);
		else
		{
			int di = RoutingCacheFirstOfGroup(r->cache, &f);

			if (di >= 0)
			{
				best = Keep(r, r->cache->dealers[di].number);
				AddStep(r, "Dealer Group", best, NAN,
						"candidate: no centre point to measure from, so the lowest dealer number "
						"of the group");
			}
		}
	}
	else if (r->place.has_centroid)
		NearestByIndex(r, PLAN_GROUP_NEAR, values, nulls, INFINITY, "Dealer Group", &best, &best_m);
	else
	{
		nulls[0] = 'n';
		if (SPI_execute_plan(PlanFor(PLAN_GROUP_ANY), values, nulls, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "dealer group lookup failed");
		if (SPI_processed == 1)
		{
			best = Keep(r, GetText(1, NULL));
			AddStep(r, "Dealer Group", best, NAN,
					"candidate: no centre point to measure from, so the lowest dealer number of "
					"the group");
		}
	}
	if (best == NULL)
	{
		AddStep(r, "Dealer Group", NULL, NAN, "no active dealer of group %s in %s sells brand %s%s",
				group, r->place.country, r->request->brand_code,
				r->request->nexcluded > 0 ? " and has not held the lead" : "");
		return false;
	}
	AddStep(r, "Dealer Group", best, best_m, "chosen: the closest dealer of group %s in %s", group,
			r->place.country);
	Decide(r, MATCH_DEALER_GROUP, best, best_m);
	return true;
}

/*
 * TryInventory takes the closest dealer within the radius with the lead's
 * product in stock.
 */
static bool
TryInventory(Routing *r)
{
	const char *product = r->request->product_code;
	Datum values[6];
	char nulls[6] = { ' ', ' ', ' ', ' ', ' ', ' ' };
	char *best;
	double best_m;
	bool found;

	if (!r->settings.inventory_routing)
		return false;
	if (product == NULL || product[0] == '\0')
	{
		AddStep(r, "Inventory", NULL, NAN, "inventory routing is on, but the lead has no product");
		return false;
	}
	if (!r->place.has_centroid)
	{
		AddStep(r, "Inventory", NULL, NAN,
				"inventory routing is on, but the lead has no centre point to measure from");
		return false;
	}
	values[0] = r->place.centroid;
	values[1] = CStringGetTextDatum(r->place.country);
	values[2] = CStringGetTextDatum(r->request->brand_code);
	values[3] = r->excluded;
	values[4] = (Datum) 0;
	nulls[4] = 'n'; /* the stock itself is the product filter */
	values[5] = CStringGetTextDatum(product);
	if (r->cache != NULL)
	{
		CandidateFilter f;

		CacheFilter(r, &f, NULL, product, NULL);
		found = NearestCached(r, &f, r->settings.radius_m, "Inventory", &best, &best_m);
	}
	else
		found = NearestByIndex(r, PLAN_INVENTORY, values, nulls, r->settings.radius_m, "Inventory",
							   &best, &best_m);
	if (!found)
	{
		AddStep(r, "Inventory", NULL, NAN, "no dealer of %s within %s has product %s in stock",
				r->place.country, MilesText(r->settings.radius_m), product);
		return false;
	}
	AddStep(r, "Inventory", best, best_m,
			"chosen: the closest dealer within %s with product %s in stock",
			MilesText(r->settings.radius_m), product);
	Decide(r, MATCH_INVENTORY, best, best_m);
	return true;
}

/*
 * TryTerritory takes the closest dealer holding a territory that contains
 * the lead.
 */
static bool
TryTerritory(Routing *r)
{
	LeadPlace *p = &r->place;
	Datum values[8];
	char nulls[8] = { ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ' };
	char *best = NULL;
	double best_m = NAN;
	uint64 n;
	int foreign = 0;

	if (r->cache != NULL)
		return TerritoryCached(r);
	values[0] = p->centroid;
	if (!p->has_centroid)
		nulls[0] = 'n';
	values[1] = CStringGetTextDatum(p->country);
	values[2] = p->postal_code ? CStringGetTextDatum(p->postal_code) : (Datum) 0;
	if (p->postal_code == NULL)
		nulls[2] = 'n';
	values[3] = p->county_code ? CStringGetTextDatum(p->county_code) : (Datum) 0;
	if (p->county_code == NULL)
		nulls[3] = 'n';
	values[4] = p->state_code ? CStringGetTextDatum(p->state_code) : (Datum) 0;
	if (p->state_code == NULL)
		nulls[4] = 'n';
	values[5] = CStringGetTextDatum(r->request->brand_code);
	values[6] = r->excluded;
	values[7] = r->product_filter ? CStringGetTextDatum(r->product_filter) : (Datum) 0;
	if (r->product_filter == NULL)
		nulls[7] = 'n';
	if (SPI_execute_plan(PlanFor(PLAN_TERRITORY), values, nulls, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "territory lookup failed");
	n = 0;
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple row = SPI_tuptable->vals[i];
		TupleDesc desc = SPI_tuptable->tupdesc;
		bool null;
		char *dealer = TextDatumGetCString(SPI_getbinval(row, desc, 1, &null));
		Datum dm = SPI_getbinval(row, desc, 2, &null);
		double m = null ? NAN : DatumGetFloat8(dm);
		char *held = TextDatumGetCString(SPI_getbinval(row, desc, 3, &null));

		if (!DatumGetBool(SPI_getbinval(row, desc, 4, &null)))
		{
			foreign++;
			continue;
		}
		if (n++ < LOG_CANDIDATES)
			AddStep(r, "Territory", dealer, m, "candidate: holds %s", held);
		if (Better(m, dealer, best_m, best))
		{
			best = Keep(r, dealer);
			best_m = m;
		}
	}
	if (n > LOG_CANDIDATES)
		AddStep(r, "Territory", NULL, NAN, "%d more territory holders", (int) (n - LOG_CANDIDATES));
	ForeignHoldersStep(r, foreign);
	return TerritoryDecide(r, best, best_m, n);
}

/*
 * ForeignHoldersStep explains holders left out because the dealer is not
 * in the lead's country: a territory never crosses a country line, even
 * when its dealer moved to another country after the territory was made.
 */
static void
ForeignHoldersStep(Routing *r, int foreign)
{
	if (foreign > 0)
		AddStep(r, "Territory", NULL, NAN,
				"%d territory %s in %s not considered: %s in another country", foreign,
				foreign == 1 ? "holder" : "holders", r->place.country,
				foreign == 1 ? "its dealer is" : "their dealers are");
}

/*
 * TerritoryDecide explains the territory step's outcome.
 */
static bool
TerritoryDecide(Routing *r, char *best, double best_m, uint64 n)
{
	LeadPlace *p = &r->place;

	if (best == NULL)
	{
		AddStep(r, "Territory", NULL, NAN,
				"no active dealer selling brand %s holds a territory containing %s%s%s%s%s%s",
				r->request->brand_code, p->country, p->postal_code ? " postal code " : "",
				p->postal_code ? p->postal_code : "", p->county_code ? ", county " : "",
				p->county_code ? p->county_code : "",
				p->state_code ? psprintf(", state %s", p->state_code) : "");
		return false;
	}
	AddStep(r, "Territory", best, best_m,
			n == 1 ? "chosen: the only territory holder"
				   : (isnan(best_m) ? "chosen: no distance to compare, so the lowest dealer number"
									: "chosen: the closest territory holder"));
	Decide(r, MATCH_TERRITORY, best, best_m);
	return true;
}

/*
 * CompareHolders orders territory holders by distance (none last), then
 * dealer number: Better's order.
 */
static int
CompareHolders(const void *a, const void *b)
{
	const Candidate *x = a;
	const Candidate *y = b;

	if (isnan(x->sphere_m) != isnan(y->sphere_m))
		return isnan(x->sphere_m) ? 1 : -1;
	if (!isnan(x->sphere_m) && x->sphere_m != y->sphere_m)
		return x->sphere_m < y->sphere_m ? -1 : 1;
	return x->dealer - y->dealer;
}

/*
 * HeldText says which territories a dealer holds around the lead, in the
 * order of the SQL path: by kind, Brand Territories before all-brands ones.
 */
static char *
HeldText(RoutingCache *c, CachedTerritory **ts, int nt, int dealer)
{
	static const char *const kinds[] = { "", "postal", "county", "state", "country" };
	StringInfoData buf;

	initStringInfo(&buf);
	for (int kind = 1; kind <= 4; kind++)
		for (int pass = 0; pass < 2; pass++)
			for (int i = 0; i < nt; i++)
			{
				CachedTerritory *t = ts[i];

				if (t->dealer != dealer || t->kind != kind || (t->brand == -1) != (pass == 1))
					continue;
				appendStringInfo(&buf, "%s%s %s", buf.len > 0 ? ", " : "", kinds[kind],
								 kind == 4 ? t->country : t->code);
				if (t->brand != -1)
					appendStringInfo(&buf, " (brand %s)", c->brand_codes[t->brand]);
			}
	return buf.data;
}

/*
 * TerritoryCached is the territory step on the in-memory copy: every
 * holder is a candidate, the closest on the spheroid wins.  Holders are
 * measured closest first on the sphere until none left can win.
 */
static bool
TerritoryCached(Routing *r)
{
	LeadPlace *p = &r->place;
	CachedTerritory **ts;
	int nt = RoutingCacheTerritories(r->cache, p->country, p->postal_code, p->county_code,
									 p->state_code, r->brand, &ts);
	Candidate *holders = palloc(sizeof(Candidate) * Max(nt, 1));
	CandidateFilter f;
	int n = 0;
	int measured;
	double closest[LOG_CANDIDATES];
	int nclosest = 0;
	int foreign = 0;
	char *best = NULL;
	double best_m = NAN;

	CacheFilter(r, &f, r->product_filter, NULL, NULL);
	f.country = NULL; /* checked below, to explain holders of another country */
	for (int i = 0; i < nt; i++)
	{
		int dealer = ts[i]->dealer;
		bool seen = false;

		/* A dealer holding several of these territories is looked at once. */
		for (int j = 0; j < i && !seen; j++)
			seen = ts[j]->dealer == dealer;
		if (seen || !RoutingCacheAccepts(r->cache, &f, dealer))
			continue;
		if (strcmp(r->cache->dealers[dealer].country, p->country) != 0)
		{
			foreign++;
			continue;
		}
		holders[n].dealer = dealer;
		holders[n].sphere_m = p->has_centroid && r->cache->dealers[dealer].has_location
								  ? SphereMeters(p->xyz, r->cache->dealers[dealer].xyz)
								  : NAN;
		n++;
	}
	qsort(holders, n, sizeof(Candidate), CompareHolders);

	/*
	 * Measure holders closest first on the sphere until none left can be
	 * among the LOG_CANDIDATES closest on the spheroid, the ones explained
	 * (the first of them wins).  closest[] holds the smallest distances
	 * measured so far, in order.
	 */
	for (measured = 0; measured < n; measured++)
	{
		Candidate *h = &holders[measured];

		if (nclosest == LOG_CANDIDATES &&
			(isnan(h->sphere_m) || h->sphere_m * (1.0 - SPHERE_MARGIN) > closest[nclosest - 1]))
			break;
		if (!isnan(h->sphere_m))
		{
			double m = RoutingCacheDistance(r->cache, h->dealer, p->centroid);
			int at = -1;

			if (nclosest < LOG_CANDIDATES)
				at = nclosest++;
			else if (m < closest[LOG_CANDIDATES - 1])
				at = LOG_CANDIDATES - 1;
			for (; at > 0 && closest[at - 1] > m; at--)
				closest[at] = closest[at - 1];
			if (at >= 0)
				closest[at] = m;
			h->sphere_m = m; /* from here on, the spheroid distance */
		}
	}
	qsort(holders, measured, sizeof(Candidate), CompareHolders);
	for (int i = 0; i < measured && i < LOG_CANDIDATES; i++)
		AddStep(r, "Territory", r->cache->dealers[holders[i].dealer].number, holders[i].sphere_m,
				"candidate: holds %s", HeldText(r->cache, ts, nt, holders[i].dealer));
	if (n > 0)
	{
		best = Keep(r, r->cache->dealers[holders[0].dealer].number);
		best_m = holders[0].sphere_m;
	}
	if (n > LOG_CANDIDATES)
		AddStep(r, "Territory", NULL, NAN, "%d more territory holders", n - LOG_CANDIDATES);
	ForeignHoldersStep(r, foreign);
	return TerritoryDecide(r, best, best_m, n);
}

/*
 * TryRadius takes the closest dealer of the lead's country within the
 * radius.
 */
static bool
TryRadius(Routing *r)
{
	Datum values[5];
	char nulls[5] = { ' ', ' ', ' ', ' ', ' ' };
	char *best;
	double best_m;
	bool listed = false;
	bool found;

	if (!r->settings.radius_enabled)
	{
		AddStep(r, "Radius", NULL, NAN, "radius routing is off (settings.radius_enabled)");
		return false;
	}
	for (int i = 0; i < r->settings.nradius_countries; i++)
		if (strcmp(r->settings.radius_countries[i], r->place.country) == 0)
			listed = true;
	if (!listed)
	{
		AddStep(r, "Radius", NULL, NAN,
				"radius routing does not apply in %s: it is not in settings.radius_countries",
				r->place.country);
		return false;
	}
	if (!r->place.has_centroid)
	{
		AddStep(r, "Radius", NULL, NAN, "no centre point for the lead's postal code: no radius");
		return false;
	}
	values[0] = r->place.centroid;
	values[1] = CStringGetTextDatum(r->place.country);
	values[2] = CStringGetTextDatum(r->request->brand_code);
	values[3] = r->excluded;
	values[4] = r->product_filter ? CStringGetTextDatum(r->product_filter) : (Datum) 0;
	if (r->product_filter == NULL)
		nulls[4] = 'n';
	if (r->cache != NULL)
	{
		CandidateFilter f;

		CacheFilter(r, &f, r->product_filter, NULL, NULL);
		found = NearestCached(r, &f, r->settings.radius_m, "Radius", &best, &best_m);
	}
	else
		found = NearestByIndex(r, PLAN_RADIUS, values, nulls, r->settings.radius_m, "Radius", &best,
							   &best_m);
	if (!found)
	{
		AddStep(r, "Radius", NULL, NAN, "no active dealer of %s within %s sells brand %s%s",
				r->place.country, MilesText(r->settings.radius_m), r->request->brand_code,
				r->product_filter ? psprintf(" with product %s", r->product_filter) : "");
		return false;
	}
	AddStep(r, "Radius", best, best_m, "chosen: the closest dealer of %s within %s",
			r->place.country, MilesText(r->settings.radius_m));
	Decide(r, MATCH_RADIUS, best, best_m);
	return true;
}

/*
 * UseDefault gives the lead to the default dealer.
 */
static void
UseDefault(Routing *r)
{
	const char *dealer = r->settings.default_dealer;
	Datum values[3];
	char nulls[3] = { ' ', ' ', ' ' };
	double m = NAN;

	if (dealer == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("no default dealer is configured"),
				 errdetail("A lead that no rule places goes to the default dealer."),
				 errhint("UPDATE aimroute.settings SET default_dealer_number = '...' (a dealer of "
						 "aimroute.dealers).")));
	if (r->cache != NULL)
	{
		int di = RoutingCacheDealer(r->cache, dealer);

		if (di >= 0 && r->place.has_centroid)
			m = RoutingCacheDistance(r->cache, di, r->place.centroid);
	}
	else
	{
		values[0] = CStringGetTextDatum(dealer);
		values[1] = CStringGetTextDatum("");
		values[2] = r->place.centroid;
		if (!r->place.has_centroid)
			nulls[2] = 'n';
		if (SPI_execute_plan(PlanFor(PLAN_DEALER), values, nulls, true, 1) == SPI_OK_SELECT &&
			SPI_processed == 1)
			m = GetFloat(3);
	}
	AddStep(r, "Default", dealer, m, "chosen: no rule placed the lead, so the default dealer %s",
			dealer);
	Decide(r, MATCH_DEFAULT, dealer, m);
}

/*
 * RouteLead decides where a lead goes.  The result and its explanation are
 * allocated in the caller's memory context.
 */
void
RouteLead(const RouteRequest *request, RouteResult *result)
{
	Routing r;
	Datum *excluded;
	bool brand_ok;
	int pinned = 0;

	memset(&r, 0, sizeof(r));
	r.brand = -1; /* no known brand until CheckBrand finds it */
	memset(result, 0, sizeof(*result));
	result->distance_m = NAN;
	r.request = request;
	r.result = result;
	r.result_context = CurrentMemoryContext;

	excluded = palloc(sizeof(Datum) * Max(request->nexcluded, 1));
	for (int i = 0; i < request->nexcluded; i++)
		excluded[i] = CStringGetTextDatum(request->excluded[i]);
	r.excluded = PointerGetDatum(
		construct_array(excluded, request->nexcluded, TEXTOID, -1, false, TYPALIGN_INT));

	/*
	 * The in-memory path works in a scratch context, reset by the next
	 * routing; the SQL path in SPI's, freed when it disconnects.
	 */
	r.cache = RoutingCacheCurrent();
	if (r.cache != NULL)
	{
		if (scratch == NULL)
			scratch =
				AllocSetContextCreate(TopMemoryContext, "aimroute routing", ALLOCSET_DEFAULT_SIZES);
		MemoryContextReset(scratch);
		MemoryContextSwitchTo(scratch);
		r.settings = r.cache->settings;
		r.excluded_index = palloc(sizeof(int) * Max(request->nexcluded, 1));
		for (int i = 0; i < request->nexcluded; i++)
		{
			int di = RoutingCacheDealer(r.cache, request->excluded[i]);

			if (di >= 0)
				r.excluded_index[r.nexcluded_index++] = di;
		}
	}
	else
	{
		pinned = SpiConnectPinned();
		EnsurePlans();
		LoadSettings(&r);
	}
	if (r.settings.product_routing && request->product_code && request->product_code[0])
		r.product_filter = request->product_code;
	LocateLead(&r);
	brand_ok = CheckBrand(&r);
	if (r.settings.product_routing && r.product_filter == NULL && brand_ok)
		AddStep(&r, "Input", NULL, NAN,
				"product routing is on, but the lead has no product: no product filter");

	if (TryPreassigned(&r, brand_ok))
		;
	else if (!brand_ok || r.place.country == NULL)
		UseDefault(&r);
	else if (TryDealerGroup(&r) || TryInventory(&r) || TryTerritory(&r) || TryRadius(&r))
		;
	else
		UseDefault(&r);

	result->reroute = r.settings.reroute;
	result->default_dealer = r.settings.default_dealer != NULL && result->dealer_number != NULL &&
							 strcmp(result->dealer_number, r.settings.default_dealer) == 0;
	if (r.cache != NULL)
		MemoryContextSwitchTo(r.result_context);
	else
		SpiFinishPinned(pinned);
}

/*
 * RouteStepsToArray builds an aimroute.routing_step[] datum of steps;
 * array_type is the array type's OID.
 */
Datum
RouteStepsToArray(List *steps, Oid array_type)
{
	static Oid known_array_type = InvalidOid;
	static Oid elem_type;
	static int16 typlen;
	static bool typbyval;
	static char typalign;
	TupleDesc desc;
	int n = list_length(steps);
	Datum *elems = palloc(sizeof(Datum) * Max(n, 1));
	ListCell *lc;
	int i = 0;

	if (array_type != known_array_type)
	{
		elem_type = get_element_type(array_type);
		get_typlenbyvalalign(elem_type, &typlen, &typbyval, &typalign);
		known_array_type = array_type;
	}
	/* The type cache's descriptor, current even after an ALTER TYPE. */
	desc = lookup_rowtype_tupdesc(elem_type, -1);
	foreach (lc, steps)
	{
		RouteStep *s = lfirst(lc);
		Datum values[5];
		bool nulls[5] = { false, false, false, false, false };

		values[0] = Int32GetDatum(s->step);
		values[1] = CStringGetTextDatum(s->rule);
		values[2] = CStringGetTextDatum(s->message);
		values[3] = s->dealer_number ? CStringGetTextDatum(s->dealer_number) : (Datum) 0;
		nulls[3] = s->dealer_number == NULL;
		values[4] = Float8GetDatum(s->distance_m / METERS_PER_MILE);
		nulls[4] = isnan(s->distance_m);
		elems[i++] = HeapTupleGetDatum(heap_form_tuple(desc, values, nulls));
	}
	ReleaseTupleDesc(desc);
	return PointerGetDatum(construct_array(elems, n, elem_type, typlen, typbyval, typalign));
}
