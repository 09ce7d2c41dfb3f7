#!/usr/bin/env python3
"""test/fuzz/make_corpus.py: write the seed corpora of the libFuzzer targets.

Each seed is a small, real-looking input in the layout its target reads
(see the header of each *_fuzzer.c).  The files are committed under
test/fuzz/corpus/<target>/; run this again after changing a layout:

    python3 test/fuzz/make_corpus.py
"""
import gzip
import hashlib
import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")

# normalize_fuzzer: mode byte (0 no country, 1 US, 2 CA, 3 the country
# bytes; +4 short text headers), country length, country, postal code.
NORMALIZE = [
    (1, "", "49757"), (1, "", "49757-1234"), (1, "", "49757 1234"),
    (1, "", "497571234"), (5, "", " 00501 "), (1, "", "1234X"),
    (1, "", "\t02134-0001\n"), (2, "", "K1A 0B1"), (6, "", "k1a0b1"),
    (2, "", "P0S"), (2, "", "p0s-1a0"), (2, "", "H2X 1Y4 "),
    (3, "USA", "60601"), (3, "Canada", "M5V 3L9"), (3, "United States", "90210-"),
    (7, "can", "v6b"), (3, " gb ", "SW1A 1AA"), (3, "Germany", "10115"),
    (3, "DEU", " 80331"), (3, "XX", "12345"), (0, "", "   "), (0, "", "\u00e9\u00e8"),
    (3, "Côte d'Ivoire", "01 BP 1"), (3, "Korea, Republic of", "03051"),
    # Reproducers of known bugs (test/fuzz/known_bugs.h), replayed on every run.
    (2, "", "-\tK1A 0B1"), (2, "", " - "), (3, "CA", "K\u20ac1A 0B1"),
]

# adf_fuzzer: flags byte (1 SQL_ASCII, 2 short headers), then 18 values
# separated by NUL: lead_id, request_date, vehicle_year, make, model,
# first, last, email, phone, street, city, region, postal, country,
# comments, vendor_id, vendor_name, provider_name.
ADF = [
    (0, ["7", "2026-11-29T09:15:52-05:00", "2027", "Lakeshore Boats", "Sport 210",
         "Ann", "O'Brien", "ann@example.com", "906-555-0100", "1 Main St",
         "Mackinac Island", "MI", "49757-1234", "US", "Call me after 5 & ask for <Ann>",
         "D100", "Island Marine", "Lakeshore Marine"]),
    (2, ["1", "", "", "", "", "Zoë", "Ñandú", "", "", "", "Montréal", "QC",
         "H2X 1Y4", "CA", "line 1\r\nline 2", "D200", "Déjà Vu", ""]),
    (1, ["2", "x", "1999", "Make", "Model", "caf\xc3\xa9 \xff\xc3 x", "\x01\x02",
         "", "", "", "", "", "", "", "\xef\xbf\xbe\xef\xbf\xbf", "", "", ""]),
    (0, []),
    (3, ["", "", "", "", "", "", "", "", "", "", "Mackinac Island"]),
]

GEONAMES = [
    "US\t49757\tMackinac Island\tMichigan\tMI\tMackinac\t097\t\t\t45.8492\t-84.6189\t4",
    "US\t00501\tHoltsville\tNew York\tNY\tSuffolk\t103\t\t\t40.8154\t-73.0451\t4",
    "CA\tP0S\tBatchawana Bay\tOntario\t08\t\t\t\t\t46.9318\t-84.5617\t",
    "CA\tA0A\tSoutheastern Avalon Peninsula\tNewfoundland and Labrador\tNL\t\t\t\t\t47.0073\t-52.9589\t",
]
BROKEN = [
    "US\t12345\tShort Row\tNew York",
    "XX\t12345\tNowhere\t\t\t\t\t\t\t10\t10\t",
    "US\t1234X\tBad Zip\tNew York\tNY\tAlbany\t001\t\t\t42.6\t-73.9\t",
    "US\t12210\tAlbany\tNew York\tNY\tAlbany\t001\t\t\tabc\t-73.9\t",
    "CA\tE1H\tLakeville\tShediac Bridge\t\t\t\t\t\t\t46.1506\t",
    "US\t09001\tAPO\t\tAE\t\t\t\t\t0\t0\t",
    "US\t10200\tNew York\tNew York\tNY\tNew York\t061\t\t\t40.77\t73.95\t",
    "US\t12213\tCRLF Town\tNew York\tNY\tAlbany\t001\t\t\t42.66\t-73.76\t\r",
    "USA\t12215\tNo Accuracy\tNew York\tNY\tAlbany\t001\t\t\t42.68\t-73.78",
    "US\t12216\tNot A Number\tNew York\tNY\tAlbany\t001\t\t\tnan\t-73.78\t",
    "US\t49757\tMackinac Island again\tMichigan\tMI\tMackinac\t097\t\t\t45.85\t-84.62\t",
]


def write(target, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def latin(s):
    """Strings above hold raw bytes as code points below 256 where marked."""
    return s.encode("latin-1") if all(ord(c) < 256 for c in s) else s.encode()


def main():
    shutil.rmtree(CORPUS, ignore_errors=True)
    for mode, country, code in NORMALIZE:
        c = country.encode()
        write("normalize", bytes([mode, len(c)]) + c + code.encode())
    for flags, values in ADF:
        enc = latin if flags & 1 else (lambda s: s.encode())
        write("adf", bytes([flags]) + b"\0".join(enc(v) for v in values))
    good = ("\n".join(GEONAMES) + "\n").encode()
    broken = ("\n".join(GEONAMES[:2] + BROKEN) + "\n").encode()
    write("loader", b"\0" + good)
    write("loader", b"\0" + broken)
    write("loader", b"\1" + broken + b"US\t12214\tBad \xff\xfe Bytes\tNY\tNY\t\t\t\t\t1\t-1\t\n")
    write("loader", b"\2" + good)  # format 'GeoNames'
    write("loader", b"\4" + good)  # format 'csv': refused
    write("loader", b"\0" + gzip.compress(good, mtime=0))
    write("loader", b"\0" + gzip.compress(broken, mtime=0)[:60])  # truncated gzip
    write("loader", b"\0" + b"\x1f\x8b\x08\x00junk")
    # Reproducer of a known bug: a NUL byte joins the next line to its own.
    write("loader", b"\0US\t4\0bad\t\n" + GEONAMES[0].encode() + b"\n")


if __name__ == "__main__":
    main()
