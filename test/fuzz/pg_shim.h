/*
 * pg_shim.h
 *		The few PostgreSQL backend services that aimroute's normalizers and
 *		parsers call, provided outside the server so that libFuzzer can run
 *		the real source files (src/postal.c, src/country.c, src/adf.c,
 *		src/postal_loader.c) in a plain process.
 *
 * What the shim provides, and how faithfully (pg_shim.c has the details):
 *
 *	- memory contexts and palloc/pfree/repalloc: every chunk is a malloc()
 *	  block owned by a context, and a context reset really frees its chunks
 *	  and deletes its children, so AddressSanitizer sees a use after reset
 *	  and LeakSanitizer sees what outlives the top context;
 *	- ereport/elog: a message below ERROR is formatted (so a bad format
 *	  argument is caught) and dropped; an ERROR jumps to the innermost
 *	  PG_TRY like the server's, and with no PG_TRY set up it is a bug of
 *	  the code under test: the message is printed and the process aborts,
 *	  which libFuzzer reports as a crash;
 *	- SPI: no database; each statement goes to the harness's hook
 *	  (shim_spi_hook), which checks the values the code sends and plays
 *	  the table's answer;
 *	- small backend helpers the code calls (scanner_isspace, text
 *	  conversion, encoding checks, a string-keyed hash table, array
 *	  building), written after the server's behaviour.
 *
 * StringInfo, psprintf and the UTF-8 routines are PostgreSQL's own, linked
 * from libpgcommon; pg_ascii_toupper, pg_strcasecmp and the snprintf
 * family from libpgport.
 */
#ifndef AIMROUTE_PG_SHIM_H
#define AIMROUTE_PG_SHIM_H

#include "postgres.h"

#include "mb/pg_wchar.h"

/* The last error raised (any level), for the harness to inspect. */
typedef struct ShimError
{
	int elevel;
	int sqlerrcode;
	const char *filename;
	int lineno;
	char message[2048];
	char detail[2048];
} ShimError;

extern ShimError shim_last_error;

/*
 * The SPI hook: called for every statement the code executes, with its
 * text and arguments.  It returns the SPI result code, and may set
 * shim_spi_processed and shim_spi_result[] (the columns of the one row
 * SPI_getbinval reads).
 */
typedef int (*ShimSpiHook)(const char *query, int nargs, const Oid *argtypes, Datum *values,
						   const char *nulls);

extern ShimSpiHook shim_spi_hook;
extern uint64 shim_spi_processed;
extern Datum shim_spi_result[8];
extern bool shim_spi_result_null[8];
extern int shim_spi_depth;

/*
 * What makeArrayResult returns in the shim: the values of a built array,
 * which the SPI hook reads (the code under test only passes it on).
 */
#define SHIM_ARRAY_MAGIC 0x5A17A4A7

typedef struct ShimArray
{
	uint32 magic;
	Oid element_type;
	int nelems;
	Datum *values;
	bool *nulls;
} ShimArray;

/* shim_begin starts one fuzz iteration in a fresh top memory context. */
extern void shim_begin(int database_encoding);

/* shim_end frees everything the iteration allocated and checks SPI balance. */
extern void shim_end(void);

/* shim_after_error forgets the state an ERROR left behind (the server's abort cleanup). */
extern void shim_after_error(void);

/* shim_text returns a text datum of len bytes, with a 1-byte header when short is true. */
extern text *shim_text(const char *data, int len, bool short_header);

/* shim_is_valid_encoding tells whether len bytes are valid in the database encoding. */
extern bool shim_is_valid_encoding(const char *s, int len);

/* shim_fail reports a broken invariant and aborts (libFuzzer saves the input). */
extern void shim_fail(const char *fmt, ...) pg_attribute_printf(1, 2) pg_attribute_noreturn();

#define SHIM_CHECK(cond, ...)                                                                      \
	do                                                                                             \
	{                                                                                              \
		if (!(cond))                                                                               \
			shim_fail(__VA_ARGS__);                                                                \
	} while (0)

#endif /* AIMROUTE_PG_SHIM_H */
