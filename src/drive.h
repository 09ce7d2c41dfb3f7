/*
 * drive.h
 *		Road distances for Drive Distance routing, on a pgRouting network
 *		(drive.c).
 */
#ifndef AIMROUTE_DRIVE_H
#define AIMROUTE_DRIVE_H

/* A point farther than this from every vertex of the network is off it. */
#define DRIVE_SNAP_M 250.0

/*
 * A Dijkstra run reads the edges around the lead: within this many times
 * the farthest straight line it measures, and at least DRIVE_MIN_REACH_M.
 */
#define DRIVE_REACH_FACTOR 2.0
#define DRIVE_MIN_REACH_M  1000.0

/* How a road distance came out. */
typedef enum DriveHow
{
	DRIVE_ROAD,		  /* measured: road_m holds it */
	DRIVE_DEALER_OFF, /* no vertex within DRIVE_SNAP_M of the dealer */
	DRIVE_NO_PATH,	  /* no road from the lead's vertex to the dealer's */
	DRIVE_BEYOND,	  /* farther by road than road_m, and not measured: it cannot win */
	DRIVE_FAILED	  /* pgRouting or the network raised an error (DriveLead.why) */
} DriveHow;

/* The lead's side of road distances: the network, the lead's vertex. */
typedef struct DriveLead
{
	bool usable;   /* the lead is on the network: legs can be measured */
	char *why;	   /* when not usable, or a measure failed: why, for the explanation */
	char *network; /* the edge table, quoted */
	double lon, lat;
	long long vertex;
	double snap_m;	 /* from the lead's point to its vertex */
	int dijkstras;	 /* pgr_dijkstraCost runs for this lead so far */
	int measured;	 /* road distances measured (not from the cache) for this lead so far */
	int cached;		 /* road distances read from the cache for this lead so far */
	bool cache_kept; /* the cache outlives the statement (the network has its trigger) */
} DriveLead;

/* One dealer's road distance. */
typedef struct DriveLeg
{
	double lon, lat;   /* the dealer's location */
	double straight_m; /* the straight line to it */
	DriveHow how;
	double road_m; /* lead snap + path + dealer snap, when DRIVE_ROAD; DRIVE_BEYOND: at least */
	double path_m; /* on the network, vertex to vertex */
	double dealer_snap_m; /* from the dealer's vertex to the dealer */
	bool cached;		  /* read from the cache */
} DriveLeg;

extern bool DriveStart(const char *network, double lon, double lat, DriveLead *lead);
extern void DriveMeasure(DriveLead *lead, DriveLeg *legs, int n, double best_m, double tie_m);
extern void DriveLonLat(const double xyz[3], double *lon, double *lat);

#endif /* AIMROUTE_DRIVE_H */
