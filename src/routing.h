/*
 * routing.h
 *		The routing decision: which dealer a lead goes to, and why (the rules
 *		are in routing.c, the configuration they read in model.c).
 */
#ifndef AIMROUTE_ROUTING_H
#define AIMROUTE_ROUTING_H

#include "datatype/timestamp.h"
#include "nodes/pg_list.h"

#include "reroute.h"

/* Metres in a statute mile: routing measures in metres, reports in miles. */
#define METERS_PER_MILE 1609.344

/* Labels of aimroute.match_type, in the enum's order. */
typedef enum MatchKind
{
	MATCH_TERRITORY,
	MATCH_RADIUS,
	MATCH_DRIVE_DISTANCE,
	MATCH_DEFAULT,
	MATCH_REASSIGNED,
	MATCH_PREASSIGNED,
	MATCH_DEALER_GROUP,
	MATCH_INVENTORY,
	MATCH_REROUTE
} MatchKind;

extern const char *const MatchKindLabels[];

/* What a lead brings to routing; any field may be NULL. */
typedef struct RouteRequest
{
	const char *country;	 /* as received */
	const char *postal_code; /* as received */
	const char *state_code;	 /* as received, used when the postal code is unknown */
	const char *brand_code;
	const char *product_code;
	const char *dealer_number; /* pre-assigned */
	const char *dealer_group;
	char **excluded; /* dealers that may not receive it */
	int nexcluded;
	bool has_at;	/* false: the configuration valid now (transaction start) */
	TimestampTz at; /* the instant whose territories and product assignments apply */
	bool take_turn; /* a new lead: a round robin tie gives it the turn and counts it */
} RouteRequest;

/* One line of the explanation. */
typedef struct RouteStep
{
	int step;
	const char *rule;
	char *message;
	char *dealer_number; /* NULL when none */
	double distance_m;	 /* NaN when unknown */
} RouteStep;

typedef struct RouteResult
{
	char *country;	   /* alpha-2, or NULL when unknown */
	char *postal_code; /* normalized, or NULL when blank */
	char *dealer_number;
	MatchKind match;
	double distance_m;		 /* NaN when unknown */
	bool default_dealer;	 /* the dealer is the default dealer (any match) */
	List *steps;			 /* of RouteStep * */
	RerouteSettings reroute; /* the settings it was routed under */
} RouteResult;

extern void RouteLead(const RouteRequest *request, RouteResult *result);
extern Datum RouteStepsToArray(List *steps, Oid array_type);

#endif /* AIMROUTE_ROUTING_H */
