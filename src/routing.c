/*
 * routing.c
 *		The routing rules: which dealer a lead goes to, and why.
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
 * lower dealer number (byte order), or with settings.tie_break =
 * 'round_robin' to the tied dealer whose turn it is (BreakTie, ties.c):
 * dealers within TIE_TOLERANCE_M of the closest are tied.  A dealer a rule
 * chooses that has reached its daily lead cap (caps.c) is skipped like an
 * inactive one: the rules run again without it (CapReached).
 *
 * The rules read the configuration from the model (model.c): this
 * session's in-memory copy of it, as the lead's own snapshot sees it.  A
 * nearest-dealer search takes the model's candidates closest first on the
 * sphere and measures each on the spheroid.  The spheroid and sphere
 * distances of one pair differ by less than SPHERE_MARGIN, so once a
 * candidate's sphere distance, less the margin, exceeds the best spheroid
 * distance found, no later one can beat it and the walk stops: the answer
 * is exact without measuring every dealer.
 *
 * Every step appends lines to the explanation (RouteStep), including why a
 * step did not apply.  Bad lead data never raises: it leads to the default
 * dealer with the reason logged.  The one error is a missing default dealer.
 */
#include "postgres.h"

#include <math.h>

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"

#include "caps.h"
#include "country.h"
#include "drive.h"
#include "model.h"
#include "postal.h"
#include "routing.h"
#include "ties.h"

#define LOG_CANDIDATES		 5	 /* candidates named in the explanation per step */
#define DRIVE_FIRST_FEW		 4	 /* Drive Distance: candidates measured in the first Dijkstra run */
#define DRIVE_LOG_CANDIDATES 10	 /* Drive Distance: candidates named in the explanation */
#define TIE_TOLERANCE_M		 1.0 /* round robin: dealers this close to the closest are tied */

const char *const MatchKindLabels[] = {
	"Territory",	"Radius",		"Drive Distance", "Default",  "Reassigned",
	"Pre-assigned", "Dealer Group", "Inventory",	  "Re-Route",
};

/* Where the lead is, as far as its inputs tell. */
typedef struct LeadPlace
{
	const char *country;
	char *postal_code;
	bool postal_known;
	const char *place_name;
	const char *state_code;
	char *county_code; /* "MI/Mackinac" */
	Datum centroid;
	bool has_centroid;
	double xyz[3]; /* the centroid on the unit sphere */
} LeadPlace;

/* The state of one routing: inputs, the explanation so far, the answer. */
typedef struct Routing
{
	const RouteRequest *request;
	RouteResult *result;
	MemoryContext result_context;
	Model *model;
	const RoutingSettings *settings;
	LeadPlace place;
	int brand;	   /* the brand's index in the model, -1 when unknown */
	int *excluded; /* the excluded dealers' indexes */
	int nexcluded;
	const char *product_filter; /* NULL: no product filter */
	TimestampTz at;				/* the instant whose configuration applies */
	int nsteps;
	const char *turn; /* a new lead's round robin winner, its turn not counted yet */
} Routing;

/* A territory holder: a dealer and its distance, NaN when unknown. */
typedef struct Holder
{
	int dealer;
	double m;
} Holder;

static MemoryContext scratch = NULL; /* a routing's working memory */

static void StartRouting(Routing *r, const RouteRequest *request, RouteResult *result);
static void LocateLead(Routing *r);
static void FindPlace(Routing *r);
static void ExplainPlace(Routing *r);
static bool CheckBrand(Routing *r);
static bool TryPreassigned(Routing *r, bool brand_ok);
static const char *PreassignedNote(Routing *r, bool active, bool sells, bool brand_ok);
static bool TryDealerGroup(Routing *r);
static bool TryInventory(Routing *r);
static bool TryTerritory(Routing *r);
static int GatherHolders(Routing *r, const ModelTerritory **ts, int nt, Holder *holders,
						 int *foreign);
static int MeasureClosestHolders(Routing *r, Holder *holders, int n);
static char *HeldText(Model *m, const ModelTerritory **ts, int nt, int dealer);
static int TerritoriesValidAt(Routing *r, const ModelTerritory **ts, int nt);
static char *TerritoryText(Model *m, const ModelTerritory *t);
static char *PeriodText(TimestampTz from, TimestampTz to);
static char *TimeText(TimestampTz t);
static void ForeignHoldersStep(Routing *r, int foreign);
static bool TerritoryDecide(Routing *r, const char *best, double best_m, int n);
static bool TryRadius(Routing *r);
static bool RadiusApplies(Routing *r);
static bool TryDriveDistance(Routing *r, const CandidateFilter *f);
static void ExplainOffRoad(Routing *r, const DriveLead *lead, const DriveLeg *leg, int dealer,
						   double straight);
static void UseDefault(Routing *r);
static bool CapReached(Routing *r);
static void Filter(Routing *r, CandidateFilter *f, const char *product, const char *stock,
				   const char *group);
static bool Nearest(Routing *r, const CandidateFilter *f, double limit_m, const char *rule,
					char **best, double *best_m);
static bool Better(double d1, const char *n1, double d2, const char *n2);
static int BreakTie(Routing *r, const char *rule, const Holder *c, int n);
static char *TieReason(Routing *r, const char *winner, const TieTurn *w, const char *next,
					   const TieTurn *t);
static bool IsExcluded(Routing *r, const char *dealer);
static char *Keep(Routing *r, const char *s);
static void AddStep(Routing *r, const char *rule, const char *dealer, double distance_m,
					const char *fmt, ...) pg_attribute_printf(5, 6);
static void Decide(Routing *r, MatchKind match, const char *dealer, double distance_m);
static char *MilesText(double m);

/*
 * RouteLead decides where a lead goes.  The result and its explanation are
 * allocated in the caller's memory context.
 */
void
RouteLead(const RouteRequest *request, RouteResult *result)
{
	Routing r;
	bool brand_ok;

	StartRouting(&r, request, result);
	LocateLead(&r);
	brand_ok = CheckBrand(&r);
	if (r.settings->product_routing && r.product_filter == NULL && brand_ok)
		AddStep(&r, "Input", NULL, NAN,
				"product routing is on, but the lead has no product: no product filter");

	if (TryPreassigned(&r, brand_ok))
		;
	else if (!brand_ok || r.place.country == NULL)
		UseDefault(&r);
	else
	{
		bool placed;

		/* A dealer at its daily cap is skipped like an inactive one: the rules again without it. */
		while ((placed =
					TryDealerGroup(&r) || TryInventory(&r) || TryTerritory(&r) || TryRadius(&r)) &&
			   CapReached(&r))
			r.turn = NULL;
		if (!placed)
			UseDefault(&r);
		/* Round robin: the turn counts for the dealer that got the lead, not one a cap skipped. */
		else if (r.turn != NULL && strcmp(r.turn, result->dealer_number) == 0)
			TieTake(ModelBrandCode(r.model, r.brand), r.turn);
	}

	result->reroute = r.settings->reroute;
	result->default_dealer = r.settings->default_dealer != NULL && result->dealer_number != NULL &&
							 strcmp(result->dealer_number, r.settings->default_dealer) == 0;
	MemoryContextSwitchTo(r.result_context);
}

/*
 * StartRouting brings the model up to date and sets up one routing, which
 * works in a scratch context reset by the next one.
 */
static void
StartRouting(Routing *r, const RouteRequest *request, RouteResult *result)
{
	memset(r, 0, sizeof(*r));
	memset(result, 0, sizeof(*result));
	result->distance_m = NAN;
	r->request = request;
	r->result = result;
	r->result_context = CurrentMemoryContext;
	r->brand = -1; /* no known brand until CheckBrand finds it */
	r->model = ModelCurrent();
	r->settings = &r->model->settings;
	r->at = request->has_at ? request->at : GetCurrentTransactionStartTimestamp();

	if (scratch == NULL)
		scratch =
			AllocSetContextCreate(TopMemoryContext, "aimroute routing", ALLOCSET_DEFAULT_SIZES);
	MemoryContextReset(scratch);
	MemoryContextSwitchTo(scratch);
	r->excluded = palloc(sizeof(int) * Max(request->nexcluded, 1));
	for (int i = 0; i < request->nexcluded; i++)
	{
		int di = ModelFindDealer(r->model, request->excluded[i]);

		if (di >= 0)
			r->excluded[r->nexcluded++] = di;
	}
	if (r->settings->product_routing && request->product_code && request->product_code[0])
		r->product_filter = request->product_code;
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
		AddStep(
			r, "Input", NULL, NAN,
			q->country && q->country[0]
				? "country \"%s\" is not an ISO 3166-1 country: no postal code lookup, no dealer in its country"
				: "no country%s: no postal code lookup, no dealer in its country",
			q->country ? q->country : "");
		return;
	}
	FindPlace(r);
	r->result->postal_code = Keep(r, p->postal_code);
	ExplainPlace(r);

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
 * FindPlace finds the lead's postal code in the model.
 */
static void
FindPlace(Routing *r)
{
	const RouteRequest *q = r->request;
	LeadPlace *p = &r->place;
	char *lexical;
	Place place;

	if (q->postal_code == NULL)
		return;
	lexical = PostalNormalizeLexical(p->country, q->postal_code, strlen(q->postal_code));
	if (lexical == NULL)
		return;
	ModelPlace(r->model, p->country, lexical, &place);
	p->postal_code = pstrdup(place.code);
	if (!place.known)
		return;
	p->postal_known = true;
	p->place_name = place.place_name;
	p->state_code = place.state_code;
	if (place.county && place.state_code)
		p->county_code = psprintf("%s/%s", place.state_code, place.county);
	if (place.has_centroid)
	{
		p->has_centroid = true;
		p->centroid = place.centroid;
		memcpy(p->xyz, place.xyz, sizeof(p->xyz));
	}
}

/*
 * ExplainPlace says what the lead's postal code told.
 */
static void
ExplainPlace(Routing *r)
{
	LeadPlace *p = &r->place;

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
}

/*
 * CheckBrand explains the lead's brand; returns false when no dealer can
 * sell it (no brand, or an unknown one).
 */
static bool
CheckBrand(Routing *r)
{
	const char *brand = r->request->brand_code;

	if (brand == NULL || brand[0] == '\0')
	{
		AddStep(r, "Input", NULL, NAN, "no brand: no dealer can be chosen for it");
		return false;
	}
	r->brand = ModelFindBrand(r->model, brand);
	if (r->brand < 0)
	{
		AddStep(r, "Input", NULL, NAN, "brand %s is not in aimroute.brands: no dealer sells it",
				brand);
		return false;
	}
	AddStep(r, "Input", NULL, NAN, "brand %s (%s)%s%s%s", brand, ModelBrandName(r->model, r->brand),
			r->product_filter ? "; product routing: only dealers assigned product " : "",
			r->product_filter ? r->product_filter : "",
			r->product_filter && r->model->data->ndated_products > 0
				? psprintf(" at %s (the assignments valid then)", TimeText(r->at))
				: "");
	return true;
}

/*
 * Rule 1, Pre-assigned: the dealer the lead arrived with, whenever it
 * exists, active or not, selling the lead's brand or not; brand_ok tells
 * whether the lead has a known brand.
 */
static bool
TryPreassigned(Routing *r, bool brand_ok)
{
	const char *dealer = r->request->dealer_number;
	const ModelDealer *d;
	int di;
	double m;

	if (dealer == NULL || dealer[0] == '\0')
		return false;
	di = ModelFindDealer(r->model, dealer);
	if (di < 0)
	{
		AddStep(r, "Pre-assigned", NULL, NAN,
				"pre-assigned dealer \"%s\" does not exist: routed by the rules instead", dealer);
		return false;
	}
	d = ModelDealerAt(r->model, di);
	m = r->place.has_centroid ? ModelDistance(r->model, di, r->place.centroid) : NAN;
	if (IsExcluded(r, dealer))
	{
		AddStep(r, "Pre-assigned", dealer, m,
				"pre-assigned dealer %s already held the lead: routed by the rules instead",
				dealer);
		return false;
	}
	AddStep(r, "Pre-assigned", dealer, m,
			"chosen: the lead arrived pre-assigned to dealer %s%s; every other step skipped",
			dealer, PreassignedNote(r, d->active, ModelSells(r->model, d, r->brand), brand_ok));
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
 * Rule 2, Dealer Group: the closest dealer of the lead's group in its
 * country; without a centre point, the group's lowest dealer number.
 */
static bool
TryDealerGroup(Routing *r)
{
	const char *group = r->request->dealer_group;
	CandidateFilter f;
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
	Filter(r, &f, NULL, NULL, group); /* the product filter is for territory and radius only */
	if (r->place.has_centroid)
		Nearest(r, &f, INFINITY, "Dealer Group", &best, &best_m);
	else
	{
		int di = ModelFirstOfGroup(r->model, &f);

		if (di >= 0)
		{
			best = Keep(r, ModelDealerNumber(r->model, di));
			AddStep(
				r, "Dealer Group", best, NAN,
				"candidate: no centre point to measure from, so the lowest dealer number of the group");
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
 * Rule 3, Inventory: the closest dealer of the lead's country within the
 * radius with the lead's product in stock.
 */
static bool
TryInventory(Routing *r)
{
	const char *product = r->request->product_code;
	CandidateFilter f;
	char *best;
	double best_m;

	if (!r->settings->inventory_routing)
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
	Filter(r, &f, NULL, product, NULL); /* the stock itself is the product filter */
	if (!Nearest(r, &f, r->settings->radius_m, "Inventory", &best, &best_m))
	{
		AddStep(r, "Inventory", NULL, NAN, "no dealer of %s within %s has product %s in stock",
				r->place.country, MilesText(r->settings->radius_m), product);
		return false;
	}
	AddStep(r, "Inventory", best, best_m,
			"chosen: the closest dealer within %s with product %s in stock",
			MilesText(r->settings->radius_m), product);
	Decide(r, MATCH_INVENTORY, best, best_m);
	return true;
}

/*
 * Rule 4, Territory: every holder of a territory containing the lead is a
 * candidate, the closest on the spheroid wins (unknown distances last, then
 * the lower dealer number); a holder outside the lead's country never.
 */
static bool
TryTerritory(Routing *r)
{
	LeadPlace *p = &r->place;
	const ModelTerritory **ts;
	int nt = ModelTerritories(r->model, p->country, p->postal_code, p->county_code, p->state_code,
							  r->brand, &ts);
	Holder *holders;
	int foreign = 0;
	int n;
	int measured;
	int won = 0;

	if (r->model->data->dated_territories)
		nt = TerritoriesValidAt(r, ts, nt);
	holders = palloc(sizeof(Holder) * Max(nt, 1));
	n = GatherHolders(r, ts, nt, holders, &foreign);
	measured = MeasureClosestHolders(r, holders, n);

	for (int i = 0; i < measured && i < LOG_CANDIDATES; i++)
		AddStep(r, "Territory", ModelDealerNumber(r->model, holders[i].dealer), holders[i].m,
				"candidate: holds %s", HeldText(r->model, ts, nt, holders[i].dealer));
	if (n > LOG_CANDIDATES)
		AddStep(r, "Territory", NULL, NAN, "%d more territory holders", n - LOG_CANDIDATES);
	ForeignHoldersStep(r, foreign);
	if (n == 0)
		return TerritoryDecide(r, NULL, NAN, 0);
	if (r->settings->round_robin && measured > 1)
		won = BreakTie(r, "Territory", holders, measured);
	return TerritoryDecide(r, ModelDealerNumber(r->model, holders[won].dealer), holders[won].m, n);
}

/*
 * TerritoriesValidAt keeps the territories that apply at the lead's
 * instant, in order, and returns how many; the explanation names the ones
 * left out for their period.
 */
static int
TerritoriesValidAt(Routing *r, const ModelTerritory **ts, int nt)
{
	int kept = 0;
	int out = 0;

	for (int i = 0; i < nt; i++)
	{
		const ModelTerritory *t = ts[i];

		if (ModelTerritoryValidAt(t, r->at))
		{
			ts[kept++] = t;
			continue;
		}
		if (out++ < LOG_CANDIDATES)
			AddStep(r, "Territory", ModelDealerNumber(r->model, t->dealer), NAN,
					"not considered: holds %s %s, but not at %s", TerritoryText(r->model, t),
					PeriodText(t->valid_from, t->valid_to), TimeText(r->at));
	}
	if (out > LOG_CANDIDATES)
		AddStep(r, "Territory", NULL, NAN, "%d more territories not in force at %s",
				out - LOG_CANDIDATES, TimeText(r->at));
	return kept;
}

/*
 * TerritoryText names a territory: its kind and code, and its brand.
 */
static char *
TerritoryText(Model *m, const ModelTerritory *t)
{
	static const char *const kinds[] = { "", "postal", "county", "state", "country" };

	return psprintf("%s %s%s%s%s", kinds[(int) t->kind],
					ModelText(m, t->kind == 4 ? t->country : t->code),
					t->brand != -1 ? " (brand " : "",
					t->brand != -1 ? ModelBrandCode(m, t->brand) : "", t->brand != -1 ? ")" : "");
}

/*
 * PeriodText says a period in words, as aimroute.period_text does: always,
 * until ..., from ..., from ... to ....
 */
static char *
PeriodText(TimestampTz from, TimestampTz to)
{
	if (TIMESTAMP_IS_NOBEGIN(from) && TIMESTAMP_IS_NOEND(to))
		return "always";
	if (TIMESTAMP_IS_NOBEGIN(from))
		return psprintf("until %s", TimeText(to));
	if (TIMESTAMP_IS_NOEND(to))
		return psprintf("from %s", TimeText(from));
	return psprintf("from %s to %s", TimeText(from), TimeText(to));
}

/*
 * TimeText writes an instant as timestamptz output does, in a string of its
 * own (timestamptz_to_str reuses one buffer).
 */
static char *
TimeText(TimestampTz t)
{
	return pstrdup(timestamptz_to_str(t));
}

/*
 * CompareHolders orders territory holders by distance (none last), then
 * dealer number: Better's order.
 */
static int
CompareHolders(const void *a, const void *b)
{
	const Holder *x = a;
	const Holder *y = b;

	if (isnan(x->m) != isnan(y->m))
		return isnan(x->m) ? 1 : -1;
	if (!isnan(x->m) && x->m != y->m)
		return x->m < y->m ? -1 : 1;
	return x->dealer - y->dealer;
}

/*
 * GatherHolders lists each candidate holding one of the territories once,
 * with its sphere distance, closest first; holders of another country are
 * only counted (foreign).
 */
static int
GatherHolders(Routing *r, const ModelTerritory **ts, int nt, Holder *holders, int *foreign)
{
	LeadPlace *p = &r->place;
	CandidateFilter f;
	int n = 0;

	Filter(r, &f, r->product_filter, NULL, NULL);
	f.country = NULL; /* checked below, to explain holders of another country */
	for (int i = 0; i < nt; i++)
	{
		int dealer = ts[i]->dealer;
		const ModelDealer *d = ModelDealerAt(r->model, dealer);
		bool seen = false;

		/* A dealer holding several of these territories is looked at once. */
		for (int j = 0; j < i && !seen; j++)
			seen = ts[j]->dealer == dealer;
		if (seen || !ModelAccepts(r->model, &f, dealer))
			continue;
		if (strcmp(ModelText(r->model, d->country), p->country) != 0)
		{
			(*foreign)++;
			continue;
		}
		holders[n].dealer = dealer;
		holders[n].m = p->has_centroid && d->has_location ? SphereMeters(p->xyz, d->xyz) : NAN;
		n++;
	}
	qsort(holders, n, sizeof(Holder), CompareHolders);
	return n;
}

/*
 * MeasureClosestHolders measures holders on the spheroid, closest first on
 * the sphere, until none left can be among the LOG_CANDIDATES closest on
 * the spheroid, the ones explained (the first of them wins); it returns how
 * many it measured, sorted again by their spheroid distance.
 */
static int
MeasureClosestHolders(Routing *r, Holder *holders, int n)
{
	double closest[LOG_CANDIDATES]; /* the smallest distances so far, in order */
	int nclosest = 0;
	int measured;

	for (measured = 0; measured < n; measured++)
	{
		Holder *h = &holders[measured];
		double m;
		int at = -1;

		if (nclosest == LOG_CANDIDATES &&
			(isnan(h->m) || h->m * (1.0 - SPHERE_MARGIN) > closest[nclosest - 1]))
			break;
		if (isnan(h->m))
			continue;
		m = ModelDistance(r->model, h->dealer, r->place.centroid);
		if (nclosest < LOG_CANDIDATES)
			at = nclosest++;
		else if (m < closest[LOG_CANDIDATES - 1])
			at = LOG_CANDIDATES - 1;
		for (; at > 0 && closest[at - 1] > m; at--)
			closest[at] = closest[at - 1];
		if (at >= 0)
			closest[at] = m;
		h->m = m; /* from here on, the spheroid distance */
	}
	qsort(holders, measured, sizeof(Holder), CompareHolders);
	return measured;
}

/*
 * HeldText says which territories a dealer holds around the lead: by kind,
 * Brand Territories before all-brands ones.
 */
static char *
HeldText(Model *m, const ModelTerritory **ts, int nt, int dealer)
{
	static const char *const kinds[] = { "", "postal", "county", "state", "country" };
	StringInfoData buf;

	initStringInfo(&buf);
	for (int kind = 1; kind <= 4; kind++)
		for (int pass = 0; pass < 2; pass++)
			for (int i = 0; i < nt; i++)
			{
				const ModelTerritory *t = ts[i];

				if (t->dealer != dealer || t->kind != kind || (t->brand == -1) != (pass == 1))
					continue;
				appendStringInfo(&buf, "%s%s %s", buf.len > 0 ? ", " : "", kinds[kind],
								 ModelText(m, kind == 4 ? t->country : t->code));
				if (t->brand != -1)
					appendStringInfo(&buf, " (brand %s)", ModelBrandCode(m, t->brand));
				if (ModelTerritoryDated(t))
					appendStringInfo(&buf, " %s", PeriodText(t->valid_from, t->valid_to));
			}
	return buf.data;
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
TerritoryDecide(Routing *r, const char *best, double best_m, int n)
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
 * Rule 5, Radius: the closest dealer of the lead's country within the
 * radius, when radius routing applies to the lead.
 */
static bool
TryRadius(Routing *r)
{
	CandidateFilter f;
	char *best;
	double best_m;

	if (!RadiusApplies(r))
		return false;
	Filter(r, &f, r->product_filter, NULL, NULL);
	if (r->settings->drive_enabled)
		return TryDriveDistance(r, &f);
	if (!Nearest(r, &f, r->settings->radius_m, "Radius", &best, &best_m))
	{
		AddStep(r, "Radius", NULL, NAN, "no active dealer of %s within %s sells brand %s%s",
				r->place.country, MilesText(r->settings->radius_m), r->request->brand_code,
				r->product_filter ? psprintf(" with product %s", r->product_filter) : "");
		return false;
	}
	AddStep(r, "Radius", best, best_m, "chosen: the closest dealer of %s within %s",
			r->place.country, MilesText(r->settings->radius_m));
	Decide(r, MATCH_RADIUS, best, best_m);
	return true;
}

/*
 * Rule 5 with Drive Distance on: of the same candidates as Radius (within
 * the radius as the crow flies), the closest by road (drive.c).  They are
 * walked closest first as the crow flies, a few at a time, each few
 * measured by one Dijkstra run; a road is never shorter than the straight
 * line, so once the next candidate is farther as the crow flies than the
 * best road distance found, none left can win.  A candidate the network
 * does not reach is measured as the crow flies; so is every candidate when
 * the lead is off the network.  The match is Drive Distance when the
 * winner was measured by road, else Radius.
 */
static bool
TryDriveDistance(Routing *r, const CandidateFilter *f)
{
	const char *rule = "Drive Distance";
	double limit_m = r->settings->radius_m;
	Candidate *cand;
	int n = ModelWithin(r->model, f, r->place.xyz, r->place.centroid, limit_m, &cand);
	double tie_m = r->settings->round_robin ? TIE_TOLERANCE_M : 0.0;
	Holder *measured = palloc(sizeof(Holder) * Max(n, 1));
	double *straight = palloc(sizeof(double) * Max(n, 1));
	bool *by_road = palloc(sizeof(bool) * Max(n, 1));
	double *beyond = palloc(sizeof(double) * Max(n, 1)); /* farther by road than this; NaN */
	DriveLeg *legs = palloc(sizeof(DriveLeg) * Max(n, 1));
	int *batch = palloc(sizeof(int) * Max(n, 1));
	int considered = 0, next = 0, won = -1, crow = -1;
	bool on_road, done = false;
	DriveLead lead;
	double lon, lat;

	DriveLonLat(r->place.xyz, &lon, &lat);
	on_road = DriveStart(r->settings->drive_network, lon, lat, &lead);
	if (on_road)
		AddStep(r, rule, NULL, NAN,
				"by road on %s: the lead's postal centre point is %.0f m from its vertex %lld",
				lead.network, lead.snap_m, lead.vertex);
	else
		AddStep(r, rule, NULL, NAN, "%s: candidates are measured as the crow flies", lead.why);

	while (!done && next < n)
	{
		/* The first few candidates, then every one that can still win. */
		int nbatch = 0;
		int size = considered == 0 ? DRIVE_FIRST_FEW : n;
		char *failed;

		for (; next < n && nbatch < size; next++)
		{
			double bound = won >= 0 ? measured[won].m + tie_m : INFINITY;
			double spheroid;

			if (cand[next].sphere_m * (1.0 - SPHERE_MARGIN) > bound)
			{
				done = true;
				break;
			}
			spheroid = ModelDistance(r->model, cand[next].dealer, r->place.centroid);
			if (spheroid > limit_m)
				continue;
			straight[considered + nbatch] = spheroid;
			measured[considered + nbatch].dealer = cand[next].dealer;
			measured[considered + nbatch].m = spheroid;
			by_road[considered + nbatch] = false;
			beyond[considered + nbatch] = NAN;
			if (on_road && !isnan(spheroid))
			{
				const ModelDealer *d = ModelDealerAt(r->model, cand[next].dealer);

				DriveLonLat(d->xyz, &legs[nbatch].lon, &legs[nbatch].lat);
				legs[nbatch].straight_m = spheroid;
				batch[nbatch] = considered + nbatch;
			}
			else
				batch[nbatch] = -1 - (considered + nbatch);
			nbatch++;
		}
		if (nbatch == 0)
			break;

		/* The batch's road distances, those on the network compacted first. */
		failed = NULL;
		if (on_road)
		{
			int nlegs = 0;
			DriveLeg *compact = palloc(sizeof(DriveLeg) * nbatch);
			int *at = palloc(sizeof(int) * nbatch);

			for (int i = 0; i < nbatch; i++)
				if (batch[i] >= 0)
				{
					compact[nlegs] = legs[i];
					at[nlegs++] = batch[i];
				}
			lead.why = NULL;
			DriveMeasure(&lead, compact, nlegs,
						 won >= 0 && !isnan(measured[won].m) ? measured[won].m : INFINITY, tie_m);
			failed = lead.why;
			for (int i = 0; i < nlegs; i++)
				if (compact[i].how == DRIVE_ROAD)
				{
					measured[at[i]].m = compact[i].road_m;
					by_road[at[i]] = true;
				}
				else if (compact[i].how == DRIVE_BEYOND)
				{
					/* Farther by road than a dealer found: it cannot win. */
					measured[at[i]].m = NAN;
					beyond[at[i]] = compact[i].road_m;
				}
				else if (at[i] < DRIVE_LOG_CANDIDATES)
					ExplainOffRoad(r, &lead, &compact[i], measured[at[i]].dealer, straight[at[i]]);
		}
		if (failed != NULL)
			AddStep(r, rule, NULL, NAN, "%s: those candidates are measured as the crow flies",
					failed);

		for (int i = considered; i < considered + nbatch; i++)
		{
			const char *dealer = ModelDealerNumber(r->model, measured[i].dealer);

			if (i >= DRIVE_LOG_CANDIDATES)
				;
			else if (by_road[i])
				AddStep(r, rule, dealer, measured[i].m,
						"candidate at %s by road, %s as the crow flies", MilesText(measured[i].m),
						MilesText(straight[i]));
			else if (!isnan(beyond[i]))
				AddStep(
					r, rule, dealer, NAN,
					"candidate at %s as the crow flies, more than %s by road: not measured further",
					MilesText(straight[i]), MilesText(beyond[i]));
			else
				AddStep(r, rule, dealer, measured[i].m, "candidate at %s as the crow flies",
						MilesText(straight[i]));
			if (won < 0 || Better(measured[i].m, dealer, measured[won].m,
								  ModelDealerNumber(r->model, measured[won].dealer)))
				won = i;
			if (crow < 0 || Better(straight[i], dealer, straight[crow],
								   ModelDealerNumber(r->model, measured[crow].dealer)))
				crow = i;
		}
		considered += nbatch;
	}

	if (considered > DRIVE_LOG_CANDIDATES)
		AddStep(r, rule, NULL, NAN, "%d more candidates measured, none closer",
				considered - DRIVE_LOG_CANDIDATES);
	if (on_road)
		AddStep(r, rule, NULL, NAN,
				"road distances: %d measured by %d pgr_dijkstraCost %s, %d from the cache%s",
				lead.measured, lead.dijkstras, lead.dijkstras == 1 ? "run" : "runs", lead.cached,
				lead.cache_kept ? ""
								: " (kept for this statement only: the network table has no "
								  "change trigger; run aimroute.drive_network_watch())");
	if (won < 0)
	{
		AddStep(r, "Radius", NULL, NAN, "no active dealer of %s within %s sells brand %s%s",
				r->place.country, MilesText(limit_m), r->request->brand_code,
				r->product_filter ? psprintf(" with product %s", r->product_filter) : "");
		return false;
	}
	if (r->settings->round_robin && considered > 1)
		won = BreakTie(r, rule, measured, considered);

	{
		const char *winner = ModelDealerNumber(r->model, measured[won].dealer);
		const char *closest = ModelDealerNumber(r->model, measured[crow].dealer);
		char *why = "";

		if (crow != won && by_road[won])
			why = psprintf(
				"; %s is closer as the crow flies (%s) but %s", closest, MilesText(straight[crow]),
				by_road[crow]		   ? psprintf("%s by road", MilesText(measured[crow].m))
				: !isnan(beyond[crow]) ? psprintf("more than %s by road", MilesText(beyond[crow]))
									   : "not reached by road");
		if (by_road[won])
		{
			AddStep(r, rule, winner, measured[won].m,
					"chosen: the closest by road (%s; %s as the crow flies) of the dealers of %s "
					"within %s as the crow flies%s",
					MilesText(measured[won].m), MilesText(straight[won]), r->place.country,
					MilesText(limit_m), why);
			Decide(r, MATCH_DRIVE_DISTANCE, winner, measured[won].m);
		}
		else
		{
			AddStep(r, "Radius", winner, measured[won].m,
					"chosen: the closest dealer of %s within %s, measured as the crow flies",
					r->place.country, MilesText(limit_m));
			Decide(r, MATCH_RADIUS, winner, measured[won].m);
		}
	}
	return true;
}

/*
 * ExplainOffRoad says why a candidate was measured as the crow flies.
 */
static void
ExplainOffRoad(Routing *r, const DriveLead *lead, const DriveLeg *leg, int dealer, double straight)
{
	const char *number = ModelDealerNumber(r->model, dealer);

	if (leg->how == DRIVE_DEALER_OFF)
		AddStep(r, "Drive Distance", number, straight,
				"no vertex of the road network within %.0f m of dealer %s: measured as the crow "
				"flies",
				DRIVE_SNAP_M, number);
	else if (leg->how == DRIVE_NO_PATH)
		AddStep(r, "Drive Distance", number, straight,
				"no road from the lead's vertex %lld to dealer %s's vertex: measured as the crow "
				"flies",
				lead->vertex, number);
}

/*
 * RadiusApplies tells whether radius routing is on for the lead's country
 * and the lead has a centre point, explaining why not.
 */
static bool
RadiusApplies(Routing *r)
{
	bool listed = false;

	if (!r->settings->radius_enabled)
	{
		AddStep(r, "Radius", NULL, NAN, "radius routing is off (settings.radius_enabled)");
		return false;
	}
	for (int i = 0; i < r->settings->nradius_countries; i++)
		if (strcmp(r->settings->radius_countries[i], r->place.country) == 0)
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
	return true;
}

/*
 * Rule 6, Default: the default dealer.
 */
static void
UseDefault(Routing *r)
{
	const char *dealer = r->settings->default_dealer;
	double m = NAN;
	int di;

	if (dealer == NULL)
		ereport(
			ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("no default dealer is configured"),
			 errdetail("A lead that no rule places goes to the default dealer."),
			 errhint(
				 "UPDATE aimroute.settings SET default_dealer_number = '...' (a dealer of aimroute.dealers).")));
	di = ModelFindDealer(r->model, dealer);
	if (di >= 0 && r->place.has_centroid)
		m = ModelDistance(r->model, di, r->place.centroid);
	AddStep(r, "Default", dealer, m, "chosen: no rule placed the lead, so the default dealer %s",
			dealer);
	Decide(r, MATCH_DEFAULT, dealer, m);
}

/*
 * CapReached tells whether the dealer a rule chose has a daily lead cap
 * and has reached it on the day the lead was received (caps.c); then the
 * dealer is excluded and the explanation says so.  A new lead that fits is
 * counted.
 */
static bool
CapReached(Routing *r)
{
	const char *dealer = r->result->dealer_number;
	int di = ModelFindDealer(r->model, dealer);
	int cap = di >= 0 ? ModelDealerAt(r->model, di)->daily_lead_cap : 0;
	char *day;

	if (cap <= 0 ||
		CapRoom(dealer, cap, r->at, r->settings->reroute.tz, r->request->take_turn, &day))
		return false;
	AddStep(r, MatchKindLabels[r->result->match], dealer, NAN,
			"%s skipped: daily lead cap %d reached for %s; the rules again without it", dealer, cap,
			day);
	r->excluded = repalloc(r->excluded, sizeof(int) * (r->nexcluded + 1));
	r->excluded[r->nexcluded++] = di;
	return true;
}

/*
 * Filter fills the candidate condition of a rule: an active dealer of the
 * lead's country selling its brand, not excluded, and, when given,
 * assigned a product, with a product in stock, of a group.
 */
static void
Filter(Routing *r, CandidateFilter *f, const char *product, const char *stock, const char *group)
{
	int p;

	memset(f, 0, sizeof(*f));
	f->country = r->place.country;
	f->brand = r->brand;
	f->excluded = r->excluded;
	f->nexcluded = r->nexcluded;
	f->product = FILTER_ANY;
	f->stock = FILTER_ANY;
	if (product != NULL)
	{
		p = ModelFindProduct(r->model, product);
		f->product = p >= 0 ? p : FILTER_NOTHING;
	}
	if (stock != NULL)
	{
		p = ModelFindProduct(r->model, stock);
		f->stock = p >= 0 ? p : FILTER_NOTHING;
	}
	f->group = group;
	f->at = r->at;
}

/*
 * Nearest finds the closest candidate on the spheroid within limit_m: it
 * measures the model's candidates closest first on the sphere until none
 * left can win, naming the first ones in the explanation.
 */
static bool
Nearest(Routing *r, const CandidateFilter *f, double limit_m, const char *rule, char **best,
		double *best_m)
{
	Candidate *cand;
	int n = ModelNearest(r->model, f, r->place.xyz, r->place.centroid, limit_m, &cand);
	int considered = 0;
	/* Round robin: the dealers measured, to find the ones tied with the closest. */
	double tie_m = r->settings->round_robin ? TIE_TOLERANCE_M : 0.0;
	Holder *measured = r->settings->round_robin ? palloc(sizeof(Holder) * Max(n, 1)) : NULL;

	*best = NULL;
	*best_m = NAN;
	for (int i = 0; i < n; i++)
	{
		const char *dealer = ModelDealerNumber(r->model, cand[i].dealer);
		double bound = *best ? Min(*best_m + tie_m, limit_m) : limit_m;
		double spheroid;

		if (cand[i].sphere_m * (1.0 - SPHERE_MARGIN) > bound)
			break;
		spheroid = ModelDistance(r->model, cand[i].dealer, r->place.centroid);
		if (spheroid > limit_m)
			continue;
		if (measured != NULL)
		{
			measured[considered].dealer = cand[i].dealer;
			measured[considered].m = spheroid;
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
	if (considered > LOG_CANDIDATES)
		AddStep(r, rule, NULL, NAN, "%d more candidates no closer", considered - LOG_CANDIDATES);
	if (measured != NULL && considered > 1)
	{
		int won = BreakTie(r, rule, measured, considered);

		*best = Keep(r, ModelDealerNumber(r->model, measured[won].dealer));
		*best_m = measured[won].m;
	}
	return *best != NULL;
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
 * BreakTie returns which of n measured candidates gets the lead under
 * round robin: the closest, unless others are within TIE_TOLERANCE_M of it;
 * then the tied dealer whose turn it is (ties.c), and the explanation says
 * so.  A candidate without a distance is never tied.
 */
static int
BreakTie(Routing *r, const char *rule, const Holder *c, int n)
{
	int closest = -1;
	int *tied = palloc(sizeof(int) * n);
	const char **numbers = palloc(sizeof(char *) * n);
	TieTurn *turns = palloc(sizeof(TieTurn) * n);
	int ntied = 0;
	int won;
	int next = -1;
	StringInfoData others;

	for (int i = 0; i < n; i++)
		if (!isnan(c[i].m) && (closest < 0 || c[i].m < c[closest].m ||
							   (c[i].m == c[closest].m && c[i].dealer < c[closest].dealer)))
			closest = i;
	if (closest < 0)
		return 0;
	/* In dealer number order (the model's order): a tie of turns goes to the lower number. */
	for (int i = 0; i < n; i++)
		if (!isnan(c[i].m) && c[i].m <= c[closest].m + TIE_TOLERANCE_M)
		{
			int at = ntied++;

			for (; at > 0 && c[tied[at - 1]].dealer > c[i].dealer; at--)
				tied[at] = tied[at - 1];
			tied[at] = i;
		}
	if (ntied < 2)
		return closest;
	for (int i = 0; i < ntied; i++)
		numbers[i] = ModelDealerNumber(r->model, c[tied[i]].dealer);
	won =
		TieChoose(ModelBrandCode(r->model, r->brand), numbers, ntied, r->request->take_turn, turns);
	if (r->request->take_turn)
		r->turn = numbers[won];

	/* The dealer whose turn comes next, to say why the winner came first. */
	initStringInfo(&others);
	for (int i = 0; i < ntied; i++)
	{
		if (i == won)
			continue;
		if (next < 0 || TieTurnFirst(&turns[i], &turns[next]))
			next = i;
		if (others.len > 0)
			appendStringInfoString(&others, ", ");
		appendStringInfoString(&others, numbers[i]);
	}
	AddStep(r, rule, numbers[won], c[tied[won]].m, "round robin: tied with %s at %s; %s",
			others.data, MilesText(c[tied[won]].m),
			TieReason(r, numbers[won], &turns[won], numbers[next], &turns[next]));
	return tied[won];
}

/*
 * TieReason says why a tied dealer had the turn before the next one.
 */
static char *
TieReason(Routing *r, const char *winner, const TieTurn *w, const char *next, const TieTurn *t)
{
	const char *brand = ModelBrandCode(r->model, r->brand);

	if (w->leads < t->leads)
		return psprintf("%s had fewer %s leads by turn (" INT64_FORMAT " against " INT64_FORMAT ")",
						winner, brand, w->leads, t->leads);
	if (!w->had_turn)
		return psprintf("%s and %s have had no %s lead by turn yet: the lower dealer number",
						winner, next, brand);
	if (w->last_at < t->last_at)
		return psprintf(INT64_FORMAT
						" %s leads by turn each; %s had its last one longer ago (%s against %s)",
						w->leads, brand, winner, TimeText(w->last_at), TimeText(t->last_at));
	return psprintf(INT64_FORMAT " %s leads by turn each, the last ones at the same time: the "
								 "lower dealer number",
					w->leads, brand);
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
 * Decide records the answer.
 */
static void
Decide(Routing *r, MatchKind match, const char *dealer, double distance_m)
{
	r->result->dealer_number = Keep(r, dealer);
	r->result->match = match;
	r->result->distance_m = distance_m;
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
