/*
 * drive.c
 *		Road distances for Drive Distance routing (SPEC section 2): from a
 *		lead's postal centre point to dealers, on the road network that
 *		settings.drive_network names (a pgRouting edge table, as
 *		osm2pgrouting imports it from OpenStreetMap data).
 *
 * A point is snapped to the nearest end of an edge (a vertex) within
 * DRIVE_SNAP_M, on the spheroid; the edges' lines run from source to target,
 * so their ends are the vertices.  The road distance is the straight line
 * from the lead's point to its vertex, plus the shortest path on the network
 * (pgRouting's pgr_dijkstraCost, directed: cost or reverse_cost below zero
 * closes an edge in that direction, so one-way streets count; lengths are
 * length_m, metres), plus the straight line from the dealer's vertex to the
 * dealer.  By the triangle inequality it is never shorter than the straight
 * line between the two points, which is what lets routing.c stop its walk
 * early.  One Dijkstra run measures every dealer asked at once, on the
 * edges around the lead first (DriveMeasure says why that is exact).
 *
 * Every road distance is kept in a hash table of the backend, keyed by the
 * two points (a postal code's centre point and a dealer's location: a moved
 * dealer or a reloaded postal code is a new key), under a generation: the
 * network table's OID and its version, aimroute.drive_network_version,
 * which the trigger aimroute.drive_network_changed() puts on the table
 * moves on with every statement that changes it.  When the network has no
 * such trigger (a table imported again with osm2pgrouting --clean), the
 * generation is the current statement: what is kept lasts that statement.
 *
 * Nothing here raises on bad data or a failing pgRouting: each read of the
 * network runs in a subtransaction, and an error becomes a reason (why) for
 * the explanation, and the candidate is measured as the crow flies.  A
 * query cancel still cancels.
 */
#include "postgres.h"

#include <math.h>

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/resowner.h"
#include "utils/varlena.h"

#include "catalog.h"
#include "drive.h"
#include "postgis.h"
#include "search_path.h"
#include "subxact.h"

/* The cache is emptied when it holds this many road distances, or snapped points. */
#define DRIVE_CACHE_MAX 200000

/* What the kept road distances are valid for. */
typedef struct Generation
{
	Oid relid;
	int64 version;
	bool kept;				 /* the network has its trigger: valid until the version moves */
	LocalTransactionId lxid; /* else: this statement only (a read-only statement of a */
	CommandId cid;			 /* transaction block has the command id of the one before) */
	TimestampTz statement;
} Generation;

typedef struct PointKey
{
	double lon, lat;
} PointKey;

typedef struct SnapEntry
{
	PointKey key;
	bool found;
	long long vertex;
	double snap_m;
} SnapEntry;

typedef struct RoadKey
{
	double lead[2];
	double dealer[2];
} RoadKey;

typedef struct RoadEntry
{
	RoadKey key;
	DriveHow how; /* DRIVE_ROAD, DRIVE_DEALER_OFF or DRIVE_NO_PATH */
	double path_m;
	double dealer_snap_m;
} RoadEntry;

/*
 * The network table's OID, whether it has cost and reverse_cost, whether it
 * has the change trigger, and the network's version.
 */
#define IDENTITY_SQL                                                                               \
	"SELECT c.oid,"                                                                                \
	" EXISTS (SELECT FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid"                      \
	"  AND a.attname = 'cost' AND a.attnum > 0 AND NOT a.attisdropped),"                           \
	" EXISTS (SELECT FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid"                      \
	"  AND a.attname = 'reverse_cost' AND a.attnum > 0 AND NOT a.attisdropped),"                   \
	" EXISTS (SELECT FROM pg_catalog.pg_trigger t WHERE t.tgrelid = c.oid"                         \
	"  AND t.tgfoid = 'aimroute.drive_network_changed()'::pg_catalog.regprocedure"                 \
	"  AND t.tgenabled <> 'D' AND (t.tgtype & 60) = 60),"                                          \
	" (SELECT v.version FROM aimroute.drive_network_version v)"                                    \
	" FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"         \
	" WHERE n.nspname = $1 AND c.relname = $2"

static SPIPlanPtr identity_plan = NULL; /* IDENTITY_SQL, kept for the session */
static MemoryContext cache_context = NULL;
static HTAB *snaps = NULL;
static HTAB *roads = NULL;
static Generation generation;

/* What one DriveStart found of the network, for DriveMeasure. */
static char *network_sql = NULL; /* the edge table, quoted */
static char *edges_sql = NULL;	 /* the edges as pgRouting reads them */
static char *pgrouting = NULL;	 /* pgRouting's schema, quoted */

typedef void (*NetworkWork)(void *arg);

static bool InSubtransaction(NetworkWork work, void *arg, char **why);
static void StartWork(void *arg);
static void MeasureWork(void *arg);
static void UseGeneration(const Generation *g, bool empty);
static char *Around(const DriveLead *lead, double reach_m);
static void Snap(int n, const double *lon, const double *lat, SnapEntry *out);
static char *Quoted(const char *schema, const char *name);

/*
 * DriveStart finds the network and the lead's vertex; false, with why
 * set, when the lead cannot be measured by road.
 */
bool
DriveStart(const char *network, double lon, double lat, DriveLead *lead)
{
	memset(lead, 0, sizeof(*lead));
	lead->lon = lon;
	lead->lat = lat;
	lead->snap_m = NAN;
	if (network == NULL)
	{
		lead->why = "settings.drive_network is not set";
		return false;
	}
	lead->network = (char *) network;
	if (IsInParallelMode())
	{
		lead->why = "road distances are not measured inside a parallel query";
		return false;
	}
	if (!InSubtransaction(StartWork, lead, &lead->why))
		return false;
	lead->usable = lead->why == NULL;
	return lead->usable;
}

/*
 * StartWork is DriveStart's reading of the network, in a subtransaction.
 */
static void
StartWork(void *arg)
{
	DriveLead *lead = arg;
	List *names;
	Oid ext, owner, nsp;
	Datum values[2];
	Generation g;
	HeapTuple row;
	TupleDesc desc;
	bool isnull;
	bool has_cost, has_reverse;
	SnapEntry snap;
	MemoryContext outer = CurrentMemoryContext;
	int pinned;

	if (!ExtensionRow("pgrouting", &ext, &owner, &nsp))
	{
		lead->why = "pgRouting is not installed in this database";
		return;
	}
	names = stringToQualifiedNameList(lead->network);
	if (list_length(names) != 2)
	{
		lead->why = psprintf("settings.drive_network \"%s\" is not a schema-qualified table name",
							 lead->network);
		return;
	}

	pinned = SpiConnectPinned();
	values[0] = CStringGetTextDatum(strVal(linitial(names)));
	values[1] = CStringGetTextDatum(strVal(lsecond(names)));
	if (identity_plan == NULL)
	{
		SPIPlanPtr plan = SPI_prepare(IDENTITY_SQL, 2, (Oid[]){ TEXTOID, TEXTOID });

		if (plan == NULL || SPI_keepplan(plan) != 0)
			elog(ERROR, "could not prepare the reading of the road network's table");
		identity_plan = plan;
	}
	if (SPI_execute_plan(identity_plan, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the road network's table");
	if (SPI_processed != 1)
	{
		SpiFinishPinned(pinned);
		MemoryContextSwitchTo(outer);
		lead->why = psprintf("table %s (settings.drive_network) does not exist", lead->network);
		return;
	}
	row = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	memset(&g, 0, sizeof(g));
	g.relid = DatumGetObjectId(SPI_getbinval(row, desc, 1, &isnull));
	has_cost = DatumGetBool(SPI_getbinval(row, desc, 2, &isnull));
	has_reverse = DatumGetBool(SPI_getbinval(row, desc, 3, &isnull));
	g.kept = DatumGetBool(SPI_getbinval(row, desc, 4, &isnull));
	g.version = DatumGetInt64(SPI_getbinval(row, desc, 5, &isnull));
	if (isnull)
		g.kept = false;
	if (!g.kept)
	{
		g.version = 0;
		g.lxid = MyProc->lxid;
		g.cid = GetCurrentCommandId(false);
		g.statement = GetCurrentStatementStartTimestamp();
	}
	SpiFinishPinned(pinned);
	MemoryContextSwitchTo(outer);
	lead->cache_kept = g.kept;

	{
		char *table = Quoted(strVal(linitial(names)), strVal(lsecond(names)));
		const char *pgr = quote_identifier(get_namespace_name(nsp));
		char *edges = psprintf(
			"SELECT pg_catalog.row_number() OVER () AS id, w.source, w.target,"
			" %s AS cost, %s AS reverse_cost FROM %s w"
			" WHERE w.source IS NOT NULL AND w.target IS NOT NULL AND w.length_m IS NOT NULL",
			has_cost
				? "CASE WHEN w.cost OPERATOR(pg_catalog.<) 0 THEN -1 ELSE w.length_m::pg_catalog.float8 END"
				: "w.length_m::pg_catalog.float8",
			has_reverse
				? "CASE WHEN w.reverse_cost OPERATOR(pg_catalog.<) 0 THEN -1 ELSE w.length_m::pg_catalog.float8 END"
				: "w.length_m::pg_catalog.float8",
			table);

		/* Other columns read (cost or reverse_cost added or dropped): other distances. */
		bool same = edges_sql != NULL && strcmp(edges_sql, edges) == 0;

		UseGeneration(&g, !same);
		if (!same || strcmp(network_sql, table) != 0 || strcmp(pgrouting, pgr) != 0)
		{
			network_sql = MemoryContextStrdup(cache_context, table);
			edges_sql = MemoryContextStrdup(cache_context, edges);
			pgrouting = MemoryContextStrdup(cache_context, pgr);
		}
	}

	Snap(1, &lead->lon, &lead->lat, &snap);
	if (!snap.found)
	{
		lead->why = psprintf("no vertex of the road network within %.0f m of the lead's postal "
							 "centre point",
							 DRIVE_SNAP_M);
		return;
	}
	lead->vertex = snap.vertex;
	lead->snap_m = snap.snap_m;
}

/*
 * UseGeneration empties the cache when what it holds is not valid for g,
 * or when told to.
 */
static void
UseGeneration(const Generation *g, bool empty)
{
	HASHCTL ctl;

	if (!empty && cache_context != NULL && memcmp(g, &generation, sizeof(Generation)) == 0 &&
		hash_get_num_entries(roads) < DRIVE_CACHE_MAX &&
		hash_get_num_entries(snaps) < DRIVE_CACHE_MAX)
		return;
	if (cache_context == NULL)
		cache_context =
			AllocSetContextCreate(TopMemoryContext, "aimroute drive cache", ALLOCSET_DEFAULT_SIZES);
	if (snaps != NULL)
		hash_destroy(snaps);
	if (roads != NULL)
		hash_destroy(roads);
	memset(&ctl, 0, sizeof(ctl));
	ctl.hcxt = cache_context;
	ctl.keysize = sizeof(PointKey);
	ctl.entrysize = sizeof(SnapEntry);
	snaps = hash_create("aimroute drive snaps", 256, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	ctl.keysize = sizeof(RoadKey);
	ctl.entrysize = sizeof(RoadEntry);
	roads = hash_create("aimroute drive roads", 1024, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	memcpy(&generation, g, sizeof(Generation));
}

/*
 * Snap finds the nearest vertex within DRIVE_SNAP_M of each of n points,
 * from the cache or the network; called with SPI connected or not.
 */
static void
Snap(int n, const double *lon, const double *lat, SnapEntry *out)
{
	int missing = 0;
	int *which = palloc(sizeof(int) * n);
	Datum *lons = palloc(sizeof(Datum) * n);
	Datum *lats = palloc(sizeof(Datum) * n);
	const char *pg;
	char *sql;
	Datum values[3];
	MemoryContext outer = CurrentMemoryContext;
	int pinned;

	for (int i = 0; i < n; i++)
	{
		PointKey key;
		SnapEntry *e;

		memset(&key, 0, sizeof(key));
		key.lon = lon[i];
		key.lat = lat[i];
		e = hash_search(snaps, &key, HASH_FIND, NULL);
		if (e != NULL)
			out[i] = *e;
		else
		{
			which[missing] = i;
			lons[missing] = Float8GetDatum(lon[i]);
			lats[missing] = Float8GetDatum(lat[i]);
			missing++;
		}
	}
	if (missing == 0)
		return;

	pg = PostgisSchema();
	sql = psprintf(
		"SELECT p.i, s.vid, s.m"
		" FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.float8[]),"
		"  pg_catalog.unnest($2::pg_catalog.float8[])) WITH ORDINALITY AS p(lon, lat, i)"
		" CROSS JOIN LATERAL (SELECT %s.st_setsrid(%s.st_makepoint(p.lon, p.lat), 4326) AS pt) q"
		" LEFT JOIN LATERAL ("
		"  SELECT e.vid, e.m FROM ("
		"   SELECT w.source::pg_catalog.int8 AS vid,"
		"    %s.st_distance(%s.st_startpoint(w.the_geom)::%s.geography, q.pt::%s.geography) AS m"
		"    FROM %s w WHERE w.the_geom OPERATOR(%s.&&) %s.st_expand(q.pt,"
		"     $3 / (111000.0 * GREATEST(pg_catalog.cos(pg_catalog.radians(p.lat)), 0.01::pg_catalog.float8)),"
		"     $3 / 110000.0)"
		"   UNION ALL"
		"   SELECT w.target::pg_catalog.int8,"
		"    %s.st_distance(%s.st_endpoint(w.the_geom)::%s.geography, q.pt::%s.geography)"
		"    FROM %s w WHERE w.the_geom OPERATOR(%s.&&) %s.st_expand(q.pt,"
		"     $3 / (111000.0 * GREATEST(pg_catalog.cos(pg_catalog.radians(p.lat)), 0.01::pg_catalog.float8)),"
		"     $3 / 110000.0)"
		"  ) e WHERE e.vid IS NOT NULL AND e.m <= $3 ORDER BY e.m, e.vid LIMIT 1) s ON true",
		pg, pg, pg, pg, pg, pg, network_sql, pg, pg, pg, pg, pg, pg, network_sql, pg, pg);
	values[0] = PointerGetDatum(construct_array(lons, missing, FLOAT8OID, sizeof(float8),
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[1] = PointerGetDatum(construct_array(lats, missing, FLOAT8OID, sizeof(float8),
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[2] = Float8GetDatum(DRIVE_SNAP_M);

	pinned = SpiConnectPinned();
	if (SPI_execute_with_args(sql, 3, (Oid[]){ FLOAT8ARRAYOID, FLOAT8ARRAYOID, FLOAT8OID }, values,
							  NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not snap points to the road network");
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple row = SPI_tuptable->vals[r];
		TupleDesc desc = SPI_tuptable->tupdesc;
		bool isnull;
		int64 i = DatumGetInt64(SPI_getbinval(row, desc, 1, &isnull)) - 1;
		Datum vid = SPI_getbinval(row, desc, 2, &isnull);
		SnapEntry *e;
		SnapEntry *o;

		if (i < 0 || i >= missing)
			continue;
		o = &out[which[i]];
		memset(o, 0, sizeof(*o));
		o->key.lon = lon[which[i]];
		o->key.lat = lat[which[i]];
		o->found = !isnull;
		o->vertex = isnull ? 0 : DatumGetInt64(vid);
		o->snap_m = isnull ? NAN : DatumGetFloat8(SPI_getbinval(row, desc, 3, &isnull));
		e = hash_search(snaps, &o->key, HASH_ENTER, NULL);
		*e = *o;
	}
	SpiFinishPinned(pinned);
	MemoryContextSwitchTo(outer);
}

/* One Dijkstra run's arguments, through InSubtransaction. */
typedef struct Measure
{
	DriveLead *lead;
	DriveLeg *legs;
	int n;
	const bool *pending; /* the legs to measure */
	double reach_m;		 /* on the edges within this of the lead's vertex; INFINITY: all */
} Measure;

/*
 * DriveMeasure measures the road distance from the lead to each of n
 * dealers (each leg's straight_m given): from the cache, else by a
 * Dijkstra run on the part of the network around the lead, then, for the
 * legs that run could not settle, on the whole network.  best_m is the
 * best distance (by road, or as the crow flies) the caller found before,
 * INFINITY for none; tie_m how close to it ties.  A leg that fails is
 * DRIVE_FAILED, and lead->why says why.
 *
 * A path no longer than reach_m from the lead's vertex never leaves the
 * circle of that radius, so a run on the edges that meet the circle's
 * bounding box finds every such path exactly; a leg it leaves unreached or
 * farther is farther than reach_m by road (DRIVE_BEYOND).  That settles
 * it, when reach_m is at least best + tie_m and its straight line is
 * longer than best + tie_m (were it cut off from the network, it would
 * be measured as the crow flies and still lose).  Others are measured
 * again on the whole network.
 */
void
DriveMeasure(DriveLead *lead, DriveLeg *legs, int n, double best_m, double tie_m)
{
	bool *pending = palloc0(sizeof(bool) * Max(n, 1));
	int npending = 0;
	double farthest = 0.0;
	Measure m = { lead, legs, n, pending, INFINITY };

	for (int i = 0; i < n; i++)
	{
		RoadKey key;
		RoadEntry *e;

		memset(&key, 0, sizeof(key));
		key.lead[0] = lead->lon;
		key.lead[1] = lead->lat;
		key.dealer[0] = legs[i].lon;
		key.dealer[1] = legs[i].lat;
		legs[i].road_m = NAN;
		legs[i].path_m = NAN;
		legs[i].dealer_snap_m = NAN;
		legs[i].cached = false;
		legs[i].how = DRIVE_FAILED;
		e = hash_search(roads, &key, HASH_FIND, NULL);
		if (e == NULL)
		{
			pending[i] = true;
			npending++;
			farthest = Max(farthest, legs[i].straight_m);
			continue;
		}
		legs[i].how = e->how;
		legs[i].path_m = e->path_m;
		legs[i].dealer_snap_m = e->dealer_snap_m;
		if (e->how == DRIVE_ROAD || e->how == DRIVE_BEYOND)
			legs[i].road_m = lead->snap_m + e->path_m + e->dealer_snap_m;
		legs[i].cached = true;
	}
	if (npending > 0)
	{
		m.reach_m = Max(DRIVE_REACH_FACTOR * farthest, DRIVE_MIN_REACH_M);
		/* A failed run leaves its legs DRIVE_FAILED: measured as the crow flies. */
		if (!InSubtransaction(MeasureWork, &m, &lead->why))
		{
			for (int i = 0; i < n; i++)
				lead->cached += legs[i].cached;
			return;
		}
	}

	/* What the runs around the lead did not settle, on the whole network. */
	for (int i = 0; i < n; i++)
		if (legs[i].how == DRIVE_ROAD)
			best_m = Min(best_m, legs[i].road_m);
		else if (legs[i].how == DRIVE_DEALER_OFF || legs[i].how == DRIVE_NO_PATH)
			best_m = Min(best_m, legs[i].straight_m);
	npending = 0;
	for (int i = 0; i < n; i++)
	{
		pending[i] =
			legs[i].how == DRIVE_BEYOND && (isinf(best_m) || legs[i].road_m < best_m + tie_m ||
											!(legs[i].straight_m > best_m + tie_m));
		npending += pending[i];
	}
	m.reach_m = INFINITY;
	if (npending > 0 && !InSubtransaction(MeasureWork, &m, &lead->why))
	{
		/* Their lower bounds are not distances: they fall back to the crow flies, as the explanation says. */
		for (int i = 0; i < n; i++)
			if (pending[i])
			{
				legs[i].how = DRIVE_FAILED;
				legs[i].road_m = NAN;
				legs[i].path_m = NAN;
			}
	}
	for (int i = 0; i < n; i++)
		lead->cached += legs[i].cached;
}

/*
 * MeasureWork is one Dijkstra run for the pending legs, in a
 * subtransaction; it changes the legs only when it succeeds.
 */
static void
MeasureWork(void *arg)
{
	Measure *m = arg;
	DriveLead *lead = m->lead;
	int *todo = palloc(sizeof(int) * m->n);
	double *lon = palloc(sizeof(double) * m->n);
	double *lat = palloc(sizeof(double) * m->n);
	SnapEntry *snap = palloc(sizeof(SnapEntry) * m->n);
	double *path = palloc(sizeof(double) * m->n);
	Datum *ends = palloc(sizeof(Datum) * m->n);
	int ntodo = 0, nends = 0;
	MemoryContext outer = CurrentMemoryContext;

	for (int i = 0; i < m->n; i++)
		if (m->pending[i])
		{
			lon[ntodo] = m->legs[i].lon;
			lat[ntodo] = m->legs[i].lat;
			todo[ntodo++] = i;
		}
	Snap(ntodo, lon, lat, snap);
	for (int j = 0; j < ntodo; j++)
	{
		path[j] = NAN;
		if (snap[j].found && snap[j].vertex == lead->vertex)
			path[j] = 0.0;
		else if (snap[j].found)
			ends[nends++] = Int64GetDatum(snap[j].vertex);
	}

	if (nends > 0)
	{
		int pinned = SpiConnectPinned();
		int level = NewGUCNestLevel();
		Datum values[3];
		char *edges = edges_sql;
		char *sql;

		if (!isinf(m->reach_m))
			edges = psprintf("%s%s", edges_sql, Around(lead, m->reach_m));
		/* pgRouting's SQL functions call its other functions by unqualified names. */
		(void) set_config_option("search_path", psprintf("pg_catalog, %s, pg_temp", pgrouting),
								 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
		sql = psprintf("SELECT d.end_vid, d.agg_cost FROM %s.pgr_dijkstracost($1, $2, $3, true) d",
					   pgrouting);
		values[0] = CStringGetTextDatum(edges);
		values[1] = Int64GetDatum(lead->vertex);
		values[2] = PointerGetDatum(
			construct_array(ends, nends, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		lead->dijkstras++;
		if (SPI_execute_with_args(sql, 3, (Oid[]){ TEXTOID, INT8OID, INT8ARRAYOID }, values, NULL,
								  true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not run pgr_dijkstraCost on the road network");
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			HeapTuple row = SPI_tuptable->vals[r];
			TupleDesc desc = SPI_tuptable->tupdesc;
			bool isnull1, isnull2;
			int64 vertex = DatumGetInt64(SPI_getbinval(row, desc, 1, &isnull1));
			double cost = DatumGetFloat8(SPI_getbinval(row, desc, 2, &isnull2));

			if (isnull1 || isnull2 || cost < 0)
				continue;
			for (int j = 0; j < ntodo; j++)
				if (snap[j].found && snap[j].vertex == vertex && snap[j].vertex != lead->vertex)
					path[j] = cost;
		}
		AtEOXact_GUC(true, level);
		SpiFinishPinned(pinned);
		MemoryContextSwitchTo(outer);
	}

	for (int j = 0; j < ntodo; j++)
	{
		DriveLeg *leg = &m->legs[todo[j]];
		RoadKey key;
		RoadEntry *e;

		leg->dealer_snap_m = snap[j].found ? snap[j].snap_m : NAN;
		leg->path_m = NAN;
		leg->road_m = NAN;
		if (!snap[j].found)
			leg->how = DRIVE_DEALER_OFF;
		else if (!isnan(path[j]) && path[j] <= m->reach_m)
		{
			leg->how = DRIVE_ROAD;
			leg->path_m = path[j];
			leg->road_m = lead->snap_m + path[j] + leg->dealer_snap_m;
		}
		else if (isinf(m->reach_m))
			leg->how = DRIVE_NO_PATH;
		else
		{
			/* Farther than reach_m, kept as that: at least. */
			leg->how = DRIVE_BEYOND;
			leg->path_m = m->reach_m;
			leg->road_m = lead->snap_m + m->reach_m + leg->dealer_snap_m;
		}
		leg->cached = false;
		lead->measured += leg->how != DRIVE_BEYOND;
		memset(&key, 0, sizeof(key));
		key.lead[0] = lead->lon;
		key.lead[1] = lead->lat;
		key.dealer[0] = leg->lon;
		key.dealer[1] = leg->lat;
		e = hash_search(roads, &key, HASH_ENTER, NULL);
		e->how = leg->how;
		e->path_m = leg->path_m;
		e->dealer_snap_m = leg->dealer_snap_m;
	}
}

/*
 * Around is the condition that keeps the edges that may hold a path of at
 * most reach_m from the lead's vertex: those whose box meets the box of
 * the circle of reach_m around it (around the lead's point, reach_m plus
 * its snap), with room.  A circle over a pole or across the antimeridian
 * keeps every edge.
 */
static char *
Around(const DriveLead *lead, double reach_m)
{
	double r = reach_m + lead->snap_m + 1.0;
	double dlat = r / 110000.0; /* a degree of latitude is at least 110,574 m */
	double top = Max(fabs(lead->lat - dlat), fabs(lead->lat + dlat));
	double dlon;
	const char *pg = PostgisSchema();

	if (top >= 89.0)
		return "";
	/* A degree of longitude is at least 111,319 m times the cosine of the latitude. */
	dlon = r / (111000.0 * cos(top * M_PI / 180.0));
	if (lead->lon - dlon <= -180.0 || lead->lon + dlon >= 180.0)
		return "";
	return psprintf(
		" AND w.the_geom OPERATOR(%s.&&) %s.st_makeenvelope(%.9f, %.9f, %.9f, %.9f, 4326)", pg, pg,
		lead->lon - dlon, lead->lat - dlat, lead->lon + dlon, lead->lat + dlat);
}

/* A piece of work on the network and the memory context of its caller. */
typedef struct Work
{
	NetworkWork work;
	void *arg;
	MemoryContext outer;
} Work;

/* InOuterContext runs a piece of work in the memory context of its caller. */
static void
InOuterContext(void *arg)
{
	Work *w = arg;

	MemoryContextSwitchTo(w->outer);
	w->work(w->arg);
}

/*
 * InSubtransaction runs work in a subtransaction; false, with why set to
 * the error's message, when it raised an error about the network.  An
 * error that is not about it -- a cancel or shutdown, a serialization
 * failure or deadlock the client must retry, memory or disk running out --
 * is raised again.
 */
static bool
InSubtransaction(NetworkWork work, void *arg, char **why)
{
	Work w = { work, arg, CurrentMemoryContext };
	ErrorData *edata = TrySubtransaction(InOuterContext, &w);
	int category;

	if (edata == NULL)
		return true;
	category = ERRCODE_TO_CATEGORY(edata->sqlerrcode);
	if (category == ERRCODE_TRANSACTION_ROLLBACK || category == ERRCODE_INSUFFICIENT_RESOURCES ||
		category == ERRCODE_OPERATOR_INTERVENTION || category == ERRCODE_PROGRAM_LIMIT_EXCEEDED)
		ReThrowError(edata);
	*why = psprintf("the road network could not be read: %s", edata->message);
	FreeErrorData(edata);
	return false;
}

/*
 * Quoted is schema.name, each quoted when it needs to be.
 */
static char *
Quoted(const char *schema, const char *name)
{
	return psprintf("%s.%s", quote_identifier(schema), quote_identifier(name));
}

/*
 * DriveLonLat is the longitude and latitude of a unit vector, in degrees.
 */
void
DriveLonLat(const double xyz[3], double *lon, double *lat)
{
	double z = Max(-1.0, Min(1.0, xyz[2]));

	*lat = asin(z) * 180.0 / M_PI;
	*lon = atan2(xyz[1], xyz[0]) * 180.0 / M_PI;
}
