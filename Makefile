# Makefile for aimroute (PGXS).
#
# The version lives in aimroute.control (default_version); the install script
# aimroute--$(EXTVERSION).sql is concatenated from schema/*.sql in name order.
# Released versions are installed too: releases/ keeps each released install
# script exactly as it shipped, and sql/upgrade/ the scripts that take one
# version to the next (docs/upgrading.md).

EXTENSION = aimroute
EXTVERSION = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" $(EXTENSION).control)

MODULE_big = aimroute
OBJS = \
	src/adf.o \
	src/aimroute.o \
	src/bounce_mailbox.o \
	src/caps.o \
	src/catalog.o \
	src/country.o \
	src/coverage.o \
	src/delivery.o \
	src/delivery_worker.o \
	src/drive.o \
	src/leads.o \
	src/model.o \
	src/model_share.o \
	src/opening_hours.o \
	src/owner.o \
	src/postal.o \
	src/postal_loader.o \
	src/postgis.o \
	src/reroute.o \
	src/reroute_worker.o \
	src/routing.o \
	src/search_path.o \
	src/staging.o \
	src/subxact.o \
	src/ties.o \
	src/worker.o

SCHEMA_FILES = $(sort $(wildcard schema/*.sql))
DATA_built = $(EXTENSION)--$(EXTVERSION).sql
DATA = $(wildcard releases/$(EXTENSION)--*.sql) $(wildcard sql/upgrade/$(EXTENSION)--*--*.sql) \
	data/aimroute_postal_codes.tsv.gz
DOCS = README.md

SHLIB_LINK = -lz -lcurl
PG_CPPFLAGS = -I$(srcdir)/src -DAIMROUTE_VERSION=\"$(EXTVERSION)\"
PG_CFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers

REGRESS = normalize reference settings loader routing staging coverage
REGRESS_OPTS = --inputdir=$(srcdir) --load-extension=plpgsql

EXTRA_CLEAN = $(DATA_built) results regression.diffs regression.out

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# The Perl TAP tests (t/*.pl) against the installed build, as PGXS users
# expect; PROVE_TESTS picks files.  Each test starts clusters of its own
# (PostgreSQL::Test::Cluster) in tmp_check/tap, so it must run as a user
# PostgreSQL accepts, not root.  scripts/test.sh runs it.
.PHONY: prove_installcheck
prove_installcheck:
	rm -rf '$(CURDIR)/tmp_check/tap' && mkdir -p '$(CURDIR)/tmp_check/tap'
	cd $(srcdir) && TESTDIR='$(CURDIR)/tmp_check/tap' PATH="$(bindir):$$PATH" \
	  PG_REGRESS='$(top_builddir)/src/test/regress/pg_regress' \
	  $(PROVE) -I $(top_srcdir)/src/test/perl -I t -I t/lib $(PROVE_FLAGS) \
	  $(if $(PROVE_TESTS),$(PROVE_TESTS),t/*.pl)

# PGXS does not track header dependencies: a changed struct in a header
# must rebuild every object, or objects disagree on its layout.
$(OBJS): $(wildcard $(srcdir)/src/*.h)
# The library's version comes from the control file (AIMROUTE_VERSION).
src/aimroute.o: $(EXTENSION).control

$(EXTENSION)--$(EXTVERSION).sql: $(SCHEMA_FILES) $(EXTENSION).control
	{ printf '%s\n' "-- aimroute $(EXTVERSION): generated from schema/*.sql by make; do not edit." \
	    '\echo Use "CREATE EXTENSION aimroute CASCADE" to load this file. \quit'; \
	  for f in $(SCHEMA_FILES); do printf '\n-- source: %s\n' "$$f"; cat "$$f"; done; } > $@

# Source formatting is checked with the committed .clang-format.
C_SOURCES = $(wildcard src/*.c src/*.h)
.PHONY: format format-check
format:
	clang-format -i $(filter-out src/iso3166_table.h,$(C_SOURCES))
format-check:
	clang-format --dry-run --Werror $(filter-out src/iso3166_table.h,$(C_SOURCES))

# libFuzzer targets for the normalizers and parsers, built with clang
# (test/fuzz/Makefile); test/fuzz/run.sh builds and runs them.
# The architecture picture (docs/architecture.md), drawn by Graphviz.
docs/img/architecture.svg: docs/img/architecture.dot
	dot -Tsvg $< -o $@

.PHONY: fuzz
fuzz:
	$(MAKE) -C test/fuzz PG_CONFIG=$(PG_CONFIG)
